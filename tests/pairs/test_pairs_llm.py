"""`orpo pairs --judge openai`: 1-10 ratings from a scripted chat-completions server on 127.0.0.1.

The server rates an answer 1 + (its number of letters mod 10), never rates the answers to a question
marked MALFORMED, and records every request, so the test knows each score and what was sent.
"""

import json

import pytest

from orpo.cli.main import main
from orpo.evaluation.judges.pointwise import LLMScorer, ScoreItem

SECRET = "sk-pairs-test-7d1e-DO-NOT-LEAK"
START, END = "[Assistant's answer - start]\n", "\n[Assistant's answer - end]"


def rating(answer: str) -> float:
    return float(1 + sum(c.isalpha() for c in answer) % 10)


def rate(body: dict) -> dict:
    """The server's reply to one chat request."""
    text = body["messages"][-1]["content"]
    answer = text.split(START)[1].split(END)[0]
    reply = "I cannot rate this." if "MALFORMED" in text else f"Fine.\nRating: [[{rating(answer):g}]]"
    return {"choices": [{"message": {"role": "assistant", "content": reply}}]}


@pytest.fixture
def server(scripted_server):
    return scripted_server(rate)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A plain tiny model folder (random weights, a tokenizer with a chat template)."""
    from orpo.models.tiny import build_model, build_tokenizer

    folder = tmp_path_factory.mktemp("pairsllm") / "model"
    tok = build_tokenizer(["Say hello to the world. Name a colour: red, green, blue."], vocab_size=300)
    build_model(tok, "llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1).save_pretrained(
        folder
    )
    tok.save_pretrained(folder)
    return str(folder)


def test_llm_ratings_pair_a_malformed_reply_is_counted_and_a_rerun_is_free(
    server, model_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello\nName a colour\nMALFORMED question\n")
    out = tmp_path / "pairs.jsonl"
    argv = ["pairs", model_dir, "--prompts", str(prompts), "--out", str(out), "--judge", "openai"]
    argv += ["--base-url", server.url, "--judge-model", "rater", "--max-new-tokens", "12", "--no-progress"]
    argv += ["--temperature", "1.0", "--chosen", "best"]  # what this test was written for
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    counts, counters = summary["counts"], summary["judge_counters"]

    # One request per distinct completion; the MALFORMED prompt's ones asked twice, all unscored.
    samples = [json.loads(line) for line in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    distinct = {(s["id"], s["completion"]) for s in samples}
    malformed = {d for d in distinct if d[0] == "2"}
    assert counts["distinct_samples"] == len(distinct)
    assert counters["malformed"] == 2 * len(malformed) and counters["requests"] == len(distinct) + len(
        malformed
    )
    assert len(server.requests) == counters["requests"]
    assert counts["unscored_samples"] == 4 and counts["dropped"].get("no_score") == 1
    assert all(r["prompt_id"] != "2" for r in rows)
    assert all(
        h["Authorization"] == f"Bearer {SECRET}" and path == "/v1/chat/completions"
        for path, h, _ in server.requests
    )

    # Every pair is better by the server's own rating of its two texts.
    assert rows
    for row in rows:
        assert rating(row["chosen"]) == row["chosen_score"] > row["rejected_score"] == rating(row["rejected"])
    assert counts["pairs"] == len(rows) and counts["prompts_paired"] + sum(counts["dropped"].values()) == 3

    # A rerun is served from the cache: no request, the same file.
    first = out.read_text()
    n = len(server.requests)
    assert main(argv) == 0
    assert len(server.requests) == n and out.read_text() == first
    rerun = json.loads(out.with_suffix(".summary.json").read_text())
    assert rerun["judge_counters"] == {"cache_hits": len(distinct)}
    # The key is nowhere on disk or screen.
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".png":
            assert SECRET not in path.read_text(errors="replace"), path
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err


def test_custom_template_and_score_pattern(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    template = tmp_path / "t.txt"
    template.write_text("Q: {question}\nRef: {reference}\nA: {answer}\nSay 'Score: N/10'.")
    scorer = LLMScorer(
        "http://127.0.0.1:9/v1", "m", tmp_path / "c", template=str(template), score_pattern=r"Score: (\d+)/10"
    )
    messages = scorer._messages(ScoreItem("0", "q?", "x = {1: 2}", "ref"))
    assert messages == [{"role": "user", "content": "Q: q?\nRef: ref\nA: x = {1: 2}\nSay 'Score: N/10'."}]
    assert scorer.parse("Score: 3/10 ... no, Score: 7/10") == 7.0 and scorer.parse("seven") is None
    with pytest.raises(ValueError, match="needs a group"):
        LLMScorer("http://127.0.0.1:9/v1", "m", tmp_path / "c", score_pattern=r"\d+")
