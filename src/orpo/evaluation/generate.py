"""The one generator: prompts rendered exactly as in training, batched, greedy or sampled, resumable.

Flow: ``load_prompts`` (a preference dataset, a prompt file, or a .txt of one prompt per line) ->
``prompt_ids`` (the training path: canonical row -> ``orpo.data.template.render_pair`` ->
``orpo.data.tokenize.PairTokenizer``'s prompt ids, so BOS, the chat template and left truncation at
``max_prompt_length`` are the run's own) -> ``generate_ids`` (left-padded batches sorted by length,
stopping at EOS or the template's end-of-turn token) -> ``generate_file`` (one JSON line per prompt
and sample, appended batch by batch; a rerun skips the (id, sample) pairs already in the file).

Output line (``GenerationRecord``)::

    {"id": "17", "sample": 0, "prompt": "<the user's prompt text>", "completion": "...",
     "reference": "<the chosen response, when the source has one>", "model": "runs/x",
     "settings": {...}, "prompt_tokens": 93, "completion_tokens": 21, "finished": true}

``finished`` is false when the completion ran into ``max_new_tokens`` without an end token.
Sampling: ``torch.manual_seed(seed + b)`` before batch ``b`` (batches of the prompts still to do,
sorted by length), so a sampled file is reproducible for the same prompts, seed and batch size; a
resumed run draws other samples for the rest than an uninterrupted one would (greedy is unaffected).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from orpo.data.template import RenderedPair, render_pair, resolve_chat_template, template_markers
from orpo.data.tokenize import Limits, PairTokenizer

# End-of-turn tokens of common chat templates; generation also stops there (the run's EOS may differ).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
PROMPT_TEXT_FIELDS = ("prompt", "instruction", "question")
REFERENCE_FIELDS = ("reference", "output", "answer", "chosen")


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate. ``temperature`` 0 is greedy; otherwise sampling with ``top_p``."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    num_samples: int = 1
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.num_samples < 1:
            raise ValueError(f"num_samples={self.num_samples} must be >= 1")
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError(
                f"num_samples={self.num_samples} with greedy decoding gives {self.num_samples} identical "
                "completions; set a temperature > 0"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def record(self) -> dict:
        """What is written into every line (batch size only changes speed, and sampled draws)."""
        out = asdict(self)
        out.pop("batch_size")
        return out


@dataclass(frozen=True)
class Prompt:
    """One prompt to complete.

    Attributes:
        id: pairs completions of two models (the source's ``id`` column, else the row number).
        messages: the canonical prompt (``orpo.data.formats``): optional system, then turns ending with user.
        text_prompt: the raw prompt string of string sources (rendered raw when templates are off).
        reference: a reference answer (the chosen response of a preference row), or None.
    """

    id: str
    messages: list[dict]
    text_prompt: str | None = None
    reference: str | None = None

    @property
    def text(self) -> str:
        if self.text_prompt is not None:
            return self.text_prompt
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


# ---- prompts -----------------------------------------------------------------------------------


def _prompt_of_row(row: dict, number: int, label: str) -> tuple[list[dict], str | None, str | None]:
    """(messages, text_prompt, reference) of a prompt-only row."""
    reference = next((row[k] for k in REFERENCE_FIELDS if isinstance(row.get(k), str) and row[k]), None)
    system = row.get("system") if isinstance(row.get("system"), str) and row.get("system") else None
    head = [{"role": "system", "content": system}] if system else []
    for key in ("messages", "conversations", "prompt"):
        value = row.get(key)
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
            messages = [
                {"role": m.get("role") or m.get("from"), "content": m.get("content") or m.get("value")}
                for m in value
            ]
            if messages[-1]["role"] in ("assistant", "gpt"):
                reference = reference or messages[-1]["content"]
                messages = messages[:-1]
            if not messages or messages[-1]["role"] not in ("user", "human"):
                raise ValueError(f"{label} row {number}: `{key}` must end with a user turn")
            return (
                [{**m, "role": "user" if m["role"] == "human" else m["role"]} for m in messages],
                None,
                reference,
            )
    for key in PROMPT_TEXT_FIELDS:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            if key == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
                value = f"{value}\n\n{row['input']}"
            return [*head, {"role": "user", "content": value}], value, reference
    raise ValueError(
        f"{label} row {number}: no prompt; give a `prompt` (text or messages), `instruction`, `question` "
        "or `messages` field"
    )


def load_prompts(source: str, split: str = "train", limit: int | None = None) -> list[Prompt]:
    """Prompts of ``source``: a preference dataset in any supported layout (its chosen response becomes
    the reference), a file of prompts (``prompt``/``instruction``/``question``/``messages`` fields,
    optional ``id`` and ``reference``), or a .txt file with one prompt per line."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1")
    path = Path(source)
    if path.suffix == ".txt":
        if not path.is_file():
            raise ValueError(f"no such file: {source}")
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        prompts = [Prompt(str(i), [{"role": "user", "content": t}], t) for i, t in enumerate(lines)]
        return prompts[:limit]
    from orpo.data.load import load_source

    rows = load_source(source, split=split)
    columns = set(rows.column_names)
    ids = [str(x) for x in rows["id"]] if "id" in columns else None
    if {"chosen", "rejected"} <= columns:
        from orpo.data.normalise import normalise

        result = normalise(rows, source_name=str(source))
        prompts = [
            Prompt(
                id=ids[i] if ids else str(i),
                messages=list(row["prompt"]),
                text_prompt=row.get("text_prompt"),
                reference=row["chosen"],
            )
            for i, row in zip(result.source_index, result.rows)
        ]
    else:
        prompts = []
        for i, row in enumerate(rows):
            messages, text, reference = _prompt_of_row(row, i, str(source))
            prompts.append(Prompt(ids[i] if ids else str(i), messages, text, reference))
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise ValueError(f"{source}: id {p.id!r} appears twice; ids must be unique to pair two models")
        seen.add(p.id)
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return prompts[:limit]


