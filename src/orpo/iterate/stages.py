"""The stages of a round, each resumable: a rerun does no finished work, and a stage killed anywhere is
redone (or resumed) from what it left.

    ensure_base      a tiny:ARCH recipe's model built once and saved to OUT/base/ (every round must
                     sample and train from the same weights); any other model is used as named
    round_pairs      ``orpo pairs``' make_pairs on the round's prompts; done when OUT/pairs.jsonl and its
                     summary exist (a killed sampling resumes from its .samples.jsonl)
    train_round      the recipe on the round's pairs; done when train.json exists (written after the run
                     finished); a run killed with a checkpoint resumes from it, one without is started again
    merged_model     an adapter run merged into its base (the next round starts from full weights)
    evaluate         greedy answers to the held-out prompts, judged; eval.json holds every answer, its
                     scores and each metric's mean with a bootstrap 95% interval
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path

from orpo.checkpoints import (
    is_complete,
    latest_checkpoint,
    publish,
    read_summary,
    staging_dir,
    write_text_atomic,
)
from orpo.evaluation.generate import Prompt
from orpo.evaluation.judged import AnswerSettings, JudgedPrompt, judge_answers, summarise
from orpo.evaluation.judges.pointwise import ScoreItem
from orpo.evaluation.stats import bootstrap_interval

TRAIN_FILE = "train.json"
EVAL_FILE = "eval.json"


def ensure_base(name: str, model_section, prompts: str, split: str, seed: int, out: Path) -> str:
    """The model round 1 samples from and starts at: ``name`` itself, or for ``tiny:ARCH`` the tiny model
    (its tokenizer trained on the prompt source's text, weights from ``seed``) saved once to OUT/base/."""
    from orpo.run.recipe import TINY_PREFIX

    if not name.startswith(TINY_PREFIX):
        from orpo.models.gguf import gguf_folder, is_gguf

        # A GGUF file trains as named (dequantized once, cached); sampling and judging open its folder.
        return str(gguf_folder(name)) if is_gguf(name) else name
    folder = out / "base"
    if is_complete(folder):
        return str(folder)
    import torch

    from orpo.data.load import load_source
    from orpo.run.build import build_tokenizer_and_model, corpus_of

    torch.manual_seed(seed)
    tok, model = build_tokenizer_and_model(model_section, None, corpus_of(load_source(prompts, split=split)))
    staged = staging_dir(folder)
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged)
    tok.save_pretrained(staged)
    publish(staged, folder)
    return str(folder)


def open_round_model(model: str, rendering: dict | None, weights: bool = True):
    """``model`` opened to sample or answer from (``orpo.run.loading.open_model``). A run folder renders
    prompts as it trained; any other model (the base) as the recipe will train it (``rendering``: its
    chat_template_mode, limits and tokenization), so round 1's pairs and the base's answers are the
    prompts training sees."""
    from dataclasses import replace

    from orpo.run.loading import kind_of, open_model

    loaded = open_model(model, weights=weights)
    if rendering is not None and kind_of(model) not in ("run", "checkpoint"):
        loaded = replace(loaded, **rendering)
    return loaded


def round_pairs(
    settings,
    model: str,
    rendering: dict | None,
    prompts: list[Prompt],
    path: Path,
    seed: int,
    progress: bool,
    scorer,
) -> dict:
    """The round's pairs from ``model`` (see ``orpo.pairs.make_pairs``), scored by the run's one
    ``scorer``; returns their summary."""
    summary = path.with_suffix(".summary.json")
    if path.is_file() and summary.is_file():
        return json.loads(summary.read_text())
    from orpo.pairs import Server, make_pairs

    path.parent.mkdir(parents=True, exist_ok=True)
    server = Server(settings.server, model) if settings.server else None
    if server is not None:
        check_served(server, model)
    result = make_pairs(
        open_round_model(model, rendering, weights=server is None),
        prompts,
        settings.judge,
        path,
        samples=settings.samples,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=seed,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        chosen=settings.chosen,
        rejected=settings.rejected,
        min_margin=settings.min_margin,
        pairs_per_prompt=settings.pairs_per_prompt,
        metric=settings.metric,
        server=server,
        progress=progress,
        scorer=scorer,
    )
    return result.summary


def check_served(server, model: str) -> None:
    """Refuse to sample a round through a server that does not serve its model: a server that answers
    with whatever it loaded (llama.cpp's ignores the name) would make the round off-policy unseen."""
    import urllib.request

    try:
        with urllib.request.urlopen(server.url.rstrip("/") + "/models", timeout=30) as reply:
            served = [m.get("id") for m in json.loads(reply.read()).get("data", [])]
    except (OSError, ValueError) as err:
        raise ValueError(f"--server {server.url}: cannot list its models ({err}); is it running?") from None
    if model not in served:
        raise ValueError(
            f"--server {server.url} serves {', '.join(map(str, served)) or 'no model'}, not this round's "
            f"model {model}: serve it under that name (e.g. `vllm serve {model}`), then rerun; finished stages "
            "are kept"
        )


