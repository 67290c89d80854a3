"""What ``orpo train`` writes and what ``orpo eval``, ``generate`` and ``export`` read back.

recipe     the typed YAML recipe (sections model / adapter / quantization / data / training)
learning_rates  the one table of default learning rates and search ranges (recipe, tune, demo, bench)
build      recipe -> tokenizer, model, data, trainer (used by train, compare, the demo and the bench)
train      the lifecycle of `orpo train`: claim and lock the folder, train, write its files
evaluate   `orpo eval`: a run's (or checkpoint's) preference metrics on a dataset, with the run's config
folder     reading a finished run back (its recipe, adapter or not, the metrics evaluation reports)
loading    opening a run, checkpoint, adapter or model folder as a model and tokenizer
callbacks  metrics.jsonl and the progress bar
report     plots and report.html of a run folder

The drop-in library (``orpo.ORPOConfig``, ``orpo.ORPOTrainer``) never imports this package.
"""
