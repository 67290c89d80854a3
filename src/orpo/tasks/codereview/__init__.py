"""The code-review task: a six-rule rulebook (`rules`), a seeded generator of preference pairs and
of noisy reviews (`generator`), and the review format with its rule-based judge (`judge`)."""
