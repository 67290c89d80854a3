"""What every judge takes and returns: items answered by both models, and one verdict per item.

A judge compares model A (the baseline) with model B (the candidate) on each ``Item`` and returns a
``Verdict`` whose ``winner`` is "A", "B" or "tie", with the raw material behind it in ``raw`` (both
orders' replies of an LLM judge, the two scores of a rule or reward judge, a human's click).
``pair_items`` builds the items from two ``orpo generate`` files by prompt id (and sample index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orpo._log import notice


@dataclass(frozen=True)
class Item:
    """One prompt with A's and B's completions (and the reference answer when the prompts had one)."""

    id: str
    prompt: str
    a: str
    b: str
    reference: str | None = None


@dataclass
class Verdict:
    """The judge's decision on one item: ``winner`` in {"A", "B", "tie"}; ``raw`` what it rests on."""

    id: str
    winner: str
    raw: dict = field(default_factory=dict)


def _key(record: dict) -> str:
    sample = int(record.get("sample", 0))
    return str(record["id"]) if sample == 0 else f"{record['id']}#{sample}"


def pair_items(
    a_records: list[dict], b_records: list[dict], a_name: str = "A", b_name: str = "B"
) -> list[Item]:
    """Items for the ids (and sample indices) present in both files, in A's order.

    Ids in only one file are left out with a notice; the same id with different prompt texts is an
    error (the files were not generated from the same prompts).
    """
    b_by_key = {_key(r): r for r in b_records}
    items, only_a = [], []
    for ra in a_records:
        key = _key(ra)
        rb = b_by_key.get(key)
        if rb is None:
            only_a.append(key)
            continue
        if ra.get("prompt") != rb.get("prompt"):
            raise ValueError(
                f"id {key}: the prompt in {a_name} differs from the one in {b_name}; generate both files "
                "from the same --prompts"
            )
        items.append(Item(key, ra.get("prompt", ""), ra["completion"], rb["completion"], ra.get("reference")))
    only_b = len(b_by_key) - (len(a_records) - len(only_a))
    if only_a or only_b:
        notice(
            f"{len(only_a)} id(s) only in {a_name}, {only_b} only in {b_name}: judging the {len(items)} shared"
        )
    if not items:
        raise ValueError(f"{a_name} and {b_name} share no prompt id; generate both from the same --prompts")
    return items
