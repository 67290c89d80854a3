"""Offline demo: a tiny, learnable code-review task (generator, rulebook, rule-based judge)."""
