"""`orpo iterate`: the rounds' windows of prompts, the held-out check, the settings a rerun must match,
the win rate by hand, bad input as one line with nothing written; end to end on a tiny model with both
control arms, a rerun that does no work, and a kill -9 followed by a rerun that completes the same rounds."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orpo.cli.main import main
from orpo.evaluation.generate import Prompt
from orpo.iterate.plan import IterateSettings, PromptPlan, check_out, plan_prompts
from orpo.iterate.report import compare, no_gain

CODE = "builtin:codereview"
RECIPE = """
model: {name: "tiny:llama", tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1, vocab_size: 400}}
adapter: null
data: {train: builtin:codereview, eval_fraction: 0.0}
training: {num_train_epochs: 1, per_device_train_batch_size: 4, learning_rate: 1.0e-3, gradient_checkpointing: false,
           bf16: false, report_to: none, save_strategy: "no", logging_steps: 1, eval_strategy: "no"}
"""
SMALL = [
    "--prompts", CODE, "--judge", "rules:codereview", "--samples", "2", "--max-prompts", "6",
    "--eval-prompts", "4", "--max-new-tokens", "12", "--batch-size", "8", "--no-progress",
]  # fmt: skip


def _prompt(i: int, text: str | None = None) -> Prompt:
    text = text or f"prompt {i}"
    return Prompt(str(i), [{"role": "user", "content": text}], None, f"reference {i}")


def test_round_windows_move_through_the_pool_and_wrap():
    plan = PromptPlan(pool=[_prompt(i) for i in range(5)], held_out=[])
    assert [p.id for p in plan.window(1, 2)] == ["0", "1"]
    assert [p.id for p in plan.window(2, 2)] == ["2", "3"]
    assert [p.id for p in plan.window(3, 2)] == ["4", "0"]  # wraps round the end
    assert [p.id for p in plan.window(7, None)] == ["0", "1", "2", "3", "4"]
    assert len(plan.window(1, 9)) == 5


def test_held_out_prompts_come_from_the_eval_split_or_the_end_of_the_training_split(tmp_path):
    other = plan_prompts(IterateSettings(CODE, "rules:codereview", 1, tmp_path, eval_prompts=7))
    assert len(other.held_out) == 7 and len(other.pool) == 1800
    same = plan_prompts(
        IterateSettings(
            CODE, "rules:codereview", 1, tmp_path, split="test", eval_split="test", eval_prompts=50
        )
    )
    assert len(same.pool) == 150 and len(same.held_out) == 50
    assert not {p.text for p in same.pool} & {p.text for p in same.held_out}


def test_a_held_out_prompt_that_a_round_could_train_on_is_refused(tmp_path):
    """From another split: refused. From the training split itself: its copies earlier in the split are
    held out with it."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    train = [{"prompt": f"question {i}", "reference": "r"} for i in range(6)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "test.jsonl").write_text(
        json.dumps({"prompt": "question 9"}) + "\n" + json.dumps(train[2]) + "\n"
    )
    settings = IterateSettings(str(folder), "rules:codereview", 1, tmp_path / "o", eval_prompts=2)
    with pytest.raises(
        ValueError, match=r"--eval-split test: 1 of its 2 prompts are also training prompts .*id 1"
    ):
        plan_prompts(settings)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*train, train[0]]))
    same = plan_prompts(
        IterateSettings(
            str(folder), "rules:codereview", 1, tmp_path / "o", eval_split="train", eval_prompts=1
        )
    )
    assert [p.text for p in same.held_out] == ["question 0"]
    assert [p.text for p in same.pool] == [f"question {i}" for i in range(1, 6)]


def test_a_rerun_may_add_rounds_but_not_change_what_the_rounds_did(tmp_path):
    recipe = {"training": {"max_steps": 6, "beta": 0.1}}
    check_out(IterateSettings(CODE, "rules:codereview", 2, tmp_path / "o", samples=2), recipe)
    # More rounds, another batch size, the same recipe written otherwise: the same run, continued.
    more = IterateSettings(
        CODE, "rules:codereview", 5, tmp_path / "o", samples=2, batch_size=4, overrides=("x=1",)
    )
    check_out(more, recipe)
    changed = {"training": {"max_steps": 7, "beta": 0.1}}
    with pytest.raises(
        ValueError, match=r"other settings \(the recipe: training.max_steps: 6 -> 7, samples: 2 -> 3\)"
    ):
        check_out(IterateSettings(CODE, "rules:codereview", 2, tmp_path / "o", samples=3), changed)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_out(IterateSettings(CODE, "rules:codereview", 2, tmp_path / "f"))


