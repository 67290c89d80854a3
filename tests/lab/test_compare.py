"""`orpo compare`: planning, one-line errors, the method list, and a real grid on the builtin data."""

import json

import pytest

from orpo.cli.main import main
from orpo.lab.compare.plan import parse_grid, parse_methods, plan

TINY = [
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.num_kv_heads=1",
    "model.tiny.vocab_size=300",
    "max_steps=2",
    "eval_steps=1",
    "logging_steps=1",
    "save_strategy=no",
    "per_device_train_batch_size=4",
    "per_device_eval_batch_size=50",
]


@pytest.mark.slow
def test_grid_runs_on_the_builtin_code_review_data(tmp_path, capsys, monkeypatch):
    """Two lambdas of ORPO on builtin:codereview (the embedded default recipe), each in its own process."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    argv = [
        "compare",
        *TINY,
        f"training.output_dir={out}",
        "--methods",
        "orpo",
        "--grid",
        "training.beta=0.1,1.0",
        "--judge-prompts",
        "12",
    ]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in report["runs"]] == ["orpo beta=0.1", "orpo beta=1.0"]
    for run in report["runs"]:
        assert run["steps"] == 2 and run["pairs"] == 8
        assert run["peak_rss_mb"] > 100 and run["ms_per_pair"] > 0
        assert 0.0 <= run["pref_acc"] <= 1.0 and run["eval_nll"] > 0
        assert [p["step"] for p in run["curve"]] == [0, 1, 2]  # before training, then every eval
        assert run["logp_chosen"] == pytest.approx(run["curve"][-1]["chosen"])
    low, high = report["runs"]
    # Same start (same seed, same weights), different objective weight: different training.
    assert low["curve"][0] == high["curve"][0]
    assert low["final"]["eval_loss"] != pytest.approx(high["final"]["eval_loss"], abs=1e-4)
    assert json.loads((out / "compare.json").read_text()) == report
    # builtin:codereview has a task judge: every run is scored by it, with intervals over 12 prompts
    assert report["judge"] == "rules:codereview"
    for run in report["runs"]:
        judged = run["judge"]
        assert judged["prompts"] == 12 and judged["max_new_tokens"] > 8
        for name in ("f1", "recall", "precision", "critical_misses", "valid_format"):
            m = judged["metrics"][name]
            assert m["ci_low"] <= m["mean"] <= m["ci_high"]
        assert 0.0 <= judged["metrics"]["recall"]["mean"] <= 1.0
    table = (out / "compare.md").read_text().splitlines()
    assert table[2].startswith("| orpo beta=0.1 | orpo |")
    assert "rules:codereview on greedy completions of the first 12 eval prompts" in table[5]
    assert table[7].startswith("| run | f1 | recall |") and table[9].startswith("| orpo beta=0.1 | ")
    assert (out / "compare_logps.png").stat().st_size > 1000
    assert (out / "orpo_beta_0.1" / "model.safetensors").is_file()


def test_plan_is_methods_times_grid_plus_trl_where_it_exists():
    runs = plan(parse_methods("sft,dpo:precomputed"), parse_grid(["beta=0.1,0.5"]), baseline="trl")
    assert [r.label for r in runs] == [
        "sft beta=0.1",
        "sft beta=0.1 (trl)",
        "sft beta=0.5",
        "sft beta=0.5 (trl)",
        "dpo:precomputed beta=0.1",
        "dpo:precomputed beta=0.1 (trl)",
        "dpo:precomputed beta=0.5",
        "dpo:precomputed beta=0.5 (trl)",
    ]
    assert runs[5].impl == "trl" and "training.precompute_ref_log_probs=true" in runs[5].overrides
    assert runs[2].overrides == ["training.method=sft", "beta=0.5"]


@pytest.mark.parametrize("argv", [["compare", "--list-methods"], ["compare", "--methods"]])
def test_list_methods(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("orpo", "sft", "simpo", "cpo", "dpo", "ipo", "hinge", "kto"):
        assert f"\n{name} " in f"\n{out}"
    assert (
        "Reference modes (dpo, ipo, hinge, kto): METHOD:MODE with MODE one of precomputed, adapter, model"
        in out
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "orpo,ppo"], "unknown method 'ppo'"),
        (["--methods", "orpo:model"], "orpo has no reference model"),
        (["--methods", "dpo:shared"], "reference mode 'shared'"),
        (["--methods", ","], "--methods is empty"),
        (["--grid", "training.beta"], "is not KEY=V1,V2"),
        (["--methods", "dpo:adapter"], "needs an adapter; add adapter.r=16"),
        (["--grid", "training.bta=0.1,0.2"], "unknown training field 'bta'; did you mean beta?"),
        (["data.eval=null", "data.eval_split=null", "data.eval_fraction=0"], "compare needs an eval set"),
        (["/nope/x.yaml"], "no such config file"),
        (["--judge", "openai"], "compare scores each run on its own, so it takes a rules judge"),
        (["--judge", "rules:/nope/j.py"], "rules:/nope/j.py: no such file"),
        (["--judge-prompts", "0"], "--judge-prompts 0 must be >= 1"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, argv, message):
    assert main(["compare", *argv, f"training.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and message in err and "\n" not in err


@pytest.mark.slow
def test_trl_baseline_dpo_with_a_frozen_copy_on_full_fine_tuning(tmp_path, capsys, monkeypatch):
    """`--baseline trl` with `dpo:model` and no adapter: TRL's DPOTrainer is handed the frozen copy
    (given none, it reloads a reference from the model's name, which an in-memory tiny model lacks)."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "max_steps=1", f"training.output_dir={out}", "--methods", "dpo:model"]
    assert main([*argv, "--baseline", "trl", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["label"], r["impl"]) for r in runs] == [("dpo:model", "orpo"), ("dpo:model (trl)", "trl")]
    assert all(r["steps"] == 1 and r["ms_per_pair"] > 0 for r in runs)


@pytest.mark.slow
def test_trl_baseline_sft_runs_trls_sft_trainer_and_both_are_judged(tmp_path, capsys, monkeypatch):
    """`--methods sft --baseline trl`: TRL's SFTTrainer on (prompt, chosen) beside ours, both judged."""
    monkeypatch.setenv("ORPO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "max_steps=1", f"training.output_dir={out}", "--methods", "sft"]
    assert main([*argv, "--baseline", "trl", "--judge-prompts", "4", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["label"], r["impl"]) for r in runs] == [("sft", "orpo"), ("sft (trl)", "trl")]
    ours, trl = runs
    assert trl["steps"] == 1 and trl["pairs"] == 4 and trl["ms_per_pair"] > 0
    # the same NLL (prompt + chosen, nll_on_prompt's default) from the same weights, 1 step apart
    assert trl["eval_nll"] == pytest.approx(ours["eval_nll"], rel=0.05)
    assert ours["judge"]["prompts"] == trl["judge"]["prompts"] == 4


def test_an_output_dir_that_is_a_file_is_one_line_and_left_alone(tmp_path, capsys):
    taken = tmp_path / "results.txt"
    taken.write_text("mine")
    assert main(["compare", "--methods", "orpo,sft", f"training.output_dir={taken}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error:") and "is a file, not a folder" in err and "\n" not in err
    assert taken.read_text() == "mine"
