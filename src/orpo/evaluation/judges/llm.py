"""``openai`` judge: an LLM over any OpenAI-compatible chat-completions endpoint, asked in both orders.

Protocol (MT-Bench's pairwise judge, Zheng et al. 2023, arXiv:2306.05685): each item is sent twice,
once with A's answer shown first and once with B's first, to cancel position bias. Each reply ends
with a verdict, ``[[A]]`` (the first answer shown is better), ``[[B]]`` (the second) or ``[[C]]``
(tie); the last match of ``verdict_pattern`` counts. A model wins the item only when both orders
name it; any disagreement, tie or missing verdict is a tie.

Robustness: at most ``concurrency`` requests in flight; HTTP 429, 5xx, 408, timeouts and connection
errors are retried ``max_retries`` times with exponential backoff (``Retry-After`` honoured); a reply
without a verdict is counted as malformed and asked once more, then left as "no verdict" (never
fatal). Every final reply is cached on disk under a hash of the request (endpoint + body), so a
rerun sends nothing and a killed run resumes where it stopped. The API key is read from the
environment and sent only in the Authorization header: it is never logged, cached or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orpo.evaluation.judges.base import Item, Verdict

logger = logging.getLogger("orpo")

DEFAULT_PATTERN = r"\[\[(A|B|C)\]\]"
DEFAULT_SYSTEM = (
    "You are an impartial judge comparing two AI assistants' answers to the same user question. "
    "Decide which answer serves the user better: consider correctness, helpfulness, relevance, depth and "
    "clarity. The order in which the answers are shown, their length and the assistants' names must not "
    "sway you. Compare them briefly, then give your verdict on the last line, exactly one of: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, "[[C]]" for a tie.'
)
DEFAULT_TEMPLATE = (
    "[User question]\n{question}\n\n"
    "[Assistant A's answer - start]\n{answer_a}\n[Assistant A's answer - end]\n\n"
    "[Assistant B's answer - start]\n{answer_b}\n[Assistant B's answer - end]"
)
RETRY_STATUS = {408, 429}  # plus every 5xx
MAX_BACKOFF_SECONDS = 60.0


class JudgeRequestError(ValueError):
    """A request that cannot succeed (bad key, unknown model, retries exhausted): stops the run."""


def substitute(template: str, values: dict[str, str]) -> str:
    """``{name}`` placeholders replaced by plain replacement (answers may contain braces)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def fill(template: str, question: str, first: str, second: str, reference: str | None) -> str:
    """The pairwise template with its placeholders replaced."""
    values = {"question": question, "answer_a": first, "answer_b": second, "reference": reference or ""}
    return substitute(template, values)


def read_template(template: str | None, default: str, system: str) -> tuple[str, str | None]:
    """(user template, system message): a --template file is the whole prompt (no system message)."""
    if not template:
        return default, system
    path = Path(template)
    if not path.is_file():
        raise ValueError(f"--template {template}: no such file")
    return path.read_text(), None


def compile_pattern(text: str, option: str, captures: str) -> re.Pattern:
    """The regex of ``option``; its group 1 must capture ``captures``."""
    try:
        pattern = re.compile(text)
    except re.error as err:
        raise ValueError(f"{option} {text!r} is not a regex: {err}") from err
    if pattern.groups < 1:
        raise ValueError(f"{option} {text!r} needs a group capturing {captures}")
    return pattern


def last_capture(pattern: re.Pattern, reply: str) -> str | None:
    """Group 1 of the last match of ``pattern`` in ``reply`` (the verdict comes last), or None."""
    matches = pattern.findall(reply)
    if not matches:
        return None
    return matches[-1][0] if isinstance(matches[-1], tuple) else matches[-1]


