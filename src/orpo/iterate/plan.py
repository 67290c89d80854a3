"""What an ``orpo iterate`` run is: its settings, its arms, its prompts per round and its held-out
prompts, every check that needs no model (so a bad input costs nothing), and the settings record that
a rerun of the same OUT must match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orpo.checkpoints import LOCK_FILE, write_text_atomic
from orpo.evaluation.generate import Prompt, load_prompts

SETTINGS_FILE = "iterate.json"
# Settings a rerun may change without changing what any finished stage holds: more rounds continue the
# run, --until-no-gain only decides when to stop, batch sizes and the server address only how fast (the
# samples already drawn are kept), the folder may move; the recipe file and overrides are compared by
# what they resolve to (``resolved_recipe``), not as written.
RERUN_FREE = ("rounds", "until_no_gain", "batch_size", "server", "out", "recipe", "overrides")
FROM = ("previous", "base")
REPLAY = ("all", "last", "none")
CONTROLS = ("steps", "sft")
# Overrides iterate sets itself each round; the user's would be silently replaced.
OWN_KEYS = {
    "data.train": "iterate trains each round on the pairs it makes (--replay says which rounds' pairs)",
    "training.output_dir": "each round's run goes to OUT/round-N/run",
    "training.resume_from_checkpoint": "a rerun of orpo iterate resumes every stage by itself",
    "training.overwrite_output_dir": "a rerun of orpo iterate resumes every stage by itself",
}


@dataclass(frozen=True)
class IterateSettings:
    """One ``orpo iterate`` invocation (the CLI's flags; see ``orpo iterate --help``).

    Attributes:
        prompts, split: the prompt source and its split the rounds' pairs are made from.
        judge: a pointwise judge spec (``rules:...``, ``reward:...``, ``openai``); scores the samples and
            the held-out answers.
        rounds: rounds of the main arm (each: pairs, training, judged evaluation).
        out: the run's folder.
        recipe, overrides: the training recipe (None: the embedded default) and its key=value overrides.
        max_prompts: prompts per round (None: every training prompt each round); round r takes the
            r-th window of this many, wrapping round the pool.
        samples, temperature, top_p, max_new_tokens, batch_size, chosen, rejected, min_margin,
            pairs_per_prompt, metric:
            as ``orpo pairs``; ``max_new_tokens`` also caps the held-out answers.
        start: 'previous' (round r trains from round r-1's model) or 'base'.
        replay: which rounds' pairs round r trains on: 'all', 'last' (r-1 and r) or 'none' (r only).
        controls: extra arms, 'steps' (round 1's pairs only, as many steps per round as the main arm)
            and 'sft' (the same loop with SFT on the chosen answers: rejection-sampling fine-tuning).
        eval_split, eval_prompts: the held-out prompts (the first N of that split; when it is the
            training split, its last N, kept out of every round).
        until_no_gain: stop once a round's metric is not above the previous round's interval.
        seed: round r samples with seed + r - 1.
        server: sample through this OpenAI-compatible completions endpoint instead.
    """

    prompts: str
    judge: str
    rounds: int
    out: Path
    recipe: str | None = None
    overrides: tuple[str, ...] = ()
    split: str = "train"
    max_prompts: int | None = None
    samples: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 16
    chosen: str = "best-or-reference"
    rejected: str = "worst"
    min_margin: float = 0.0
    pairs_per_prompt: int = 1
    metric: str | None = None
    start: str = "previous"
    replay: str = "all"
    controls: tuple[str, ...] = field(default_factory=tuple)
    eval_split: str = "test"
    eval_prompts: int = 100
    until_no_gain: bool = False
    seed: int = 0
    server: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "controls", tuple(self.controls))
        check_flags(self)

    def record(self) -> dict:
        """The settings as OUT/iterate.json keeps them (paths as strings)."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["overrides"] = list(self.overrides)
        data["controls"] = list(self.controls)
        return data


def check_flags(s: IterateSettings) -> None:
    """The flags' own ranges and choices, one line each."""
    if s.rounds < 1:
        raise ValueError(f"--rounds {s.rounds}: give at least 1 round")
    if s.samples < 2:
        raise ValueError(f"--samples {s.samples}: pairs need at least 2 samples per prompt")
    if s.max_prompts is not None and s.max_prompts < 1:
        raise ValueError(f"--max-prompts {s.max_prompts}: give at least 1 prompt per round")
    if s.eval_prompts < 1:
        raise ValueError(f"--eval-prompts {s.eval_prompts}: give at least 1 held-out prompt")
    if s.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {s.max_new_tokens} must be >= 1")
    if s.start not in FROM:
        raise ValueError(f"--from {s.start}: choose one of {', '.join(FROM)}")
    if s.replay not in REPLAY:
        raise ValueError(f"--replay {s.replay}: choose one of {', '.join(REPLAY)}")
    if s.batch_size < 1:
        raise ValueError(f"--batch-size {s.batch_size} must be >= 1")
    from orpo.evaluation.generate import GenerationSettings
    from orpo.pairs.pairing import PairingSettings

    # The objects make_pairs builds, built now: a bad --temperature, --top-p, --chosen or --min-margin
    # fails before the base is built or judged.
    GenerationSettings(
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        num_samples=s.samples,
        batch_size=s.batch_size,
    )
    PairingSettings(s.chosen, s.rejected, s.min_margin, s.pairs_per_prompt, s.seed)
    unknown = [c for c in s.controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"--control {','.join(unknown)}: choose among {', '.join(CONTROLS)}")
    if len(set(s.controls)) != len(s.controls):
        raise ValueError(f"--control {','.join(s.controls)}: an arm is named twice")


def check_overrides(overrides: tuple[str, ...]) -> None:
    """Refuse an override of what iterate sets each round (data.train, the run folder, resuming)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        full = key if "." in key else f"training.{key}"
        if full in OWN_KEYS:
            raise ValueError(f"{item}: {OWN_KEYS[full]}; leave {key} out")


@dataclass(frozen=True)
class PromptPlan:
    """The training prompts (the pool the rounds' windows come from) and the held-out prompts."""

    pool: list[Prompt]
    held_out: list[Prompt]

    def window(self, round_: int, size: int | None) -> list[Prompt]:
        """Round ``round_``'s prompts: the ``round_``-th window of ``size`` prompts of the pool, wrapping
        round its end (every prompt when ``size`` is None or covers the pool)."""
        n = len(self.pool)
        if size is None or size >= n:
            return list(self.pool)
        start = ((round_ - 1) * size) % n
        return [self.pool[(start + i) % n] for i in range(size)]


def plan_prompts(s: IterateSettings) -> PromptPlan:
    """Load the training and held-out prompts; refuse held-out prompts that a round could train on."""
    pool = load_prompts(s.prompts, split=s.split)
    if s.eval_split == s.split:
        if len(pool) <= s.eval_prompts:
            raise ValueError(
                f"--eval-split {s.eval_split} is the training split and holds {len(pool)} prompts: "
                f"holding out {s.eval_prompts} leaves none to train on; lower --eval-prompts"
            )
        pool, held_out = pool[: -s.eval_prompts], pool[-s.eval_prompts :]
        # A held-out prompt repeated earlier in the split is held out too, not trained on.
        kept = {_key(p) for p in held_out}
        pool = [p for p in pool if _key(p) not in kept]
    else:
        held_out = load_prompts(s.prompts, split=s.eval_split, limit=s.eval_prompts)
    if not held_out:
        raise ValueError(
            f"{s.prompts} (split {s.eval_split}): no held-out prompts; give another --eval-split"
        )
    if not pool:
        raise ValueError(f"{s.prompts} (split {s.split}): no prompts to make pairs from")
    trained = {_key(p): p for p in pool}
    shared = [p for p in held_out if _key(p) in trained]
    if shared:
        raise ValueError(
            f"--eval-split {s.eval_split}: {len(shared)} of its {len(held_out)} prompts are also training "
            f"prompts of --split {s.split} (e.g. id {shared[0].id}); a held-out score needs prompts no round "
            "trains on: pick another --eval-split, or the training split itself (its last --eval-prompts "
            "are then held out)"
        )
    return PromptPlan(pool=pool, held_out=held_out)


def _key(p: Prompt) -> str:
    """A prompt's identity for the overlap check: its full conversation, not its id (ids repeat across
    splits)."""
    return json.dumps([p.text_prompt, p.messages], sort_keys=True)


def check_out_path(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")


def check_out(s: IterateSettings, resolved_recipe: dict | None = None) -> None:
    """Refuse an OUT that is a file, that holds something else, or that was written with other settings
    (naming each change); record the settings (and the recipe as resolved) on a new OUT."""
    out = s.out
    check_out_path(out)
    path = out / SETTINGS_FILE
    others = [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
    if others and not path.is_file():
        raise ValueError(f"--out {out} holds other files and no {SETTINGS_FILE}; give a new or empty folder")
    new = s.record() | {"resolved_recipe": resolved_recipe}
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(
            k for k in old.keys() | new.keys() if k not in RERUN_FREE and old.get(k) != new.get(k)
        )
        if changed:
            diff = ", ".join(_change(k, old.get(k), new.get(k)) for k in changed)
            raise ValueError(
                f"--out {out} was written with other settings ({diff}); rerun with them, or give another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(new, indent=2) + "\n")


def _change(key: str, old, new) -> str:
    """``key: old -> new``; for the recipe, each field that differs."""
    if key == "resolved_recipe" and isinstance(old, dict) and isinstance(new, dict):
        fields = [
            f"{section}.{name}: {(old.get(section) or {}).get(name)} -> {(new.get(section) or {}).get(name)}"
            for section in sorted(old.keys() | new.keys())
            for name in sorted(((old.get(section) or {}) | (new.get(section) or {})).keys())
            if (old.get(section) or {}).get(name) != (new.get(section) or {}).get(name)
        ]
        return "the recipe: " + ", ".join(fields)
    return f"{key}: {old} -> {new}"
