"""The ``openai`` judge against a real chat-completions server on 127.0.0.1, started by the test.

The server is a small judge with known habits: it prefers the answer that contains "GOOD", always
says [[A]] (first shown) on a prompt marked BIASED, never gives a verdict on MALFORMED, gives none
the first time it sees a FLAKY request, and answers the first two requests of a run with HTTP 429
and then 500. It records every request (headers and body) so the test can see what was sent.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orpo.cli.main import main

SECRET = "sk-test-4f9c1e0d2b7a-DO-NOT-LEAK"


class JudgeServer:
    def __init__(self):
        self.requests = []  # (authorization header, body)
        self.fail_plan = [429, 500]
        self.served = {}  # request body -> times answered with 200
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.headers.get("Authorization"), body, self.path))
                    status = server.fail_plan.pop(0) if server.fail_plan else 200
                    if self.headers.get("Authorization") != f"Bearer {SECRET}":
                        status = 401
                    key = json.dumps(body, sort_keys=True)
                    seen = server.served.get(key, 0)
                    if status == 200:
                        server.served[key] = seen + 1
                if status != 200:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "try later"}}')
                    return
                if "SLOW" in body["messages"][-1]["content"] and seen == 0:
                    time.sleep(1.5)  # longer than the client's --timeout: it gives up and retries
                reply = server.reply(body["messages"][-1]["content"], seen)
                payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def reply(text: str, seen: int) -> str:
        first = text.split("[Assistant A's answer - start]")[1].split("[Assistant A's answer - end]")[0]
        if "MALFORMED" in text or ("FLAKY" in text and seen == 0):
            return "Both answers have merits; I cannot decide."
        if "BIASED" in text:
            return "The first one reads better.\n[[A]]"
        return "Reasoning...\n[[A]]" if "GOOD" in first else "Reasoning...\n[[B]]"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.close()


ITEMS = [  # (prompt, A's completion, B's completion)
    ("q0", "meh", "GOOD answer"),
    ("q1", "GOOD answer", "meh"),
    ("q2 BIASED", "one", "two"),
    ("q3 MALFORMED", "x", "y"),
    ("q4 FLAKY", "bad", "GOOD"),
]


def _write(path, column):
    with path.open("w") as fh:
        for i, item in enumerate(ITEMS):
            fh.write(json.dumps({"id": str(i), "prompt": item[0], "completion": item[column]}) + "\n")
    return str(path)


def _argv(tmp_path, server, model, out):
    """`orpo judge a.jsonl b.jsonl --judge openai` against the test server."""
    a, b = _write(tmp_path / "a.jsonl", 1), _write(tmp_path / "b.jsonl", 2)
    return ["judge", a, b, "--judge", "openai", "--base-url", server.url, "--model", model, "--out", str(out)]


def test_llm_judge_both_orders_retries_cache_and_no_key_leak(server, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "judged"
    argv = _argv(tmp_path, server, "judge-1", out)
    caplog.set_level("WARNING")
    assert main([*argv, "--concurrency", "3"]) == 0
    first_out = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    # ids 0 and 4 (after its malformed first reply) go to B, 1 to A, BIASED and MALFORMED are ties.
    assert (summary["wins"], summary["losses"], summary["ties"]) == (2, 1, 2)
    verdicts = {v["id"]: v for v in map(json.loads, (out / "verdicts.jsonl").read_text().splitlines())}
    assert (
        verdicts["2"]["raw"]["order_ab"]["model"] == "A" and verdicts["2"]["raw"]["order_ba"]["model"] == "B"
    )
    assert verdicts["2"]["verdict"] == "tie"
    assert verdicts["3"]["raw"]["order_ab"]["verdict"] is None

    # Both orders were requested for every item: A's answer shown first once, B's once.
    bodies = [body for _, body, _ in server.requests]
    for prompt, ans_a, ans_b in ITEMS:
        firsts = {
            b["messages"][-1]["content"].split("- start]\n")[1].split("\n[Assistant A")[0]
            for b in bodies
            if f"[User question]\n{prompt}\n" in b["messages"][-1]["content"]
        }
        assert firsts == {ans_a, ans_b}, prompt
    assert all(path == "/v1/chat/completions" for _, _, path in server.requests)
    assert all(auth == f"Bearer {SECRET}" for auth, _, _ in server.requests)

    # The 429 and the 500 were retried; malformed replies were counted (MALFORMED: 2 orders x 2 tries,
    # FLAKY: 2 orders x 1) and asked again once, without failing the run.
    counters = summary["judge_counters"]
    assert counters["retries"] == 2 and counters["malformed"] == 6
    assert counters["items_without_verdict"] == 1
    # 10 first asks + 2 retried failures + 4 second asks after a malformed reply.
    assert counters["requests"] == len(server.requests) == 10 + 2 + 4

    # A rerun is served from the cache: no request reaches the server, same result.
    n = len(server.requests)
    assert main(argv) == 0
    second_out = capsys.readouterr()
    assert len(server.requests) == n
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["judge_counters"]["cache_hits"] == 10 and rerun["win_rate"] == summary["win_rate"]

    # The key is nowhere: not in outputs, cache, printed text or logs.
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    printed = first_out.out + first_out.err + second_out.out + second_out.err + caplog.text
    assert SECRET not in printed
    assert "retry 1/5" in caplog.text  # the retries were logged, without the key
    assert summary["judge"]["api_key_env"] == "OPENAI_API_KEY"


def test_llm_judge_wrong_key_is_a_one_line_error_without_the_key(server, tmp_path, monkeypatch, capsys):
    server.fail_plan = []
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-wrong-0000")
    argv = _argv(tmp_path, server, "m", tmp_path / "o")
    assert main([*argv, "--api-key-env", "MY_JUDGE_KEY"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("orpo: error:") and "HTTP 401" in err and "MY_JUDGE_KEY" in err
    assert "sk-wrong-0000" not in err
    assert len(server.requests) < 10  # the queued requests were not sent after the fatal 401
    assert main([*argv, "--api-key-env", "UNSET_VARIABLE_X"]) == 2
    assert "UNSET_VARIABLE_X" in capsys.readouterr().err


def test_custom_template_and_verdict_pattern(tmp_path, monkeypatch):
    """A template file replaces the default (placeholders filled by plain replacement, so braces in
    answers survive) and the last match of a custom pattern is the verdict ('tie' means C)."""
    from orpo.evaluation.judges.llm import LLMJudge, fill

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    template = tmp_path / "t.txt"
    template.write_text(
        "Q: {question}\nRef: {reference}\n1: {answer_a}\n2: {answer_b}\nSay 'Winner: A|B|tie'."
    )
    judge = LLMJudge(
        "http://127.0.0.1:9/v1",
        "m",
        tmp_path / "c",
        template=str(template),
        verdict_pattern=r"Winner: (A|B|tie)",
    )
    assert judge.system is None and judge.settings()["template"] == str(template)
    text = fill(judge.template, "q?", "x = {1: 2}", "y", "ref")
    assert text == "Q: q?\nRef: ref\n1: x = {1: 2}\n2: y\nSay 'Winner: A|B|tie'."
    assert judge._verdict("Winner: A ... on reflection, Winner: tie") == "C"
    assert judge._verdict("Winner: B") == "B" and judge._verdict("no verdict") is None
    with pytest.raises(ValueError, match="needs a group"):
        LLMJudge("http://127.0.0.1:9/v1", "m", tmp_path / "c", verdict_pattern=r"\[\[[ABC]\]\]")


def test_llm_judge_retries_a_request_that_times_out(server, tmp_path, monkeypatch):
    server.fail_plan = []
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps({"id": "0", "prompt": "SLOW q", "completion": "meh"}) + "\n")
    b.write_text(json.dumps({"id": "0", "prompt": "SLOW q", "completion": "GOOD"}) + "\n")
    out = tmp_path / "slow"
    argv = ["judge", str(a), str(b), "--judge", "openai", "--base-url", server.url, "--model", "m"]
    assert main([*argv, "--out", str(out), "--timeout", "0.5", "--concurrency", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wins"] == 1 and summary["judge_counters"]["retries"] == 2  # one timeout per order
