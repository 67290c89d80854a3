"""The demo's studies choose on the validation split only, each method from its own trials, and an
interrupted study resumes without rerunning its finished trials."""

import json

import pytest

import orpo.lab.demo.tune as tune
from orpo.lab.demo.run import make_sources, start, tune_sources
from orpo.lab.demo.settings import SIZES, torch_threads
from orpo.lab.harness import ProcessResult

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
    judged: list[list] = []
    real = tune.judged_f1

    def recording(model, tok, prompt_ids, examples, max_new_tokens):
        judged.append(list(examples))
        return real(model, tok, prompt_ids, examples, max_new_tokens)

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.setattr(tune, "run_all", _in_process)
        mp.setattr(tune, "judged_f1", recording)
        s = start(QUICK, 0, out, cache, progress=False)
        sources = make_sources(s, QUICK, ["on-policy"], out, cache, progress=False)
        chosen = tune_sources(s, QUICK, ["sft", "orpo"], sources, cache, progress=False)["on-policy"]
    return s, chosen, judged, cache


def test_the_studies_judge_the_validation_snippets_and_never_the_test_ones(tuned):
    s, _, judged, _ = tuned
    val = [e.snippet for e in s.splits["val"]]
    test = {e.snippet for e in s.splits["test"]}
    assert judged, "no review was judged: the studies chose on nothing"
    for examples in judged:
        snippets = [e.snippet for e in examples]
        assert snippets == val
        assert not test & set(snippets)


def test_each_trial_was_judged_and_the_best_one_chosen(tuned):
    _, chosen, judged, _ = tuned
    for method in ("sft", "orpo"):
        trials = chosen[method]["trials"]
        assert len(trials) == QUICK.trials
        best = max((t for t in trials if t["state"] == "complete"), key=lambda t: t["value"])
        assert chosen[method]["params"] == best["params"]
    # one judged set per epoch but the last (the pruner's report) and one at the end, per trial
    assert len(judged) == 2 * QUICK.trials * QUICK.epochs


def test_an_interrupted_study_resumes_without_rerunning_finished_trials(tuned):
    """Remove chosen.json (as if the demo died after the trials): the study reruns nothing."""
    s, chosen, _, cache = tuned
    folder = tune.Path(chosen["orpo"]["folder"])
    (folder / "chosen.json").unlink()
    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.setattr(tune, "run_all", _in_process)
        sources = make_sources(s, QUICK, ["on-policy"], cache.parent / "out2", cache, progress=False)
        again = tune_sources(s, QUICK, ["orpo"], sources, cache, progress=False)["on-policy"]["orpo"]
    assert again["ran"] == [] and again["params"] == chosen["orpo"]["params"]
    assert json.loads((folder / "chosen.json").read_text())["params"] == chosen["orpo"]["params"]
