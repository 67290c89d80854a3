"""`orpo compare --tune`: per-method spaces, the objective, a real two-method tuned comparison on a tiny
model (each row at its own study's best values), resumption, and bad `--tune-space` specs.

The end-to-end study is 2 trials per method of 2 steps on 64 training pairs: every trial and every
comparison run is a fresh process (tens of seconds each on a busy CPU), so it runs once per module.
"""

import json
import sqlite3
from pathlib import Path

import pytest

from helpers import TINY_RECIPE
from orpo.cli.main import main
from orpo.lab.compare.plan import RunSpec, parse_methods, plan
from orpo.lab.compare.tuned import tune_objective, tune_of, with_chosen
from orpo.tune.space import method_spaces

TINY = [*TINY_RECIPE, "max_steps=2"]


def _spaces(methods, specs):
    return {m: {p.name: p for p in params} for m, params in method_spaces(methods, specs).items()}


def test_each_method_searches_its_own_knobs_changed_by_scoped_and_shared_specs():
    spaces = _spaces(
        ["orpo", "dpo", "simpo"],
        ["learning_rate=log:1e-5..1e-3", "dpo:beta=0.05,0.1", "simpo:learning_rate=log:1e-6..1e-5"],
    )
    # the registry's knobs per method: orpo beta, dpo beta, simpo beta and gamma; lr for all
    assert {m: sorted(s) for m, s in spaces.items()} == {
        "orpo": ["beta", "learning_rate"],
        "dpo": ["beta", "learning_rate"],
        "simpo": ["beta", "learning_rate", "simpo_gamma"],
    }
    # FIELD=RANGE replaces the default range for every method; METHOD:FIELD=RANGE wins for its method
    assert (spaces["orpo"]["learning_rate"].low, spaces["orpo"]["learning_rate"].high) == (1e-5, 1e-3)
    assert (spaces["simpo"]["learning_rate"].low, spaces["simpo"]["learning_rate"].high) == (1e-6, 1e-5)
    assert spaces["dpo"]["beta"].choices == (0.05, 0.1)
    assert (spaces["orpo"]["beta"].low, spaces["orpo"]["beta"].high) == (0.05, 1.0)  # orpo's default
    # a field no default searches is added (to every method, unscoped)
    added = _spaces(["orpo", "sft"], ["warmup_steps=0.0..0.2"])
    assert all("warmup_steps" in s for s in added.values()) and sorted(added["sft"]) == [
        "learning_rate",
        "warmup_steps",
    ]


def test_the_objective_is_the_judges_pairwise_metric_else_the_eval_nll(tmp_path):
    assert tune_objective(None, "rules:codereview") == "judge:rules:codereview:f1"
    assert tune_objective(None, None) == "eval_nll_loss"
    assert tune_objective("eval_rewards/accuracies", "rules:codereview") == "eval_rewards/accuracies"
    rules = tmp_path / "mine.py"
    rules.write_text("def judge(prompt, completion, reference):\n    return {'score': 1.0}\n")
    with pytest.raises(ValueError, match=r"sets no PAIRWISE_METRIC.*--tune-objective judge:rules:"):
        tune_objective(None, f"rules:{rules}")


def test_a_trl_run_trains_with_the_values_chosen_for_ours():
    runs = plan(parse_methods("orpo"), [], baseline="trl")
    tuned = {"orpo": {"overrides": ["learning_rate=0.0003", "beta=0.2"], "params": {"beta": 0.2}}}
    ours, trl = with_chosen(runs, tuned)
    assert ours.overrides == trl.overrides == ["training.method=orpo", "learning_rate=0.0003", "beta=0.2"]
    assert tune_of(trl, tuned)["chosen_for"] == "orpo" and "chosen_for" not in tune_of(ours, tuned)
    assert isinstance(trl, RunSpec) and trl.impl == "trl"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """orpo,dpo with --tune 2 (no judge: the objective is then eval_nll_loss), run once, then rerun."""
    root = tmp_path_factory.mktemp("cmp")
    out = root / "cmp"
    argv = [
        "compare",
        *TINY,
        f"training.output_dir={out}",
        "--methods",
        "orpo,dpo",
        "--judge",
        "none",
        "--tune",
        "2",
        "--tune-space",
        "learning_rate=log:1e-4..3e-2",
        "--tune-space",
        "dpo:beta=0.1,0.5",
        "--json",
    ]
    reports = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORPO_CACHE_DIR", str(root / "cache"))
        for _ in range(2):  # the second: the studies already hold their 2 trials
            assert main(argv) == 0
            reports.append(json.loads((out / "compare.json").read_text()))
    return out, reports


