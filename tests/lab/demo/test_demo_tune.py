"""The demo's studies choose on the validation split only, each method from its own trials, and an
interrupted study resumes without rerunning its finished trials."""

import json

import pytest

import orpo.lab.demo.tune as tune
from orpo.lab.demo.run import make_sources, start, tune_sources
from orpo.lab.demo.settings import SIZES, torch_threads
from orpo.launch import ProcessResult

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

QUICK = SIZES["quick"]


def _in_process(targets, workers, on_done=None):
    """harness.run_all, but in this process (so the test sees every call the studies make)."""
    results = []
    for i, target in enumerate(targets):
        result = ProcessResult(code=0, seconds=0.0, value=target())
        if on_done:
            on_done(i, result)
        results.append(result)
    return results


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """sft and orpo tuned on the quick demo's on-policy pairs, recording every judged review set."""
    judged: list[tuple[list, list]] = []
    real = tune.judged_f1

    def recording(model, tok, prompt_ids, examples, max_new_tokens, batch_size):
        judged.append((list(prompt_ids), list(examples)))
        return real(model, tok, prompt_ids, examples, max_new_tokens, batch_size)

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.setattr(tune, "run_all", _in_process)
        mp.setattr(tune, "judged_f1", recording)
        s = start(QUICK, 0, out, cache, progress=False)
        sources = make_sources(s, QUICK, ["on-policy"], out, cache, progress=False)
        chosen = tune_sources(s, QUICK, ["sft", "orpo"], sources, cache, progress=False)["on-policy"]
    return s, chosen, judged, cache, sources


def test_the_studies_judge_the_validation_snippets_and_never_the_test_ones(tuned):
    s, _, judged, _, _ = tuned
    val = [e.snippet for e in s.splits["val"]]
    test = {e.snippet for e in s.splits["test"]}
    val_prompts = [list(ids) for ids in s.data.val["prompt_input_ids"]]
    test_prompts = {tuple(ids) for ids in s.data.test["prompt_input_ids"]}
    assert judged, "no review was judged: the studies chose on nothing"
    for prompt_ids, examples in judged:
        snippets = [e.snippet for e in examples]
        assert snippets == val and not test & set(snippets)  # the truth judged against
        assert [list(ids) for ids in prompt_ids] == val_prompts  # the prompts answered
        assert not test_prompts & {tuple(ids) for ids in prompt_ids}


def test_each_trial_was_judged_and_the_best_one_chosen(tuned):
    _, chosen, judged, _, _ = tuned
    for method in ("sft", "orpo"):
        trials = chosen[method]["trials"]
        assert len(trials) == QUICK.trials
        best = max((t for t in trials if t["state"] == "complete"), key=lambda t: t["value"])
        assert chosen[method]["params"] == best["params"]
    # one judged set per epoch but the last (the pruner's report) and one at the end, per trial
    assert len(judged) == 2 * QUICK.trials * QUICK.epochs


def test_an_interrupted_study_resumes_without_rerunning_finished_trials(tuned):
    """Remove chosen.json (as if the demo died after the trials): the study reruns nothing."""
    s, chosen, _, cache, _ = tuned
    folder = tune.Path(chosen["orpo"]["folder"])
    (folder / "chosen.json").unlink()
    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.setattr(tune, "run_all", _in_process)
        sources = make_sources(s, QUICK, ["on-policy"], cache.parent / "out2", cache, progress=False)
        again = tune_sources(s, QUICK, ["orpo"], sources, cache, progress=False)["on-policy"]["orpo"]
    assert again["ran"] == [] and again["params"] == chosen["orpo"]["params"]
    assert json.loads((folder / "chosen.json").read_text())["params"] == chosen["orpo"]["params"]


def test_a_trial_left_running_by_a_killed_demo_is_replaced(tuned):
    """A study whose process died mid-trial: that trial does not count, one new trial takes its place,
    the finished ones are not rerun."""
    import dataclasses
    import socket
    import subprocess

    import optuna

    s, chosen, _, _, sources = tuned
    folder = tune.Path(chosen["sft"]["folder"])
    study = optuna.load_study(study_name="sft", storage=f"sqlite:///{folder / 'study.db'}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = study.ask()  # as a killed demo leaves it: running, its process gone
    left.set_user_attr("host", socket.gethostname())
    left.set_user_attr("pid", dead.pid)
    (folder / "chosen.json").unlink()
    bigger = dataclasses.replace(QUICK, trials=QUICK.trials + 1)
    study_job = tune.Study(
        method="sft",
        source="on-policy",
        base=s.base,
        budget=bigger,
        engine=s.engine,
        train=sources[0][1],
        data=s.tune_data,
        folder=folder,
        settings={},
    )
    with torch_threads(1):
        outcome = study_job()
    states = {
        t.number: t.state.name
        for t in optuna.load_study(study_name="sft", storage=f"sqlite:///{folder / 'study.db'}").trials
    }
    assert states[left.number] == "FAIL"
    assert outcome["ran"] == [left.number + 1]  # one new trial; the finished ones kept
    assert [t["number"] for t in outcome["trials"]] == [0, 1, left.number + 1]