def test_win_rate_counts_ties_as_half_and_an_unscored_answer_as_a_loss():
    earlier = {
        "items": [
            {"id": "a", "score": 0.0},
            {"id": "b", "score": 1.0},
            {"id": "c", "score": 0.5},
            {"id": "d", "score": None},
        ]
    }
    later = {
        "items": [
            {"id": "a", "score": 1.0},
            {"id": "b", "score": 1.0},
            {"id": "c", "score": 0.2},
            {"id": "d", "score": 0.3},
        ]
    }
    result = compare(earlier, later)
    assert result["rate"] == pytest.approx(62.5)  # (1 + 0.5 + 0 + 1) / 4
    assert 0.0 <= result["ci_low"] <= 62.5 <= result["ci_high"] <= 100.0


def test_no_gain_means_not_above_the_previous_interval():
    previous = {"score": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}}
    assert no_gain(previous, {"score": {"mean": 0.6}})
    assert not no_gain(previous, {"score": {"mean": 0.61}})


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rounds", "0"], "--rounds 0: give at least 1 round"),
        (["--rounds", "1", "--judge", "human"], "--judge human cannot score one completion on its own"),
        (
            ["--rounds", "1", "data.train=x.jsonl"],
            "data.train=x.jsonl: iterate trains each round on the pairs",
        ),
        (["--rounds", "1", "--control", "steps,bogus"], "--control bogus: choose among steps, sft"),
        (["--rounds", "1", "--samples", "1"], "--samples 1: pairs need at least 2"),
        (
            ["--rounds", "1", "--eval-split", "train", "--split", "train", "--eval-prompts", "5000"],
            "leaves none to train on",
        ),
        (["--rounds", "1", "beta=-1"], "training.beta=-1"),
        (["--rounds", "1", "--temperature", "-1"], "temperature=-1.0 must be >= 0"),
        (["--rounds", "1", "--temperature", "0"], "greedy decoding gives 4 identical completions"),
        (["--rounds", "1", "--top-p", "2"], "top_p=2.0 must be in (0, 1]"),
        (["--rounds", "1", "--min-margin", "-1"], "--min-margin -1.0 must be >= 0"),
        (["--rounds", "1", "--batch-size", "0"], "--batch-size 0 must be >= 1"),
        (["--rounds", "1", "--eval-split", "nosuch"], "nosuch"),
        (["--rounds", "1", "model.name=nosuch/base"], "nosuch/base"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    """Each refused before the base is built or anything is written."""
    out = tmp_path / "it"
    argv = ["iterate", "--prompts", CODE, "--judge", "rules:codereview", "--out", str(out), *extra]
    # The last --judge on the line wins (argparse), so the human case replaces the rules judge.
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "it"
    out.write_text("mine")
    argv = ["iterate", "--prompts", CODE, "--judge", "rules:codereview", "--rounds", "1", "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"orpo: error: --out {out} is a file; give a folder"
    assert out.read_text() == "mine"


# ---- end to end (tiny model) ----


def _iterate(out: Path, *extra: str, recipe: Path) -> list[str]:
    from orpo.iterate import IterateSettings, run_iterate

    said: list[str] = []
    settings = IterateSettings(
        CODE, "rules:codereview", 2, out, recipe=str(recipe), samples=2, max_prompts=6, eval_prompts=4,
        max_new_tokens=12, batch_size=8, controls=("steps", "sft"), overrides=extra,
    )  # fmt: skip
    run_iterate(settings, progress=False, say=said.append)
    return said


@pytest.fixture(scope="session")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("iterate") / "tiny.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="session")
def finished(tmp_path_factory, recipe) -> tuple[Path, list[str]]:
    import orpo.pairs.make

    out = tmp_path_factory.mktemp("iterate") / "it"
    built: list[str] = []
    real = orpo.pairs.make.build_scorer
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(orpo.pairs.make, "build_scorer", lambda spec, **kw: built.append(spec) or real(spec, **kw))
        said = _iterate(out, recipe=recipe)
    # The judge is built once for the whole run (a reward model is not loaded again per round).
    assert built == []
    return out, said


@pytest.mark.slow
def test_two_rounds_with_both_controls_write_every_round_and_its_interval(finished):
    out, said = finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "f1" and summary["held_out_prompts"] == 4
    assert list(summary["arms"]) == ["main", "steps", "sft"]
    for arm, rounds in summary["arms"].items():
        assert [r["round"] for r in rounds] == [0, 1, 2], arm
        for r in rounds:
            m = r["eval"]["metric"]
            assert m["ci_low"] <= m["mean"] <= m["ci_high"]
        assert all(r["win_rate"]["against"] == f"round {r['round'] - 1}" for r in rounds[1:])
    main_, steps, sft = (summary["arms"][k] for k in ("main", "steps", "sft"))
    # Round 1 of the steps arm is the main arm's; its round 2 trains round 1's pairs for as many steps.
    assert steps[1] == main_[1]
    # One epoch each: the main arm's round 2 (both rounds' pairs) takes more steps than one epoch on
    # round 1's pairs, and the control is given exactly as many.
    assert main_[2]["train"]["steps"] > main_[1]["train"]["steps"]
    assert steps[2]["train"]["steps"] == main_[2]["train"]["steps"]
    assert (
        "max_steps: " + str(main_[2]["train"]["steps"])
        in (out / "control-steps" / "round-2" / "run" / "config.yaml").read_text()
    )
    assert steps[2]["train"]["data"] == [str(out / "round-1" / "pairs.jsonl")]
    # --replay all: round 2 trains on both rounds' pairs, from round 1's model.
    assert main_[2]["train"]["data"] == [str(out / f"round-{k}" / "pairs.jsonl") for k in (1, 2)]
    assert main_[2]["train"]["start"] == str(out / "round-1" / "run")
    # The sft arm shares round 1's pairs, then samples from its own round-1 model.
    assert sft[1]["pairs"]["shared_from"] == "main" and sft[1]["pairs_file"] == str(
        out / "round-1" / "pairs.jsonl"
    )
    assert sft[2]["pairs_file"] == str(out / "sft" / "round-2" / "pairs.jsonl")
    assert "method: sft" in (out / "sft" / "round-2" / "run" / "config.yaml").read_text()
    samples = [
        json.loads(x) for x in (out / "sft" / "round-2" / "pairs.samples.jsonl").read_text().splitlines()
    ]
    assert {s["model"] for s in samples} == {str(out / "sft" / "round-1" / "run")}
    # Every round trains at the recipe's learning rate, though its model is a folder.
    assert "learning_rate: 0.001" in (out / "round-2" / "run" / "config.yaml").read_text()
    assert (out / "rounds.png").stat().st_size > 0
    assert sum("training" in s for s in said) == 2 + 1 + 2  # main 2, steps 1 (round 2), sft 2


@pytest.mark.slow
def test_a_rerun_does_no_finished_work(finished, recipe):
    out, _ = finished
    before = (out / "summary.json").read_text()
    said = _iterate(out, recipe=recipe)
    assert said == []  # nothing sampled, trained or judged
    assert (out / "summary.json").read_text() == before


def _kill_when(argv: list[str], marker: Path) -> None:
    """Start ``argv`` and kill -9 it as soon as ``marker`` exists."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, f"iterate ended before {marker} appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_9_then_rerun_completes_the_same_rounds(finished, tmp_path):
    """Killed while round 2 samples, then again while a round-2 control trains; the rerun finishes with
    the rounds, pairs and held-out answers of the run that was never killed."""
    ref, _ = finished
    out = tmp_path / "it"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    argv = [
        sys.executable, "-m", "orpo.cli.main", "iterate", str(recipe), *SMALL, "--rounds", "2",
        "--control", "steps,sft", "--out", str(out),
    ]  # fmt: skip
    _kill_when(argv, out / "round-2" / "pairs.samples.jsonl")
    _kill_when(argv, out / "control-steps" / "round-2" / "run")
    assert not (out / "sft" / "round-2" / "eval.json").exists()
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got, want = (json.loads((d / "summary.json").read_text())["arms"] for d in (out, ref))
    assert list(got) == list(want)
    for arm in want:
        assert [r["round"] for r in got[arm]] == [r["round"] for r in want[arm]]
        for a, b in zip(got[arm], want[arm]):
            assert a["eval"] == {**b["eval"], "seconds": a["eval"]["seconds"]}, arm
            assert (a["pairs"] or {}).get("pairs") == (b["pairs"] or {}).get("pairs")
    for name in ("round-2/pairs.jsonl", "sft/round-2/pairs.jsonl"):
        assert (out / name).read_text() == (ref / name).read_text().replace(str(ref), str(out)), name
    for name in ("round-2/eval.json", "sft/round-2/eval.json", "control-steps/round-2/eval.json"):
        answers = [[i["answer"] for i in json.loads((d / name).read_text())["items"]] for d in (out, ref)]
        assert answers[0] == answers[1], name


@pytest.mark.slow
def test_until_no_gain_stops_at_the_first_round_inside_the_previous_interval(tmp_path):
    """A few training steps of a random tiny model write no review: f1 stays 0, inside the base's interval
    [0, 0], so round 1 is the last of 3, and the summary says why."""
    from orpo.iterate import IterateSettings, run_iterate

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    settings = IterateSettings(
        CODE, "rules:codereview", 3, tmp_path / "it", recipe=str(recipe), samples=2, max_prompts=4,
        eval_prompts=3, max_new_tokens=8, batch_size=8, until_no_gain=True,
    )  # fmt: skip
    summary = run_iterate(settings, progress=False, say=lambda _: None)
    assert [r["round"] for r in summary["arms"]["main"]] == [0, 1]
    assert summary["stopped"].startswith("round 1's f1 0.000 is not above round 0's interval [0.000, 0.000]")
    assert not (tmp_path / "it" / "round-2").exists()
