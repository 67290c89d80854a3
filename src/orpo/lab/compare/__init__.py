"""``orpo compare``: one recipe trained once per method (and per grid value), each in its own process.

    plan     the runs = methods x grid values, TRL's trainer beside ours where asked (``plan.py``)
    run      ``run_compare``: every run launched through the harness, one at a time, then compare.json,
             compare.md and compare_logps.png (``run.py``)
    worker   one run in its own process, ``python -m orpo.lab.compare.worker SPEC.json``: builds model
             and data from the recipe (same seed, so every run starts from the same weights and sees the
             same pairs), trains, evaluates, judges, writes RESULT.json; its peak memory is its own
    tuned    ``--tune N``: before the runs, each method's values chosen on the eval data by an ``orpo tune``
             study of N trials (``orpo.tune``), then its runs train those values (``tuned.py``)
    tables   peak memory, time per pair (the reference pass separately), eval NLL, preference
             accuracy, held-out mean log-probs of chosen and rejected at the end; Markdown + text, and
             the judge's metrics with bootstrap 95% intervals over prompts in a second table
    plot     held-out mean log-probs of chosen (solid) and rejected (dashed) over training, one pair
             of lines per run (the ORPO paper's Figure 3 and its lambda ablation; ``orpo.lab.plots``)

With ``baseline="trl"`` every method TRL 1.16 has (ORPO, DPO/IPO/hinge, SimPO and CPO via its
CPOTrainer, SFT via its SFTTrainer on prompt + chosen, KTO via its KTOTrainer on the pairs split) also runs with TRL's trainer on the same model
and data, for memory and time side by side (``orpo.lab.trl_baseline``).
"""