def _best(study_db: Path) -> tuple[int, float, dict]:
    """(number, value, params) of the best finished trial (lowest value), read from the SQLite study."""
    db = sqlite3.connect(study_db)
    number, trial_id, value = db.execute(
        "select t.number, t.trial_id, v.value from trials t join trial_values v using (trial_id) "
        "where t.state = 'COMPLETE' order by v.value limit 1"
    ).fetchone()
    params = dict(
        db.execute("select param_name, param_value from trial_params where trial_id = ?", (trial_id,))
    )
    return number, value, params


@pytest.mark.slow
def test_each_row_is_trained_at_its_own_studys_best_values(tuned):
    out, (report, _) = tuned
    assert [r["label"] for r in report["runs"]] == ["orpo", "dpo"]
    assert report["tune"]["objective"] == "eval_nll_loss" and report["tune"]["direction"] == "minimize"
    for run in report["runs"]:
        t = run["tune"]
        number, value, params = _best(out / f"tune-{run['label']}" / "study.db")
        assert t["best_trial"] == number and t["value"] == pytest.approx(value)
        assert t["trials"]["complete"] + t["trials"]["pruned"] + t["trials"]["failed"] == 2
        assert set(t["params"]) == {"learning_rate", "beta"}
        assert t["params"]["learning_rate"] == pytest.approx(params["learning_rate"])  # its own study's
        assert 1e-4 <= t["params"]["learning_rate"] <= 3e-2
        assert report["tune"]["chosen"][run["label"]] == t["params"]
        # the comparison run trained those values (its recipe overrides end with them) ...
        assert run["overrides"][-3:-1] == [
            f"learning_rate={t['params']['learning_rate']!r}",
            f"beta={t['params']['beta']!r}",
        ]
        # ... and is the best trial again: same recipe, seed and data give the same held-out NLL
        assert run["eval_nll"] == pytest.approx(t["value"], rel=1e-4)
    orpo, dpo = (r["tune"]["params"] for r in report["runs"])
    assert dpo["beta"] in (0.1, 0.5) and 0.05 <= orpo["beta"] <= 1.0  # dpo's scoped space, orpo's default
    # compare.md: a last table of the chosen values, one row per method
    table = (out / "compare.md").read_text().splitlines()
    start = table.index("| run | learning_rate | beta | eval_nll_loss | trials complete/pruned/failed |")
    assert "chosen on the eval data by --tune 2" in table[start - 2]
    for line, run in zip(table[start + 2 : start + 4], report["runs"]):
        lr = run["tune"]["params"]["learning_rate"]
        assert line.startswith(f"| {run['label']} | {lr:.3g} | ")


