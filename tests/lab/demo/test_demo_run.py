"""`orpo demo --quick` end to end through the CLI entry point: on-policy pairs, six methods each tuned
on validation, two seeds, intervals; and a rerun that reuses every cached stage."""

import contextlib
import io
import json
import sqlite3

import pytest

from orpo.cli.demo import format_report
from orpo.cli.main import main
from orpo.evaluation.judges.codereview import judge
from orpo.lab.demo.settings import METHODS, SIZES, search_space
from orpo.lab.demo.table import METRICS
from orpo.tune.space import parse_space

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

QUICK = SIZES["quick"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _demo(out, extra=()):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--json", "--no-progress", "--output-dir", str(out), *extra])
    return code, stdout.getvalue()


@contextlib.contextmanager
def counting():
    """Count what a demo samples (make_pairs), trains as its base (its noisy corpus is drawn only then)
    and tunes (studies started)."""
    import orpo.lab.demo.base
    import orpo.lab.demo.tune
    import orpo.pairs

    calls = {"make_pairs": 0, "base_corpus": 0, "studies": 0}
    real_make_pairs, real_run_all, real_noisy_reviews = (
        orpo.pairs.make_pairs,
        orpo.lab.demo.tune.run_all,
        orpo.lab.demo.base.noisy_reviews,
    )

    def make_pairs(*args, **kwargs):
        calls["make_pairs"] += 1
        return real_make_pairs(*args, **kwargs)

    def run_all(targets, *args, **kwargs):
        calls["studies"] += len(targets)
        return real_run_all(targets, *args, **kwargs)

    def noisy_reviews(*args, **kwargs):
        calls["base_corpus"] += 1
        return real_noisy_reviews(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(orpo.pairs, "make_pairs", make_pairs)
        mp.setattr(orpo.lab.demo.tune, "run_all", run_all)
        mp.setattr(orpo.lab.demo.base, "noisy_reviews", noisy_reviews)
        yield calls


@pytest.fixture(scope="module")
def demo(tmp_path_factory, monkeypatch_module):
    """(exit code, stdout, output dir, calls) of one `orpo demo --quick --json` run (its own cache)."""
    out = tmp_path_factory.mktemp("demo")
    monkeypatch_module.setenv("ORPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache") / "ref"))
    with counting() as calls:
        code, stdout = _demo(out)
    return code, stdout, out, calls


@pytest.fixture(scope="module")
def results(demo):
    return json.loads((demo[2] / "results.json").read_text())


@pytest.fixture(scope="module")
def rerun(demo, results, tmp_path_factory):
    """The same demo again (same cache), counting what it samples, trains and tunes."""
    with counting() as calls:
        code, stdout = _demo(tmp_path_factory.mktemp("rerun"))
    return code, json.loads(stdout), calls


def test_exit_code_and_json_stdout_is_one_object(demo):
    code, stdout, out, _ = demo
    assert code == 0
    payload = json.loads(stdout)
    assert payload["results_path"] == str(out / "results.json")
    assert payload["figure_path"] == str(out / "logps.png")
    assert list(payload["methods"]) == list(METHODS) == ["sft", "orpo", "dpo", "ipo", "kto", "simpo"]


def test_json_carries_each_methods_tuned_values_pair_source_and_intervals(demo):
    payload = json.loads(demo[1])
    for method in METHODS:
        row = payload["methods"][method]
        assert row["source"] == "on-policy"
        assert set(row["tuned"]) == {p.name for p in parse_space(search_space(method))}
        assert set(row["metrics"]) == set(METRICS)
        for m in row["metrics"].values():
            assert 0.0 <= m["low"] <= m["value"] <= m["high"] <= 1.0


def test_on_policy_pairs_rescore_chosen_above_rejected(results):
    """The pairs on disk, scored again by the judge itself: every chosen review beats its rejected one."""
    pairs = results["pairs"]["on-policy"]
    rows = [json.loads(line) for line in open(pairs["folder"] + "/pairs.jsonl")]
    assert len(rows) == pairs["pairs"] > 0
    assert pairs["pairs"] + sum(pairs["dropped"].values()) == pairs["prompts"] == QUICK.n_train
    for row in rows:
        chosen = judge(row["prompt"], row["chosen"], row["reference"])["f1"]
        rejected = judge(row["prompt"], row["rejected"], row["reference"])["f1"]
        assert chosen > rejected
        assert row["chosen_score"] == chosen and row["rejected_score"] == rejected
    assert pairs["reference_used"] == sum(r["chosen_sample"] is None for r in rows)


