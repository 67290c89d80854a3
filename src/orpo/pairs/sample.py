"""K sampled completions per prompt, written to a resumable samples file in ``orpo generate``'s format.

The prompts are rendered and tokenised by ``orpo.evaluation.generate.prompt_ids`` and completed by its
``generate_ids``, so a sample is what ``orpo generate --temperature T --num-samples K`` would write, line
for line (``GenerationRecord``). One difference in the loop around it, for exact resumption: batches
are formed over *all* prompts (sorted by length, as the generator sorts them) and batch ``b`` is always
seeded ``seed + b``. ``orpo generate`` numbers the batches of the prompts still to do, so a resumed
file draws other samples than an uninterrupted one; here a killed run, rerun, regenerates only the
batches it had not written and ends with the same file as a run that was never killed. Uninterrupted,
both give the same samples.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from orpo.evaluation.generate import (
    GenerationRecord,
    GenerationSettings,
    Prompt,
    generate_ids,
    prompt_ids,
    read_generations,
)


def read_samples(path: Path, model: str, settings: dict) -> dict[tuple[str, int], dict]:
    """(id, sample) -> record of a samples file; another model's or other settings' file is refused
    (``settings``: what every line records)."""
    done: dict[tuple[str, int], dict] = {}
    if not path.is_file():
        return done
    for record in read_generations(path):
        if record.get("model") != model or record.get("settings") != settings:
            raise ValueError(
                f"{path} holds samples of {record.get('model')} with settings {record.get('settings')}; "
                f"this run is {model} with {settings}: use another --out or delete the file"
            )
        done[(str(record["id"]), int(record.get("sample", 0)))] = record
    return done


def _drop_partial_line(path: Path) -> None:
    """Cut a last line without its newline (the process was killed while writing it): its samples are
    drawn again, the same ones (each batch is seeded by its place in the list)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(keep)
    from orpo._log import notice

    notice(f"{path}: dropped a cut last line (a killed run); its batch is sampled again")


def sample_file(
    loaded, prompts: list[Prompt], settings: GenerationSettings, path: str | Path, progress: bool = False
) -> tuple[list[dict], int, int]:
    """Complete every prompt ``settings.num_samples`` times into ``path`` (JSON lines, appended batch by
    batch), skipping the batches already there.

    ``loaded`` is an ``orpo.run.loading.LoadedModel``. Returns (records in prompt and sample order,
    lines written now, lines kept from an earlier run).
    """
    path = Path(path)
    _drop_partial_line(path)
    done = read_samples(path, loaded.name, settings.record())
    kept = len(done)
    k_all = range(settings.num_samples)
    ids = prompt_ids(prompts, loaded.tokenizer, loaded.chat_template_mode, loaded.limits, loaded.tokenization)
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))  # the generator's own order
    batches = [order[s : s + settings.batch_size] for s in range(0, len(order), settings.batch_size)]
    todo = [
        (b, batch)
        for b, batch in enumerate(batches)
        if any((prompts[i].id, k) not in done for i in batch for k in k_all)
    ]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(len(batch) for _, batch in todo), desc="sample", file=sys.stderr, dynamic_ncols=True
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    for b, batch in todo:
        # One batch per call, seeded as the generator seeds batch b of the whole list.
        one_batch = replace(settings, seed=settings.seed + b, batch_size=len(batch))
        results = generate_ids(loaded.model, loaded.tokenizer, [ids[i] for i in batch], one_batch)
        lines = []
        for i, samples in zip(batch, results):
            p = prompts[i]
            for k, (new_ids, finished) in enumerate(samples):
                if (p.id, k) in done:
                    continue
                record = asdict(
                    GenerationRecord(
                        id=p.id,
                        sample=k,
                        prompt=p.text,
                        completion=loaded.tokenizer.decode(new_ids, skip_special_tokens=True),
                        reference=p.reference,
                        model=loaded.name,
                        settings=settings.record(),
                        prompt_tokens=len(ids[i]),
                        completion_tokens=len(new_ids),
                        finished=finished,
                    )
                )
                lines.append(json.dumps(record) + "\n")
                done[(p.id, k)] = record
                written += 1
        with path.open("a") as fh:  # the batch in one write: a kill leaves whole batches, or a cut last line
            fh.write("".join(lines))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return [done[(p.id, k)] for p in prompts for k in k_all], written, kept
