"""`orpo tune` refuses, in one line and before it creates anything, what no trial could run: a knob the
method does not read, no judge prompts, an objective nobody logs, an --out that is a file, a database
without its driver, and a rerun of a study with other settings. The default objective works with the
default space."""

import sys

import pytest

from helpers import TINY_RECIPE
from orpo.cli.main import build_parser, main
from orpo.tune.space import default_space, parse_space
from orpo.tune.study import TuneSettings, check_settings, open_study

# If a refusal were missing, the tune would train: keep that to one tiny step.
TINY = [*TINY_RECIPE, "max_steps=1"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo: error: ") and "\n" not in err, err
    return err.removeprefix("orpo: error: ")


def test_a_knob_the_method_does_not_read_is_refused(tmp_path, capsys):
    """SFT's loss is the NLL alone: a beta search would train the same model N times."""
    out = tmp_path / "tune"
    argv = ["tune", *TINY, "method=sft", "--space", "beta=0.1..0.5", "--objective", "eval_nll_loss"]
    assert main([*argv, "--trials", "2", "--out", str(out)]) == 2
    assert _one_line(capsys) == (
        "--space beta=0.1..0.5: sft does not read beta (its loss reads no knob: search the learning "
        "rate or other training fields)"
    )
    assert main(["tune", *TINY, "--space", "simpo_gamma=0.5..1.0", "--trials", "2", "--out", str(out)]) == 2
    assert _one_line(capsys) == "--space simpo_gamma=0.5..1.0: orpo does not read simpo_gamma (it reads beta)"
    assert not out.exists()


@pytest.mark.parametrize("n", ["0", "-3"])
def test_no_judge_prompts_is_refused_before_any_trial(tmp_path, capsys, n):
    out = tmp_path / "tune"
    argv = ["tune", *TINY, "--space", "learning_rate=1e-3,2e-3", "--trials", "1", "--out", str(out)]
    assert main([*argv, "--objective", "judge:rules:codereview:f1", "--judge-prompts", n]) == 2
    assert _one_line(capsys) == f"--judge-prompts {n}: a judge objective needs at least 1 eval prompt"
    assert not out.exists()


def test_the_default_objective_goes_with_the_default_space():
    """`orpo tune my.yaml --trials 1`: the default space searches beta, so the default objective must not
    be eval_loss (which beta changes): it is eval_nll_loss, and --help says so."""
    args = build_parser().parse_args(["tune", "--trials", "1"])
    assert args.objective == "eval_nll_loss"
    settings = TuneSettings(
        config=None,
        overrides=[],
        params=parse_space(default_space("orpo")),
        trials=1,
        objective=args.objective,
    )
    check_settings(settings)
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["tune"].format_help().split())
    assert "default eval_nll_loss" in help_text


def test_an_objective_with_no_direction_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "tune"
    argv = ["tune", *TINY, "--space", "learning_rate=1e-3,2e-3", "--trials", "1", "--out", str(out)]
    assert main([*argv, "--objective", "nosuch"]) == 2
    assert _one_line(capsys).startswith("--objective eval_nosuch: is lower or higher better?")
    assert not out.exists()


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder\n")
    argv = ["tune", *TINY, "--space", "learning_rate=1e-3,2e-3", "--trials", "1", "--out", str(out)]
    assert main(argv) == 2
    assert _one_line(capsys) == f"--out {out}: is a file; give a folder (new or a tune folder)"
    assert out.read_text() == "not a folder\n"


def test_a_database_without_its_driver_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    for name in ("psycopg2", "psycopg"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails: no driver installed
    out = tmp_path / "tune"
    argv = ["tune", *TINY, "--space", "learning_rate=1e-3,2e-3", "--trials", "1", "--out", str(out)]
    assert main([*argv, "--storage", "postgresql://u:pw@localhost/orpo"]) == 2
    assert _one_line(capsys) == (
        "--storage postgresql://...: PostgreSQL needs a driver (psycopg2 or psycopg): pip install 'orpo[tune]'"
    )
    assert not out.exists()


def _settings(out, *overrides, space=("learning_rate=1e-3,2e-3",), **kw):
    return TuneSettings(
        config=None,
        overrides=[*TINY_RECIPE, *overrides],
        params=parse_space(list(space)),
        trials=2,
        objective="eval_nll_loss",
        out=out,
        **kw,
    )


def test_a_rerun_with_other_settings_is_refused_naming_what_changed(tmp_path):
    """A study's trials were trained with its settings: another max_steps, another space or another
    recipe in the same study would rank trials that are not alike, and best.yaml would claim values
    the best trial did not train with."""
    out = tmp_path / "tune-x"
    out.mkdir()
    first = _settings(out, "max_steps=2")
    open_study(first, out, {})
    open_study(_settings(out, "max_steps=2"), out, {})  # the same settings: resumed
    with pytest.raises(ValueError) as err:
        open_study(_settings(out, "max_steps=3"), out, {})
    message = str(err.value)
    assert "\n" not in message and message.startswith("study 'tune-x' in sqlite:///")
    assert "was run with other settings (training.max_steps: 2 -> 3)" in message
    assert message.endswith("use another --out folder or --study name")
    with pytest.raises(ValueError, match=r"other settings \(space: learning_rate=1e-3,2e-3 -> "):
        open_study(_settings(out, "max_steps=2", space=("learning_rate=1e-3,5e-3",)), out, {})
    with pytest.raises(ValueError, match=r"other settings \(model.tiny.hidden_size: 32 -> 64\)"):
        open_study(_settings(out, "max_steps=2", "model.tiny.hidden_size=64"), out, {})
    # the output folder, the keep policy and the pruner do not change what a trial is
    open_study(_settings(out, "max_steps=2", "training.output_dir=elsewhere", keep="all"), out, {})