def train_round(
    settings,
    start: str,
    data: list[Path],
    round_dir: Path,
    extra: list[str],
    progress: bool,
) -> dict:
    """Train the recipe from ``start`` on the ``data`` files into ``round_dir/run``; returns train.json's
    record (steps, seconds, losses). ``extra`` are overrides of this arm (its method, its step count)."""
    done = round_dir / TRAIN_FILE
    if done.is_file():
        return json.loads(done.read_text())
    from orpo.run.loading import has_final_model
    from orpo.run.recipe import load_recipe
    from orpo.run.train import train_from_recipe

    run = round_dir / "run"
    resume = False
    finished = read_summary(run).get("status") == "finished" and has_final_model(run)
    if run.exists() and not finished:
        if latest_checkpoint(run)[0] is not None:
            resume = True
        else:  # killed before its first checkpoint (or while saving the model): nothing to keep
            shutil.rmtree(run)
    seconds = None
    if not finished:
        again = ["training.resume_from_checkpoint=true"] if resume else []
        recipe = load_recipe(
            settings.recipe, [*settings.overrides, *_round_overrides(start, data, run, extra), *again]
        )
        begin = time.perf_counter()
        result = train_from_recipe(recipe, progress=progress)
        seconds = time.perf_counter() - begin
        if result.status != "finished":  # SIGINT / SIGTERM: a checkpoint is saved; a rerun resumes it
            raise KeyboardInterrupt
    summary = read_summary(run)
    record = {
        "start": start,
        "data": [str(p) for p in data],
        "overrides": extra,
        "steps": summary.get("steps"),
        "seconds": seconds,
        "resumed": resume,  # seconds then count the last stretch only
        "before": summary.get("before", {}),
        "after": summary.get("after", {}),
        "nonfinite_skipped": summary.get("nonfinite_skipped", 0),
    }
    write_text_atomic(done, json.dumps(record, indent=2) + "\n")
    return record


def _round_overrides(start: str, data: list[Path], run: Path, extra: list[str]) -> list[str]:
    return [
        f"model.name={start}",
        "model.gguf_file=null",  # `start` is a whole path (a recipe's gguf_file is joined into its name)
        f"data.train={json.dumps([str(p) for p in data])}",
        # The pairs files are iterate's own layout: the recipe's column map or forced format (for the data
        # it was written for) must not apply to them.
        "data.split=train",
        "data.columns=null",
        "data.format=null",
        f"training.output_dir={run}",
        *extra,
    ]


def merged_model(round_dir: Path) -> str:
    """The weights the next round trains from: the run itself for a full fine-tune, else its adapter
    merged into the base, saved once to round_dir/model. (Samples and answers come from the run
    folder, which renders prompts as the run trained.)"""
    run = round_dir / "run"
    if not (run / "adapter_config.json").is_file():
        return str(run)
    folder = round_dir / "model"
    if not is_complete(folder):
        from orpo.export.merged import write_merged

        staged = staging_dir(folder)
        shutil.rmtree(staged, ignore_errors=True)
        write_merged(run, staged, force=True)
        publish(staged, folder)
        gc.collect()
    return str(folder)


def evaluate(
    model: str,
    rendering: dict | None,
    held_out: list[Prompt],
    scorer,
    path: Path,
    answer: AnswerSettings,
) -> dict:
    """``model``'s greedy answers to the held-out prompts (rendered as its run trained, ``answer``'s
    budget), judged one by one; written to ``path``."""
    if path.is_file():
        return json.loads(path.read_text())
    from orpo.evaluation.generate import prompt_ids

    begin = time.perf_counter()
    loaded = open_round_model(model, rendering)
    ids = prompt_ids(
        held_out, loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization
    )
    prompts = [JudgedPrompt(p.id, p.text, i, p.reference) for p, i in zip(held_out, ids)]
    judged = judge_answers(loaded.model, loaded.tokenizer, prompts, scorer, answer)
    items = [ScoreItem(p.id, p.text, t, p.reference) for p, t in zip(prompts, judged.texts)]
    scores = scorer.score(items)  # the one value samples are ranked on (lower-is-better negated)
    del loaded
    gc.collect()
    ranked = [s for s in scores if s is not None]
    low, high = bootstrap_interval(ranked) if ranked else (None, None)
    record = {
        "model": model,
        "prompts": len(prompts),
        "max_new_tokens": answer.max_new_tokens,
        "seconds": time.perf_counter() - begin,
        "score": {"mean": sum(ranked) / len(ranked) if ranked else None, "ci_low": low, "ci_high": high},
        "unscored": len(scores) - len(ranked),
        "metrics": judged.metrics or summarise([]),
        "items": [
            {"id": p.id, "answer": t, "score": s, "metrics": m}
            for p, t, s, m in zip(prompts, judged.texts, scores, judged.scores)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return record
