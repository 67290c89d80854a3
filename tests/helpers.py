"""Plain helpers shared by tests (importable as `helpers`; fixtures live in conftest.py)."""

import random

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