@pytest.mark.slow
def test_a_rerun_with_the_same_n_runs_no_new_trial(tuned):
    out, (first, second) = tuned
    for a, b in zip(first["runs"], second["runs"]):
        assert a["tune"]["ran"] and b["tune"]["ran"] == []
        assert b["tune"]["params"] == a["tune"]["params"] and b["tune"]["trials"] == a["tune"]["trials"]
    for method in ("orpo", "dpo"):
        db = sqlite3.connect(out / f"tune-{method}" / "study.db")
        assert db.execute("select count(*) from trials").fetchone() == (2,)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--tune-space", "ipo:beta=0.1..0.5"],
            "--tune-space ipo:beta=0.1..0.5: 'ipo' is not a compared method",
        ),
        (["--tune-space", "dpo:bta=0.1..0.5"], "--tune-space dpo:bta=0.1..0.5: override 'bta=0.1': unknown"),
        (["--tune-space", "dpo:beta=log:0.5..0.05"], "the low bound 0.5 must be below the high bound 0.05"),
        (["--tune-space", "learning_rate=log:abc..1e-3"], "'abc' is not a number"),
        (["--tune-space", "beta=0.1..0.5"], "beta means something else for each method; give it per method"),
        (["--tune-space", "orpo:simpo_gamma=0.3..1.0"], "orpo does not read simpo_gamma"),
        (["--tune-space", "orpo:method=sft,dpo"], "the method is what compare varies"),
        (
            ["--methods", "orpo,sft", "--tune-space", "sft:beta=0.1..0.5"],
            "--tune-space sft:beta=0.1..0.5: sft does not read beta (its loss reads no knob: search the "
            "learning rate or other training fields)",
        ),
        (
            ["--tune-space", "dpo:beta=0.1,0.2", "--tune-space", "dpo:beta=0.3,0.4"],
            "beta is already searched",
        ),
        (["--tune", "0"], "--tune 0: give at least 1 trial per method"),
        (["--tune-objective", "eval_loss"], "--tune-objective eval_loss: its value depends on beta"),
        (["--grid", "beta=0.1,0.2"], "--grid with --tune"),
        (["--tune-objective", "eval_rewards/chosen"], "eval_rewards/chosen: is lower or higher better?"),
    ],
)
def test_bad_tune_input_is_one_line_before_any_trial(tmp_path, capsys, argv, message):
    base = ["compare", *TINY, f"training.output_dir={tmp_path / 'cmp'}"]
    base += [] if "--methods" in argv else ["--methods", "orpo,dpo"]
    tune = [] if "--tune" in argv else ["--tune", "2"]
    assert main([*base, *tune, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and message in err and "\n" not in err
    assert not (tmp_path / "cmp").exists()  # nothing trained, nothing written


def test_tune_space_without_tune_is_refused(tmp_path, capsys):
    assert main(["compare", "--tune-space", "learning_rate=log:1e-5..1e-3"]) == 2
    assert "--tune-space and --tune-objective need --tune N" in capsys.readouterr().err


def test_the_automatic_judge_comes_from_the_eval_prompts_and_tune_chooses_on_it(tmp_path):
    """pairs -> compare: data.train is the user's pairs file, data.eval builtin:codereview. The judge
    scores eval prompts, so the eval source decides it (not the train source), and --tune chooses on it."""
    from orpo.lab.compare.plan import resolve_judge
    from orpo.lab.compare.tuned import TuneRequest, plan_studies
    from orpo.run.recipe import load_recipe

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    workflow = [f"data.train={pairs}", "data.eval=builtin:codereview", "data.eval_split=val"]
    assert resolve_judge("auto", load_recipe(None, workflow).data) == "rules:codereview"
    listed = [f"data.train={pairs}", 'data.eval=[{path: "builtin:codereview", split: val, limit: 16}]']
    assert resolve_judge("auto", load_recipe(None, listed).data) == "rules:codereview"
    # eval carved from train: the train source decides; a user's eval file has no task judge
    assert resolve_judge("auto", load_recipe(None, []).data) == "rules:codereview"
    carved = ['data.train=[{path: "builtin:codereview", limit: 64}]', "data.eval=null"]
    assert resolve_judge("auto", load_recipe(None, carved).data) == "rules:codereview"
    assert resolve_judge("auto", load_recipe(None, [f"data.eval={pairs}"]).data) is None
    assert resolve_judge("auto", load_recipe(None, [f"data.train={pairs}", "data.eval=null"]).data) is None
    studies = plan_studies(
        None,
        listed,
        plan(parse_methods("orpo"), [], None),
        TuneRequest(trials=1, space=[]),
        tmp_path / "cmp",
        resolve_judge("auto", load_recipe(None, listed).data),
        4,
    )
    assert studies["orpo"].objective == "judge:rules:codereview:f1"
