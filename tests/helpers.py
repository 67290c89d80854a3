"""Plain helpers shared by tests (importable as `helpers`; fixtures live in conftest.py)."""

import functools
import random

# `key=value` overrides that make a recipe a run of seconds on the builtin task: a 1-layer model of
# width 32, 64 training pairs and 16 of the val split, 4 steps of 4 pairs, evaluated at every step.
TINY_RECIPE = [
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.num_kv_heads=1",
    "model.tiny.vocab_size=300",
    'data.train=[{path: "builtin:codereview", limit: 64}]',
    'data.eval=[{path: "builtin:codereview", split: val, limit: 16}]',
    "max_steps=4",
    "eval_steps=1",
    "logging_steps=1",
    "save_strategy=no",
    "per_device_train_batch_size=4",
    "per_device_eval_batch_size=16",
]
WORDS = ["red", "green", "blue", "cat", "dog", "bird", "one", "two", "three", "sun", "moon", "star"]


def toy_rows(n: int = 32, seed: int = 0) -> list[dict]:
    """A learnable preference set: the chosen reply repeats the prompt's last word, the rejected
    one says a different word. Lengths vary so batches are ragged."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(1, 6))
        other = rng.choice([w for w in WORDS if w != words[-1]])
        reps = rng.randint(1, 3)
        rows.append(
            {
                "prompt": "repeat: " + " ".join(words),
                "chosen": " ".join([words[-1]] * reps),
                "rejected": " ".join([other] * rng.randint(1, 3)),
            }
        )
    return rows


# The ORPO eval metrics compared with TRL's (``logits/*`` differ by design: docs/drop-in.md).
ORPO_EVAL_METRICS = [
    "eval_loss",
    "eval_nll_loss",
    "eval_log_odds_ratio",
    "eval_log_odds_chosen",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_logps/chosen",
    "eval_logps/rejected",
]


def tiny_args(tmp_path, **overrides):
    """ORPOConfig for fast CPU tests: fp32, no checkpointing, no saving, no reporting."""
    from orpo import ORPOConfig

    fields = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_length=64,
        disable_tqdm=True,
        seed=0,
    )
    fields.update(overrides)
    return ORPOConfig(**fields)


# Rows whose response merges into the prompt's last word, for a byte-level BPE trained on random
# common English words (``merge_tokenizer``): TRL tokenises prompt + response as is, so a response
# without a leading space joins the prompt's last word into one pre-token. Each row's comment gives
# what the BPE does and the (chosen, rejected) prompt tails that follow (``MERGE_TAILS``).
MERGE_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had "
    "by word but not what all were we when your can said there use an each which she do how their if will "
    "up other about out many then them these so some her would make like him into time has look two more "
    "write go see number no way could people my than first water been call who oil its now find long down "
    "day did get come made may part"
).split()
MERGE_ROWS = [
    # Neither side merges (both responses start with a space).
    {"prompt": "what is the word for no", "chosen": " water", "rejected": " oil"},
    # The chosen side merges: " no" + "the" -> "Ġnot", "he"; its prompt ends one token early, so the
    # rejected sequence keeps "Ġno" as its prompt tail.
    {"prompt": "say it to me: no", "chosen": "the way", "rejected": " up"},
    # The rejected side merges: " to" + "water" -> "Ġt", "ow", ...; the chosen tail is "Ġto".
    {"prompt": "what do we call to", "chosen": " them", "rejected": "water now"},
    # Both sides merge alike (" be" + "the" / "one"): both prompts end one token early, no tails.
    {"prompt": "which one can it be", "chosen": "the oil", "rejected": "one time"},
    # " from" is "Ġf", "r", "o", "m"; " from" + "each" re-splits it as "Ġf", "r", "ome", "ach": TRL's
    # prompt for that side is "Ġf", "r", "ome", the other keeps "Ġf", "r", "o", "m". Both sides get a
    # tail ("ome" against "o", "m"), in both orders.
    {"prompt": "come down from", "chosen": "each word", "rejected": " you"},
    {"prompt": "come down from", "chosen": " you", "rejected": "each word"},
]
MERGE_TAILS = [(0, 0), (0, 1), (1, 0), (0, 0), (1, 2), (2, 1)]


@functools.cache
def merge_tokenizer(with_bos: bool):
    """The byte-level BPE ``MERGE_ROWS`` are built for: trained here on random lines of ``MERGE_WORDS``."""
    from orpo.models.tiny import build_tokenizer

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(MERGE_WORDS) for _ in range(12)) for _ in range(300)]
    return build_tokenizer(corpus, vocab_size=400, with_bos=with_bos)
