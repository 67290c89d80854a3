"""``orpo demo``: the code-review case study from an imperfect base, as practitioners run it.

settings   the fixed hyperparameters, the bases (``BASES``) and the budget of each size, each method's
           search space, the one training config
base       the base: the tiny one's stage (SFT on a noisy review corpus, cached by its settings), or a
           pretrained chat model as it ships (``--base smollm2``)
pairs      the pair sources: the base's own samples paired by the rules (on-policy, cached), or the
           generator's synthetic failures
tune       each method's study on the validation split (its learning rate and knobs), cached
methods    one (method, seed) trained from the base at its chosen values and scored, in its own process
run        ``run_demo``: base, pairs, studies, then every method for every seed; results.json, logps.png
curve      ``run_budget_curve``: judged recall and precision against training pairs, at the tuned values
table      per-snippet counts -> each metric's value and 95% interval
"""