def test_each_method_has_values_chosen_by_its_own_trials(results):
    for method in METHODS:
        tuned = results["tuned"][method]
        assert tuned["method"] == method and len(tuned["trials"]) == QUICK.trials
        complete = [t for t in tuned["trials"] if t["state"] == "complete"]
        best = max(complete, key=lambda t: t["value"])
        assert tuned["params"] == best["params"] and tuned["value"] == best["value"]
        assert results["methods"][method]["tuned"] == tuned["params"]
        assert all(run["trained_with"] == tuned["params"] for run in results["methods"][method]["runs"])
        # the study on disk is this method's own, and holds exactly those trials
        db = sqlite3.connect(tuned["folder"] + "/study.db")
        (name,) = db.execute("select study_name from studies").fetchone()
        (n,) = db.execute("select count(*) from trials").fetchone()
        assert name == method and n == QUICK.trials
    # each study searched its own space: the knobs differ by method
    assert "beta" not in results["tuned"]["sft"]["params"]
    assert "simpo_gamma" in results["tuned"]["simpo"]["params"]


def test_every_method_ran_every_seed_for_the_same_steps(results):
    settings = results["settings"]
    assert settings["seeds"] == [0, 1]
    steps = settings["steps"]["on-policy"]
    for method in METHODS:
        runs = results["methods"][method]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for run in runs:
            assert run["steps"] == steps  # KTO too: its batch holds both examples of each pair
            assert all(len(v) == settings["n_test"] for v in run["counts"].values())
            points = [p["step"] for p in run["curve"]]
            assert points[0] == 0 and points[-1] == steps and points == sorted(points)


def test_json_holds_an_interval_around_every_metric_of_the_base(results):
    for metric, m in results["base"]["metrics"].items():
        assert 0.0 <= m["low"] <= m["value"] <= m["high"] <= 1.0, metric


def test_every_method_starts_from_the_base(results):
    """Each run loads the same saved base: the step-0 held-out log-probs agree across the paired
    methods and seeds (KTO's curve is over the validation examples, measured the same way)."""
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


def test_table_has_the_base_and_six_methods_with_intervals_and_their_values(results):
    table = format_report(results)
    header = next(line for line in table.splitlines() if line.startswith("method ") and "recall" in line)
    for column in ("f1", "recall", "precision", "crit. FN", "clean ok", "pref. acc.", "time s", "peak MiB"):
        assert column in header
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        if line.strip():
            rows.setdefault(line.split()[0], []).append(line)
    assert {"base", "SFT", "ORPO", "DPO", "IPO", "KTO", "SIMPO"} <= set(rows)
    test_row = next(line for line in rows["ORPO"] if "[" in line)
    # six metric cells: each an interval, or "undefined" (e.g. precision when no finding is made)
    assert test_row.count("[") + test_row.count("undefined") == 6
    tuned_row = rows["ORPO"][0]  # the chosen-values table comes first
    assert f"beta {results['tuned']['orpo']['params']['beta']:.3g}" in tuned_row


def test_a_rerun_reuses_the_base_the_pairs_and_the_studies(rerun, results):
    code, again, calls = rerun
    assert code == 0
    assert calls == {"make_pairs": 0, "base_corpus": 0, "studies": 0}
    assert again["base"]["cached"] and again["pairs"]["on-policy"]["cached"]
    for method in METHODS:
        assert again["tuned"][method]["cached"] is True
        assert again["tuned"][method]["params"] == results["tuned"][method]["params"]


def test_the_counters_see_each_stage_run_the_first_time(demo, results):
    """The rerun's zero counts mean something: the same counters saw every stage run in the first."""
    assert demo[3] == {"make_pairs": 1, "base_corpus": 1, "studies": len(METHODS)}
    assert results["base"]["cached"] is False and results["pairs"]["on-policy"]["cached"] is False
    assert all(results["tuned"][m]["cached"] is False and results["tuned"][m]["ran"] for m in METHODS)


def test_unknown_size_is_a_usage_error():
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["demo", "--size", "huge"])
    assert exc.value.code == 2


# "0" is the seed 0, not a count of none (test_demo_cli.py)
@pytest.mark.parametrize("bad", ["-1", "1,1", "a,b", "-1,2"])
def test_bad_seeds_are_a_one_line_error(bad, capsys):
    assert main(["demo", "--quick", f"--seeds={bad}"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("orpo demo: --seeds") and out.count("\n") == 1
