"""Datasets that ship with the package, addressed as ``builtin:NAME`` in configs and on the CLI.

- ``builtin:codereview``: the code-review preference task of the demo (``orpo.tasks.codereview.generator``):
  1,800 training pairs as in the case study, 100 validation (`val`), 200 test; splits share no snippet.
"""

from __future__ import annotations

PREFIX = "builtin:"
CODEREVIEW_SIZES = {"train": 1800, "val": 100, "test": 200}
CODEREVIEW_SEED = 0


def is_builtin(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def load_builtin(source: str, split: str = "train") -> list[dict]:
    """Rows of a builtin dataset split (prompt / chosen / rejected strings)."""
    name = source[len(PREFIX) :]
    if name != "codereview":
        raise ValueError(f"unknown builtin dataset {source!r}; available: builtin:codereview")
    if split not in CODEREVIEW_SIZES:
        raise ValueError(f"builtin:codereview has splits {sorted(CODEREVIEW_SIZES)}, not {split!r}")
    from orpo.tasks.codereview.generator import make_splits, to_rows

    splits = make_splits(
        CODEREVIEW_SIZES["train"], CODEREVIEW_SIZES["val"], CODEREVIEW_SIZES["test"], seed=CODEREVIEW_SEED
    )
    return to_rows(splits[split])
