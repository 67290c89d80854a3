"""`orpo demo --quick` end to end through the CLI entry point (one ~15 s run shared by the tests)."""

import contextlib
import io
import json

import pytest

from orpo.cli.demo import format_report
from orpo.cli.main import main

METRICS = (
    "recall",
    "precision",
    "false_negative_rate",
    "critical_fn_rate",
    "format_validity",
    "clean_approval",
    "preference_accuracy",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(exit code, stdout, output dir) of one `orpo demo --quick --json` run."""
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--json", "--no-progress", "--output-dir", str(out)])
    return code, stdout.getvalue(), out


def test_exit_code_and_json_stdout_is_one_object(demo):
    code, stdout, out = demo
    assert code == 0
    payload = json.loads(stdout)
    assert payload["results_path"] == str(out / "results.json")
    assert payload["figure_path"] == str(out / "logps.png")
    assert set(payload["methods"]) == {"sft", "orpo"}


def test_results_json_has_both_methods_with_metrics_in_unit_interval(demo):
    _, _, out = demo
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["size"] == "quick" and settings["seed"] == 0
    assert 0.0 <= results["baseline"]["preference_accuracy"] <= 1.0
    for method in ("sft", "orpo"):
        run = results["methods"][method]
        assert run["steps"] == settings["steps"]
        assert run["test"]["n_reviews"] == settings["n_test"]
        for metric in METRICS:
            assert 0.0 <= run["test"][metric] <= 1.0, (method, metric, run["test"][metric])
        # The curve covers the whole run: the starting model, then up to the last step.
        steps = [p["step"] for p in run["curve"]]
        assert steps[0] == 0 and steps[-1] == settings["steps"] and steps == sorted(steps)
    assert set(results["wall_time_s"]) >= {
        "setup",
        "baseline",
        "sft_train",
        "sft_test",
        "orpo_train",
        "orpo_test",
        "total",
    }


def test_both_methods_start_from_the_same_model(demo):
    """Same init seed and tokens: the step-0 held-out log-probs of the two runs are identical."""
    _, _, out = demo
    runs = json.loads((out / "results.json").read_text())["methods"]
    assert runs["sft"]["curve"][0] == pytest.approx(runs["orpo"]["curve"][0])


def test_figure_is_a_png(demo):
    _, _, out = demo
    assert (out / "logps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_has_a_row_per_method_and_every_column(demo):
    _, _, out = demo
    table = format_report(json.loads((out / "results.json").read_text()))
    header = next(line for line in table.splitlines() if line.startswith("method "))
    for column in ("recall", "precision", "FN rate", "crit. FN", "format", "pref. acc."):
        assert column in header
    rows = {line.split()[0] for line in table.splitlines() if line.strip()}
    assert {"untrained", "SFT", "ORPO"} <= rows


def test_unknown_size_is_a_usage_error():
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["demo", "--size", "huge"])
    assert exc.value.code == 2
