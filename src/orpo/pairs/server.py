"""Sampling from an OpenAI-compatible completions endpoint that already serves the model (``--server``).

``vllm serve RUN`` or llama.cpp's server on the GGUF from ``orpo export`` sample thousands of prompts in
minutes where in-process generation takes hours. The prompts are rendered and tokenised here exactly
as training renders them (``orpo.evaluation.generate.prompt_ids``, with the run's tokenizer and
settings; no weights are loaded) and sent as token ids, so the server adds no BOS or template of its
own. One request per sample: ``{model, prompt: ids, max_tokens, temperature, top_p, seed}`` to
``URL/completions``, where ``seed`` is derived from (--seed, prompt id, sample index), so a sample does
not depend on which others are drawn with it and a killed run, rerun, draws only what is missing.

The lines are ``orpo generate``'s format with ``"backend": "server"`` added to their settings, so a
samples file is never resumed with the other backend's draws.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from orpo.evaluation.generate import GenerationRecord, GenerationSettings, Prompt, prompt_ids
from orpo.pairs.sample import read_samples

RETRY_STATUS = {408, 429}  # plus every 5xx


@dataclass(frozen=True)
class Server:
    """Where and how to ask: ``url`` is the API base (``http://127.0.0.1:8000/v1``), ``model`` the name
    the server knows the model by, ``api_key_env`` an environment variable holding a key (optional)."""

    url: str
    model: str
    api_key_env: str | None = None
    concurrency: int = 8
    max_retries: int = 3
    timeout: float = 300.0
    backoff_seconds: float = 0.5

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--server {self.url}: give the API base URL, e.g. http://127.0.0.1:8000/v1")
        if self.concurrency < 1:
            raise ValueError(f"--server-concurrency {self.concurrency} must be >= 1")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"--server-api-key-env {self.api_key_env}: that environment variable is not set")

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/completions"

    def post(self, body: dict) -> dict:
        """The JSON reply of one request; transient failures retried, others a one-line ValueError."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data, last = json.dumps(body).encode(), ""
        for attempt in range(self.max_retries + 1):
            try:
                request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8", "replace"))
            except urllib.error.HTTPError as err:
                detail = _error_text(err.read().decode("utf-8", "replace"))
                if key:
                    detail = detail.replace(key, "***")
                if "prompt" in detail and "string" in detail:
                    # A server that validates the prompt as text (llama-cpp-python's), not an outage.
                    raise ValueError(
                        f"{self.endpoint} does not take token ids as the prompt (HTTP {err.code}: "
                        f"{detail!r}); orpo pairs sends prompts tokenised as training saw them: use a "
                        "server that accepts token ids (vLLM, llama.cpp's llama-server) or sample here "
                        "without --server"
                    ) from None
                if err.code not in RETRY_STATUS and err.code < 500:
                    raise ValueError(
                        f"{self.endpoint} answered HTTP {err.code}: {detail!r}; check --server and "
                        "--server-model"
                    ) from None
                last = f"HTTP {err.code}: {detail!r}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = str(getattr(err, "reason", err))
            except json.JSONDecodeError:
                raise ValueError(f"{self.endpoint} answered with something that is not JSON") from None
            if attempt < self.max_retries:
                time.sleep(self.backoff_seconds * 2**attempt)
        raise ValueError(
            f"{self.endpoint}: no answer after {self.max_retries} retries (last: {last}); is the server up? "
            "The samples so far are kept: rerun to resume"
        )


def _error_text(body: str, limit: int = 240) -> str:
    """A server's error reply on one line: its ``error.message`` when it is JSON (whitespace collapsed,
    cut at ``limit``), else the start of the body."""
    try:
        reply = json.loads(body)
        error = reply.get("error", reply) if isinstance(reply, dict) else reply
        text = error.get("message", body) if isinstance(error, dict) else str(error)
    except (json.JSONDecodeError, AttributeError):
        text = body
    return " ".join(str(text).split())[:limit]


def sample_seed(seed: int, prompt_id: str, sample: int) -> int:
    """A per-sample seed that depends on nothing else (31 bits: servers take a signed int)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}:{sample}".encode()).digest()[:4], "big") >> 1


def server_sample_file(
    loaded,
    prompts: list[Prompt],
    settings: GenerationSettings,
    path: str | Path,
    server: Server,
    progress: bool = False,
) -> tuple[list[dict], int, int]:
    """As ``sample.sample_file``, from ``server``; ``loaded`` needs only its tokenizer and rendering
    settings (``open_model(..., weights=False)``). Prompts go in chunks of ``settings.batch_size``,
    written in prompt order when a chunk is done."""
    path = Path(path)
    record_settings = {**settings.record(), "backend": "server"}
    done = read_samples(path, loaded.name, record_settings)
    kept = len(done)
    k_all = range(settings.num_samples)
    todo = [p for p in prompts if any((p.id, k) not in done for k in k_all)]
    ids = prompt_ids(todo, loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="sample", file=sys.stderr, dynamic_ncols=True)

    def ask(i: int, k: int) -> dict:
        body = {
            "model": server.model,
            "prompt": ids[i],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": sample_seed(settings.seed, todo[i].id, k),
        }
        reply = server.post(body)
        try:
            choice = reply["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"{server.endpoint} answered without choices[0].text: {str(reply)[:200]!r}"
            ) from None
        tokens = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        return asdict(
            GenerationRecord(
                id=todo[i].id,
                sample=k,
                prompt=todo[i].text,
                completion=text,
                reference=todo[i].reference,
                model=loaded.name,
                settings=record_settings,
                prompt_tokens=len(ids[i]),
                completion_tokens=tokens,
                finished=choice.get("finish_reason") != "length",
            )
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    pool = ThreadPoolExecutor(max_workers=server.concurrency)
    try:
        for start in range(0, len(todo), settings.batch_size):
            chunk = range(start, min(start + settings.batch_size, len(todo)))
            jobs = [(i, k) for i in chunk for k in k_all if (todo[i].id, k) not in done]
            records = list(pool.map(lambda job: ask(*job), jobs))
            with path.open("a") as fh:
                for record in records:
                    fh.write(json.dumps(record) + "\n")
                    done[(record["id"], record["sample"])] = record
            written += len(records)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return [done[(p.id, k)] for p in prompts for k in k_all], written, kept
