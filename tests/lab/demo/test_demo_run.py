"""`orpo demo --quick` end to end through the CLI entry point: every method, two seeds, intervals."""

import contextlib
import io
import json

import pytest

from orpo.cli.demo import format_report
from orpo.cli.main import main
from orpo.lab.demo.settings import METHODS, SIZES
from orpo.lab.demo.table import METRICS

QUICK = SIZES["quick"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, monkeypatch_module):
    """(exit code, stdout, output dir) of one `orpo demo --quick --json` run (its own cache)."""
    out = tmp_path_factory.mktemp("demo")
    monkeypatch_module.setenv("ORPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--json", "--no-progress", "--output-dir", str(out)])
    return code, stdout.getvalue(), out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def results(demo):
    return json.loads((demo[2] / "results.json").read_text())


def test_exit_code_and_json_stdout_is_one_object(demo):
    code, stdout, out = demo
    assert code == 0
    payload = json.loads(stdout)
    assert payload["results_path"] == str(out / "results.json")
    assert payload["figure_path"] == str(out / "logps.png")
    assert set(payload["methods"]) == set(METHODS) == {"sft", "orpo", "dpo", "simpo"}


def test_every_method_ran_every_seed_for_the_same_steps(results):
    settings = results["settings"]
    assert settings["seeds"] == [0, 1]
    for method in METHODS:
        runs = results["methods"][method]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for run in runs:
            assert run["steps"] == settings["steps"]
            assert all(len(v) == settings["n_test"] for v in run["counts"].values())
            steps = [p["step"] for p in run["curve"]]
            assert steps[0] == 0 and steps[-1] == settings["steps"] and steps == sorted(steps)


def test_json_holds_an_interval_around_every_metric_of_the_base_and_every_method(results):
    rows = {"base": results["base"]["metrics"]} | {m: results["methods"][m]["metrics"] for m in METHODS}
    for name, metrics in rows.items():
        assert set(metrics) == set(METRICS), name
        for metric, m in metrics.items():
            assert 0.0 <= m["low"] <= m["value"] <= m["high"] <= 1.0, (name, metric, m)


def test_every_method_starts_from_the_base(results):
    """Each run loads the same saved base: the step-0 held-out log-probs agree across methods and
    seeds (DPO reports mean log-probs under other metric names; the recorder reads those)."""
    firsts = [run["curve"][0] for m in METHODS for run in results["methods"][m]["runs"]]
    for point in firsts[1:]:
        assert point["logps_chosen"] == pytest.approx(firsts[0]["logps_chosen"], abs=1e-4)
        assert point["logps_rejected"] == pytest.approx(firsts[0]["logps_rejected"], abs=1e-4)
    assert firsts[0]["logps_chosen"] == pytest.approx(results["base"]["val_logps_chosen"], abs=1e-4)


def test_time_and_memory_are_recorded_per_method(results):
    for method in METHODS:
        summary = results["methods"][method]
        assert summary["train_seconds_mean"] > 0
        assert summary["peak_rss_mb_max"] is None or summary["peak_rss_mb_max"] > 0


def test_base_is_reported_with_its_noisy_corpus(results):
    base = results["base"]
    assert base["corpus"]["reviews"] == QUICK.n_base
    assert base["cached"] is False


def test_figure_is_a_png(demo):
    assert (demo[2] / "logps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_has_the_base_and_a_row_per_method_with_intervals(results):
    table = format_report(results)
    header = next(line for line in table.splitlines() if line.startswith("method "))
    for column in (
        "recall",
        "precision",
        "FN rate",
        "crit. FN",
        "clean ok",
        "pref. acc.",
        "time s",
        "peak MiB",
    ):
        assert column in header
    rows: dict[str, str] = {}
    for line in table.splitlines():  # the first line of each label is its table row
        if line.strip():
            rows.setdefault(line.split()[0], line)
    assert {"base", "SFT", "ORPO", "DPO", "SIMPO"} <= set(rows)
    # six metric cells: each an interval, or "undefined" (e.g. precision when no finding is made)
    assert rows["ORPO"].count("[") + rows["ORPO"].count("undefined") == 6


def test_unknown_size_is_a_usage_error():
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["demo", "--size", "huge"])
    assert exc.value.code == 2


@pytest.mark.parametrize("bad", ["0", "1,1", "a,b", "-1,2"])
def test_bad_seeds_are_a_one_line_error(bad, capsys):
    assert main(["demo", "--quick", f"--seeds={bad}"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("orpo demo: --seeds") and out.count("\n") == 1
