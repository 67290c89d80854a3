"""`orpo tune`: recipe fields chosen on the validation split by an Optuna study.

space.py   ``--space`` specs (``learning_rate=log:1e-6..1e-3``) parsed and checked against the
           typed recipe before the first trial
trial.py   one trial = one ordinary run folder, trained in a fresh process that reports each
           evaluation to the study (pruning) and writes its result
backend.py Optuna's storage, sampler and pruner, opened alike by both processes
study.py   the study: the trial loop, counting, stale trials, resume and sharing
results.py what a tune leaves: best.yaml, trials.csv, the terminal table, figures, report.html
"""