class LLMJudge:
    """Pairwise LLM judge over ``base_url``/chat/completions (see the module docstring)."""

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | Path,
        api_key_env: str | None = None,
        template: str | None = None,
        verdict_pattern: str | None = None,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 120.0,
        max_tokens: int = 1024,
        backoff_seconds: float = 1.0,
    ):
        if not base_url or not model:
            raise ValueError("--judge openai needs --base-url (e.g. http://localhost:8000/v1) and --model")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"--concurrency {concurrency} must be >= 1 and --max-retries {max_retries} >= 0")
        self.endpoint = base_url.rstrip("/") + "/chat/completions"
        self.base_url, self.model = base_url, model
        self.key_env = api_key_env or "OPENAI_API_KEY"
        self._key = os.environ.get(self.key_env)
        if api_key_env and not self._key:
            raise ValueError(f"--api-key-env {api_key_env}: that environment variable is not set")
        if not self._key:
            logger.warning("orpo: %s is not set; sending requests without an API key", self.key_env)
        self.template_name = template or "default"
        self.template, self.system = read_template(template, DEFAULT_TEMPLATE, DEFAULT_SYSTEM)
        self.pattern_text = verdict_pattern or DEFAULT_PATTERN
        self.pattern = compile_pattern(self.pattern_text, "--verdict-pattern", "A, B or C")
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.concurrency, self.max_retries = concurrency, max_retries
        self.timeout, self.max_tokens, self.backoff = timeout, max_tokens, backoff_seconds
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_args(cls, args) -> LLMJudge:
        return cls(
            base_url=args.base_url,
            model=args.model,
            cache_dir=args.cache_dir or Path(args.out) / "cache",
            api_key_env=args.api_key_env,
            template=args.template,
            verdict_pattern=args.verdict_pattern,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
            timeout=args.timeout,
            max_tokens=args.max_tokens,
        )

    def settings(self) -> dict:
        return {
            "kind": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.key_env,
            "template": self.template_name,
            "verdict_pattern": self.pattern_text,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "orders": "both; a win only when both orders agree, else tie",
        }

    # ---- one request ----

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _post(self, body: dict) -> str:
        """The reply text of one request, retrying transient failures; JudgeRequestError otherwise."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            wait = None
            try:
                request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read().decode("utf-8", "replace")
                try:
                    return json.loads(payload)["choices"][0]["message"]["content"] or ""
                except (ValueError, KeyError, IndexError, TypeError):
                    return ""  # a 200 that is not a chat completion: malformed, handled by the caller
            except urllib.error.HTTPError as err:
                detail = self._scrub(err.read().decode("utf-8", "replace")[:200])
                if err.code not in RETRY_STATUS and err.code < 500:
                    raise JudgeRequestError(
                        f"{self.endpoint} answered HTTP {err.code}: {detail!r}; check --base-url, --model and "
                        f"the key in {self.key_env}"
                    ) from None
                last = f"HTTP {err.code}"
                retry_after = err.headers.get("Retry-After") if err.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = float(retry_after)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last = self._scrub(str(getattr(err, "reason", err)))
            if attempt == self.max_retries:
                break
            delay = min(wait if wait is not None else self.backoff * 2**attempt, MAX_BACKOFF_SECONDS)
            delay *= 1 + 0.25 * random.random()
            logger.warning(
                "orpo: %s: %s; retry %d/%d in %.1f s",
                self.endpoint,
                last,
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        raise JudgeRequestError(
            f"{self.endpoint}: gave up after {self.max_retries} retries (last: {last}); replies so far are "
            f"cached in {self.cache_dir}, rerun to resume"
        )

    def _verdict(self, reply: str) -> str | None:
        last = last_capture(self.pattern, reply)
        return None if last is None else {"A": "A", "B": "B", "C": "C", "TIE": "C"}.get(last.strip().upper())

    def ask(self, question: str, first: str, second: str, reference: str | None) -> dict:
        """{reply, verdict ('A' first shown better, 'B' second, 'C' tie, None none), cached}."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": fill(self.template, question, first, second, reference)}
        ]
        out = self.request(messages, self._verdict)
        return {"reply": out["reply"], "verdict": out["value"], "cached": out["cached"]}

    def request(self, messages: list[dict], parse) -> dict:
        """{reply, value, cached} of one chat request, through the cache; ``parse(reply)`` gives the
        value or None, and a reply it cannot parse is counted as malformed and asked once more."""
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": self.max_tokens}
        key = hashlib.sha256(
            json.dumps({"url": self.endpoint, "body": body}, sort_keys=True).encode()
        ).hexdigest()
        path = self.cache_dir / f"{key}.json"
        if path.is_file():
            self._count("cache_hits")
            reply = json.loads(path.read_text())["reply"]
            return {"reply": reply, "value": parse(reply), "cached": True}
        reply = self._post(body)
        value = parse(reply)
        if value is None:
            self._count("malformed")
            reply = self._post(body)  # asked once more
            value = parse(reply)
            if value is None:
                self._count("malformed")
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_text(json.dumps({"reply": reply}))
        os.replace(tmp, path)
        return {"reply": reply, "value": value, "cached": False}

    # ---- items ----

    def judge(self, items: list[Item]) -> list[Verdict]:
        """Both orders of every item, ``concurrency`` requests at a time; MT-Bench's agreement rule."""
        tasks = [(item, order) for item in items for order in ("AB", "BA")]

        def run(task):
            item, order = task
            first, second = (item.a, item.b) if order == "AB" else (item.b, item.a)
            return self.ask(item.prompt, first, second, item.reference)

        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        futures = [pool.submit(run, task) for task in tasks]
        try:
            replies = [f.result() for f in futures]
        finally:
            # On a fatal error (bad key, retries exhausted) do not send what is still queued; replies
            # already received are cached, so a rerun resumes.
            pool.shutdown(wait=True, cancel_futures=True)
        verdicts = []
        for i, item in enumerate(items):
            ab, ba = replies[2 * i], replies[2 * i + 1]
            # In order BA the first answer shown is B's: map each letter back to a model.
            pick_ab = {"A": "A", "B": "B", "C": "tie"}.get(ab["verdict"])
            pick_ba = {"A": "B", "B": "A", "C": "tie"}.get(ba["verdict"])
            winner = pick_ab if pick_ab == pick_ba and pick_ab in ("A", "B") else "tie"
            if ab["verdict"] is None or ba["verdict"] is None:
                self._count("items_without_verdict")
            raw = {
                "order_ab": {"verdict": ab["verdict"], "model": pick_ab, "reply": ab["reply"]},
                "order_ba": {"verdict": ba["verdict"], "model": pick_ba, "reply": ba["reply"]},
            }
            verdicts.append(Verdict(item.id, winner, raw))
        return verdicts
