"""Preference pairs from a model's own samples, scored by a judge (on-policy data, iterative ORPO).

    from orpo.pairs import make_pairs
    result = make_pairs("runs/x", "builtin:codereview", "rules:codereview", "pairs.jsonl", limit=200)
    result.rows, result.summary

Modules: ``make`` (``make_pairs``, the steps below, and the files it writes), ``sample`` / ``server``
(the samples, from the model in-process or from an OpenAI-compatible endpoint), ``score`` (the
judges), ``pairing`` (which candidates make a pair), ``report`` (distributions, the histogram, the
table ``orpo pairs`` prints).

Steps: ``sample`` (K completions per prompt, resumable, into ``OUT.samples.jsonl``) -> ``score`` (one
score per distinct completion, and per reference answer when pairing may take it) -> ``pairing``
(collapse identical completions, choose, reject, drop with a reason) -> the files:

  OUT                  one preference row per line, in the prompts' layout (a string prompt gives
                       string chosen/rejected, a conversation gives assistant messages), plus
                       prompt_id, chosen_score, rejected_score, margin, chosen_sample (None when the
                       chosen is the reference), rejected_sample, reference (when the prompt had one),
                       source "on-policy". ``orpo train`` and ``orpo data inspect`` read it as is.
  OUT.samples.jsonl    every sample, in ``orpo generate``'s line format
  OUT.summary.json     settings, counts (dropped by reason), score distributions, reference share
  OUT.scores.png       histogram of the scores of all samples, chosen and rejected
  OUT.cache/           the LLM judge's reply cache (``--judge openai``)

(``OUT.x`` is OUT with its suffix replaced: pairs.jsonl -> pairs.samples.jsonl.) A rerun reuses the
samples and the cached replies; an OUT written with other settings is refused.
"""

from orpo.pairs.make import PairsResult, make_pairs, output_paths
from orpo.pairs.pairing import PairingSettings
from orpo.pairs.server import Server

__all__ = ["PairingSettings", "PairsResult", "Server", "make_pairs", "output_paths"]
