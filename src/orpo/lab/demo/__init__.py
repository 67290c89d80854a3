"""``orpo demo``: the code-review case study from an imperfect base, over seeds, with intervals.

settings   the fixed hyperparameters, the budget of each size, the one training config
base       the base stage: SFT on a noisy review corpus, cached by its settings
methods    one (method, seed) trained from the base and scored, each run in its own process
run        ``run_demo``: the base, then every method for every seed; results.json and logps.png
curve      ``run_budget_curve``: judged recall and precision against training pairs
table      per-snippet counts -> each metric's value and 95% interval
"""
