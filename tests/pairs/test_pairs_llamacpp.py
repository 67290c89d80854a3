"""`orpo pairs --server` against llama.cpp's own server on the GGUF that `orpo export` wrote: the samples
equal the ones sampled here from the run (near-greedy, so both are the argmax path).

Needs llama.cpp's `llama-server` binary on PATH (or its path in $ORPO_LLAMA_SERVER; building it from
llama.cpp's sources takes about 15 minutes on 2 cores, so CI does not); skipped with that reason
otherwise. The request format, seeds and resumption are tested against a scripted server in
test_pairs_cli.py.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from orpo.cli.main import main
from orpo.data.builtin import load_builtin

SERVER = os.environ.get("ORPO_LLAMA_SERVER") or shutil.which("llama-server")
pytestmark = [
    pytest.mark.slow,  # the slow tier (docs/development.md)
    pytest.mark.skipif(
        not SERVER, reason="llama.cpp's llama-server is not on PATH (nor in $ORPO_LLAMA_SERVER)"
    ),
]

CODE = "builtin:codereview"
TINY_YAML = """
model: {{name: "tiny:llama", tiny: {{hidden_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2, vocab_size: 400}}}}
adapter: null
data: {{train: {data}, eval_fraction: 0.0}}
training: {{output_dir: {out}, max_steps: 20, per_device_train_batch_size: 8, learning_rate: 3.0e-3,
           gradient_checkpointing: false, bf16: false, report_to: none, save_strategy: "no", logging_steps: 5}}
"""
ARGS = [
    "--split",
    "test",
    "--limit",
    "4",
    "--samples",
    "2",
    "--temperature",
    "1e-6",
    "--max-new-tokens",
    "12",
]
ARGS += ["--batch-size", "4", "--judge", "rules:codereview", "--chosen", "best-or-reference", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny run trained briefly on the task, exported as f32 GGUF and served by llama-server."""
    folder = tmp_path_factory.mktemp("llamacpp")
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in load_builtin(CODE, "val")))
    (folder / "run.yaml").write_text(TINY_YAML.format(data=data, out=folder / "run"))
    assert main(["train", str(folder / "run.yaml"), "--no-progress"]) == 0
    gguf = folder / "run.gguf"
    assert (
        main(["export", str(folder / "run"), "--format", "gguf", "--dtype", "f32", "--out", str(gguf)]) == 0
    )
    port = _free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [SERVER, "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "1024", "-t", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"llama-server did not come up: {(folder / 'server.log').read_text()[-2000:]}")
        yield folder / "run", url + "/v1", folder
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _samples(path):
    return {(s["id"], s["sample"]): s["completion"] for s in map(json.loads, path.read_text().splitlines())}


def test_llama_server_samples_equal_the_runs_own(served):
    run, url, folder = served
    here, there = folder / "here.jsonl", folder / "there.jsonl"
    assert main(["pairs", str(run), "--prompts", CODE, "--out", str(here), *ARGS]) == 0
    argv = ["pairs", str(run), "--prompts", CODE, "--out", str(there), *ARGS, "--server", url]
    assert main([*argv, "--server-model", "run"]) == 0
    local, remote = (
        _samples(here.with_suffix(".samples.jsonl")),
        _samples(there.with_suffix(".samples.jsonl")),
    )
    assert len(local) == 8 and local.keys() == remote.keys()
    assert any(text.strip() for text in local.values())  # the run writes something, not only EOS
    assert remote == local
