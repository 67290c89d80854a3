"""`orpo tune --space`: the spec syntax, checks against the typed recipe, one-line errors (no training)."""

import sys

import pytest

from orpo.cli.main import main
from orpo.tune.space import Param, check_space, parse_param, parse_space
from orpo.tune.study import TuneSettings, check_comparable, direction_of, metric_name


def test_specs_become_the_distributions_they_say():
    lr = parse_param("learning_rate=log:1e-6..1e-3")
    assert (lr.name, lr.kind, lr.low, lr.high, lr.log) == ("learning_rate", "float", 1e-6, 1e-3, True)
    beta = parse_param("training.beta=0.05,0.1,0.2,0.5")  # dotted name of a training field: the short one
    assert (beta.name, beta.kind, beta.choices) == ("beta", "categorical", (0.05, 0.1, 0.2, 0.5))
    epochs = parse_param("num_train_epochs=int:1..3")
    assert (epochs.kind, epochs.low, epochs.high) == ("int", 1, 3)
    # adapter.r is declared int: a plain range on it samples integers
    rank = parse_param("adapter.r=4..16")
    assert (rank.name, rank.kind, rank.low, rank.high) == ("adapter.r", "int", 4, 16)
    assert parse_param("warmup_ratio=0.0..0.2").distribution().low == 0.0
    # YAML 1.1 reads `1e-3` as a string; a categorical value that is a number is the number
    assert parse_param("learning_rate=1e-3,3e-4").choices == (1e-3, 3e-4)


def test_override_keeps_every_digit_of_a_sampled_float():
    p = Param("learning_rate", "float", 1e-6, 1e-3, log=True)
    assert p.override(0.0008639708800409157) == "learning_rate=0.0008639708800409157"
    assert Param("adapter.r", "int", 4, 16).override(8) == "adapter.r=8"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("learning_rate=log:abc", "--space learning_rate=log:abc: 'abc' is not a range LO..HI"),
        ("learning_rate=log:abc..1e-3", "'abc' is not a number"),
        ("learning_rate=1e-3..1e-5", "the low bound 0.001 must be below the high bound 1e-05"),
        ("learning_rate=log:0..1e-3", "a log range needs a low bound > 0, got 0"),
        ("beta=0.1", "one value is not a search space"),
        ("beta=0.1,0.1", "a value is listed twice"),
        ("adapter.r=4.5..16", "adapter.r is an integer; give integer bounds"),
        ("learning_rate=sqrt:1..2", "unknown prefix 'sqrt'"),
    ],
)
def test_bad_syntax_is_one_line_naming_the_spec(spec, message):
    with pytest.raises(ValueError, match="^--space ") as err:
        parse_space([spec])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lerning_rate=1e-5..1e-3", "unknown training field 'lerning_rate'; did you mean learning_rate?"),
        ("model.dtypes=a,b", "unknown model field 'dtypes'"),
        ("learning_rate=-1..1", "training.learning_rate=-1.0 must be >= 0.0"),
        ("beta=0.1,abc", "training.beta='abc' is not a number"),
        ("adapter.dropout=0.0..1.5", "adapter.dropout=1.5 must be in [0, 1)"),
    ],
)
def test_the_recipe_checks_every_bound_and_value_before_a_trial(spec, message):
    params = parse_space([spec])
    with pytest.raises(ValueError, match="^--space ") as err:
        check_space(params, None, ["adapter.r=8"] if spec.startswith("adapter") else [])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_field_searched_twice_is_refused():
    with pytest.raises(ValueError, match="beta is already searched by --space beta=0.1,0.2"):
        parse_space(["beta=0.1,0.2", "training.beta=0.05..0.5"])


