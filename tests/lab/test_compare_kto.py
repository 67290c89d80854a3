"""`orpo compare` with KTO: ours and TRL's KTOTrainer under `--baseline trl`, on paired data."""

import json

import pytest
from test_compare import TINY

from orpo.cli.main import main
from orpo.lab.compare.plan import parse_methods, plan

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)


def test_kto_is_a_method_with_a_trl_baseline():
    runs = plan(parse_methods("kto,kto:precomputed"), [], baseline="trl")
    assert [(r.label, r.impl) for r in runs] == [
        ("kto", "orpo"),
        ("kto (trl)", "trl"),
        ("kto:precomputed", "orpo"),
        ("kto:precomputed (trl)", "trl"),
    ]


def test_trl_baseline_kto_and_dpo_without_a_mode_on_full_fine_tuning(tmp_path, capsys, monkeypatch):
    """No reference mode and no adapter: TRL's KTOTrainer and DPOTrainer get the frozen copy ours makes
    (given none, they reload a reference from the model's name, which an in-memory tiny model lacks)."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "max_steps=1", f"training.output_dir={out}", "--methods", "kto,dpo"]
    assert main([*argv, "--baseline", "trl", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["label"], r["impl"]) for r in runs] == [
        ("kto", "orpo"),
        ("kto (trl)", "trl"),
        ("dpo", "orpo"),
        ("dpo (trl)", "trl"),
    ]
    assert all(r["steps"] == 1 for r in runs)
    ours, trl = runs[:2]
    for run in (ours, trl):  # both log KTO's metrics under TRL's names
        assert {"eval_kl", "eval_rewards/chosen", "eval_rewards/rejected", "eval_logps/chosen"} <= set(
            run["final"]
        )
    assert ours["eval_nll"] is None and ours["pref_acc"] is None  # examples, not pairs: no chosen NLL
    assert ours["logp_chosen"] is not None  # desirable completions' mean log-prob, on the common scale
