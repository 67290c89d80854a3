"""Measured experiments, each run in its own process: ``orpo compare``, ``orpo demo``, ``orpo bench``.

harness       the step timer and process memory (runs launch through orpo.launch)
plots         the held-out log-prob curves and the demo's budget plot
trl_baseline  TRL's trainer for a method, on the same model and data as ours
compare       one recipe trained once per method and grid value
demo          the code-review case study from an imperfect base, over seeds, with intervals
bench         speed and memory side by side with TRL
"""