@pytest.mark.parametrize(
    "space, shown",
    [
        ("learning_rate=log:abc", "'abc' is not a range LO..HI"),
        ("lerning_rate=1e-5..1e-3", "unknown training field 'lerning_rate'"),
        ("learning_rate=1e-3..1e-5", "the low bound 0.001 must be below the high bound 1e-05"),
    ],
)
def test_cli_bad_space_is_one_line_and_exit_2_with_nothing_written(space, shown, tmp_path, capsys):
    out = tmp_path / "tune"
    code = main(["tune", "--space", space, "--trials", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"orpo: error: --space {space}: ") and shown in err and "\n" not in err
    assert not out.exists()


def test_without_optuna_the_cli_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now fails as if not installed
    assert main(["tune", "--space", "beta=0.1,0.2", "--trials", "2"]) == 2
    assert capsys.readouterr().err.strip() == "orpo: error: orpo tune needs Optuna: pip install 'orpo[tune]'"


def test_direction_follows_the_metric_unless_told():
    assert metric_name("loss") == "eval_loss" and metric_name("eval_nll_loss") == "eval_nll_loss"
    assert direction_of("eval_loss", "auto") == "minimize"
    assert direction_of("eval_rewards/accuracies", "auto") == "maximize"
    assert direction_of("eval_rewards/chosen", "minimize") == "minimize"
    with pytest.raises(ValueError, match="eval_rewards/chosen: is lower or higher better"):
        direction_of("eval_rewards/chosen", "auto")


def test_every_objective_ships_a_space_the_recipe_accepts():
    """The loss registry's per-objective knobs, with the shared learning rate, are valid --space specs
    for a recipe of that method (the default space of `orpo tune` without --space)."""
    from orpo.losses import OBJECTIVES
    from orpo.tune.space import default_space

    for name in OBJECTIVES:
        specs = default_space(name)
        assert specs[0] == "learning_rate=log:1e-6..1e-3"
        check_space(parse_space(specs), None, [f"method={name}"])
    assert [p.name for p in parse_space(default_space("simpo"))] == ["learning_rate", "beta", "simpo_gamma"]
    assert default_space("sft") == ["learning_rate=log:1e-6..1e-3"]


def test_the_help_examples_parse_and_their_spaces_check():
    """Every `orpo tune ...` line of the help parses, and its space is valid for the embedded recipe."""
    import shlex

    from orpo.cli.main import build_parser
    from orpo.cli.tune import HELP
    from orpo.tune.space import default_space

    text = HELP.replace("\\\n", " ")
    examples = [
        line.split("#")[0].strip() for line in text.splitlines() if line.strip().startswith("orpo tune")
    ]
    assert len(examples) == 4
    for line in examples:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command == "tune" and args.trials > 0
        params = parse_space(args.space or default_space("orpo"))
        check_space(params, None, [])
        check_comparable(
            TuneSettings(config=None, overrides=[], params=params, trials=1, objective=args.objective)
        )


def test_a_study_keeps_its_objective(tmp_path, capsys):
    """Values of two objectives in one study would be compared as one: a rerun that changes
    --objective (or --direction) is refused before any trial, naming what the study holds."""
    import optuna

    out = tmp_path / "tune-x"
    out.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="tune-x")
    study.set_user_attr("objective", "eval_loss")
    argv = ["tune", "--space", "learning_rate=1e-3,2e-3", "--trials", "2", "--out", str(out)]
    assert main([*argv, "--objective", "eval_nll_loss"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"orpo: error: study 'tune-x' in sqlite:///{(out / 'study.db').resolve()} chooses on eval_loss; "
        "--objective eval_nll_loss needs another --study name or --out folder"
    )
    assert main([*argv, "--objective", "eval_loss", "--direction", "maximize"]) == 2
    assert (
        "was created to minimize; --direction maximize needs another --study name" in capsys.readouterr().err
    )
    assert not list(out.glob("trial-*")) and not (out / "logs").exists()


def test_without_space_the_method_knobs_are_searched(tmp_path, capsys):
    """No --space: the learning rate and the recipe's objective's own knobs (here SimPO's beta and
    gamma). --trials 0 then stops before any trial, so only the chosen space is seen."""
    out = tmp_path / "tune"
    assert main(["tune", "method=simpo", "--trials", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "tune: searching learning_rate=log:1e-6..1e-3 beta=2.0..10.0 simpo_gamma=0.3..1.6 "
        "(the defaults for method=simpo)",
        "orpo: error: --trials 0: give at least 1",
    ]


def test_eval_loss_is_refused_when_the_space_changes_the_loss(tmp_path, capsys):
    """ORPO's eval_loss is NLL + beta * the odds-ratio term: searching beta on it would pick the
    smallest beta. The tune stops before anything is written; eval_nll_loss is comparable."""
    out = tmp_path / "tune"
    argv = ["tune", "--space", "beta=0.1,0.5", "--space", "learning_rate=1e-3,2e-3", "--trials", "1"]
    assert main([*argv, "--objective", "eval_loss", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "orpo: error: --objective eval_loss: its value depends on beta (searched), so trials would be "
        "ranked by that, not by quality; choose on eval_nll_loss, eval_rewards/accuracies or a judge "
        "(judge:rules:codereview:f1)"
    )
    assert not out.exists()


def test_the_trials_table_marks_the_best_and_shows_dashes_for_missing_values():
    from orpo.tune.results import format_table

    rows = [
        {"trial": 0, "state": "complete", "value": 1.23456, "beta": 0.1, "steps": 4, "reason": ""},
        {"trial": 1, "state": "failed", "value": None, "beta": 0.5, "steps": 2, "reason": "step 2: nan"},
    ]
    assert format_table(rows, "eval_nll_loss", best=0).splitlines() == [
        "trial  state     eval_nll_loss  beta  steps  reason",
        "0 *    complete  1.235          0.1   4",
        "1      failed    -              0.5   2      step 2: nan",
    ]
