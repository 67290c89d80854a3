"""A scripted HTTP server on 127.0.0.1 for the `orpo pairs` tests: the LLM judge's chat endpoint and
the completions endpoint of ``--server``, each answered by a function of the request body."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class ScriptedServer:
    """Answers every POST with ``respond(body) -> JSON payload`` (or ``(status, payload)``); records
    (path, headers, body)."""

    def __init__(self, respond):
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, dict(self.headers), body))
                reply = respond(body)
                status, reply = reply if isinstance(reply, tuple) else (200, reply)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted_server():
    """``scripted_server(respond)`` starts one; all are closed after the test."""
    started = []

    def start(respond):
        started.append(ScriptedServer(respond))
        return started[-1]

    yield start
    for s in started:
        s.close()