def prompt_ids(
    prompts: list[Prompt],
    tokenizer,
    chat_template_mode: str = "auto",
    limits: Limits | None = None,
    tokenization: str = "orpo",
) -> list[list[int]]:
    """Token ids of each prompt exactly as training builds them (``tokenization`` rules: template,
    BOS, left truncation)."""
    wrap = resolve_chat_template(tokenizer, None, chat_template_mode)
    markers = template_markers(tokenizer) if wrap else ()
    pair_tokenizer = PairTokenizer(tokenizer, limits or Limits(), tokenization)
    out = []
    for p in prompts:
        row = {"prompt": p.messages, "chosen": "", "rejected": "", "text_prompt": p.text_prompt}
        text = render_pair(row, tokenizer, wrap, markers, tokenization).prompt
        out.append(pair_tokenizer(RenderedPair(text, "", "")).prompt_input_ids)
    return out


# ---- generation --------------------------------------------------------------------------------


def stop_ids(tokenizer) -> list[int]:
    """EOS plus the end-of-turn tokens of common templates that this vocabulary has."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN if t in vocab and vocab[t] not in ids]
    return ids


def generate_ids(
    model, tokenizer, prompts: list[list[int]], settings: GenerationSettings, on_batch=None
) -> list[list[tuple[list[int], bool]]]:
    """Completions of tokenised prompts: for each prompt, ``num_samples`` (new ids, finished) pairs.

    New ids end at the first stop token (kept) or at ``max_new_tokens``. ``on_batch(indices, results)``
    is called after each batch with the prompt indices done and their results.
    """
    import torch

    stops = stop_ids(tokenizer)
    pad_id = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[tuple[list[int], bool]]] = [[] for _ in prompts]
    sampling = (
        {"do_sample": False}
        if settings.greedy
        else {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    )
    for b, start in enumerate(range(0, len(order), settings.batch_size)):
        batch = order[start : start + settings.batch_size]
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (b, T), left-padded
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            attention[row, width - len(prompts[i]) :] = 1
        torch.manual_seed(settings.seed + b)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention.to(model.device),
                max_new_tokens=settings.max_new_tokens,
                num_return_sequences=settings.num_samples,
                eos_token_id=stops,
                pad_token_id=pad_id,
                **sampling,
            )  # (b * num_samples, T + new), samples of one prompt adjacent
        new = out[:, width:].tolist()
        for row, i in enumerate(batch):
            for k in range(settings.num_samples):
                ids = new[row * settings.num_samples + k]
                end = next((j for j, t in enumerate(ids) if t in stops), None)
                results[i].append((ids[: end + 1], True) if end is not None else (ids, False))
        if on_batch is not None:
            on_batch(batch, [results[i] for i in batch])
    return results


@dataclass(frozen=True)
class GenerationRecord:
    """One line of a generations file (see the module docstring)."""

    id: str
    sample: int
    prompt: str
    completion: str
    reference: str | None
    model: str
    settings: dict
    prompt_tokens: int
    completion_tokens: int
    finished: bool


def read_generations(path: str | Path) -> list[dict]:
    """The lines of a generations file; ValueError naming the line when one is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number}: not JSON ({err.msg}); fix or delete the line") from err
        for key in ("id", "completion"):
            if key not in record:
                raise ValueError(f"{path} line {number}: no `{key}` field; is this an `orpo generate` file?")
        out.append(record)
    return out


def generate_file(
    loaded, prompts: list[Prompt], settings: GenerationSettings, out: str | Path, progress: bool = False
) -> tuple[int, int]:
    """Generate the prompts not yet in ``out`` (a JSON-lines file) and append them batch by batch.

    ``loaded`` is an ``orpo.run.loading.LoadedModel``. Returns (lines written now, lines kept
    from an earlier run). An existing file written by another model or other settings is refused.
    """
    out = Path(out)
    done: set[tuple[str, int]] = set()
    if out.is_file():
        for record in read_generations(out):
            if record.get("model") != loaded.name or record.get("settings") != settings.record():
                raise ValueError(
                    f"{out} holds generations of {record.get('model')} with settings {record.get('settings')}; "
                    f"this run is {loaded.name} with {settings.record()}: use another --out or delete the file"
                )
            done.add((str(record["id"]), int(record.get("sample", 0))))
    todo = [p for p in prompts if any((p.id, k) not in done for k in range(settings.num_samples))]
    if not todo:
        return 0, len(done)
    ids = prompt_ids(todo, loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="generate", file=sys.stderr, dynamic_ncols=True)
    written = 0

    def write(indices: list[int], results) -> None:
        nonlocal written
        with out.open("a") as fh:
            for i, samples in zip(indices, results):
                for k, (new_ids, finished) in enumerate(samples):
                    if (todo[i].id, k) in done:
                        continue
                    record = GenerationRecord(
                        id=todo[i].id,
                        sample=k,
                        prompt=todo[i].text,
                        completion=loaded.tokenizer.decode(new_ids, skip_special_tokens=True),
                        reference=todo[i].reference,
                        model=loaded.name,
                        settings=settings.record(),
                        prompt_tokens=len(ids[i]),
                        completion_tokens=len(new_ids),
                        finished=finished,
                    )
                    fh.write(json.dumps(asdict(record)) + "\n")
                    written += 1
        if bar is not None:
            bar.update(len(indices))

    generate_ids(loaded.model, loaded.tokenizer, ids, settings, on_batch=write)
    if bar is not None:
        bar.close()
    return written, len(done)
