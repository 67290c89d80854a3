"""`orpo demo --budget-curve --quick`: SFT and ORPO from the same base at two budgets, two seeds."""

import contextlib
import io
import json
import math

import pytest

from orpo.cli.demo import format_budget
from orpo.cli.main import main
from orpo.lab.demo.settings import SIZES

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
    assert results["settings"]["pairs"] == list(PAIRS) and results["settings"]["seeds"] == [0, 1]
    for points in results["methods"].values():
        assert [p["pairs"] for p in points] == list(PAIRS)
        # one epoch of n pairs in batches of the size's batch: the budgets differ in steps
        assert [p["steps"] for p in points] == [math.ceil(n / QUICK.batch_size) for n in PAIRS]
        assert all(p["seeds"] == [0, 1] for p in points)


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
    assert sum(line.startswith(("SFT", "ORPO")) for line in table) == 2 * len(PAIRS)
