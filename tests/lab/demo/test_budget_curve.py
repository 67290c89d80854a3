"""`orpo demo --budget-curve --quick`: SFT and ORPO from the same base at two budgets of on-policy pairs,
two seeds, each method at the values its study chose on all the pairs."""

import contextlib
import io
import json
import math

import pytest

from orpo.cli.demo import format_budget
from orpo.cli.main import main
from orpo.lab.demo.settings import SIZES

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

QUICK = SIZES["quick"]
PAIRS = (16, 48)  # the CLI's budgets at --quick


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORPO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = main(
                ["demo", "--quick", "--budget-curve", "--seeds", "2", "--json", "--no-progress"]
                + ["--output-dir", str(out)]
            )
    return code, json.loads(stdout.getvalue()), out


def test_each_method_has_a_point_per_budget_trained_for_its_own_steps(budget):
    code, results, _ = budget
    assert code == 0
    assert list(results["methods"]) == ["sft", "orpo"]
    settings = results["settings"]
    assert settings["pairs_asked"] == list(PAIRS) and settings["seeds"] == [0, 1]
    assert settings["pair_source"] == "on-policy"
    # a budget past the pairs there are is cut to all of them
    assert settings["pairs"] == sorted({min(n, settings["pairs_available"]) for n in PAIRS})
    for points in results["methods"].values():
        assert [p["pairs"] for p in points] == settings["pairs"]
        # the size's epochs of n pairs in batches of the size's batch: the budgets differ in steps
        assert [p["steps"] for p in points] == [
            QUICK.epochs * math.ceil(n / QUICK.batch_size) for n in settings["pairs"]
        ]
        assert all(p["seeds"] == [0, 1] for p in points)


def test_the_values_tuned_once_are_stated_and_kept_at_every_budget(budget):
    _, results, _ = budget
    tuned = results["settings"]["tuned"]
    assert set(tuned) == {"sft", "orpo"} and "beta" in tuned["orpo"] and "beta" not in tuned["sft"]
    for method, points in results["methods"].items():
        assert all(p["params"] == tuned[method] for p in points)


def test_every_point_and_the_base_carry_an_interval(budget):
    _, results, _ = budget
    for points in results["methods"].values():
        for p in points:
            for name in ("recall", "precision"):
                m = p["metrics"][name]
                assert m["low"] <= m["value"] <= m["high"]
    assert set(results["base"]["metrics"]) >= {"recall", "precision"}


def test_files_and_the_text_table(budget):
    _, results, out = budget
    assert (out / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "budget.json").read_text())["methods"] == results["methods"]
    table = format_budget(results).splitlines()
    assert sum(line.startswith(("SFT", "ORPO")) for line in table) == 2 * len(results["settings"]["pairs"])
