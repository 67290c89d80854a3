"""Whole datasets to canonical pairs: every row's layout detected, every row normalised in its own.

``normalise`` runs the row parsers of ``orpo.data.formats`` as ``Dataset.map``/``filter`` (cached by
fingerprint, ``num_proc`` parallel) and returns the kept rows with the counts of what was dropped and
why; ``as_dataset`` builds a ``Dataset`` from a list of dicts without losing rows to Arrow's typing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, Features, Value

from orpo.data import formats
from orpo.data.formats import (
    _STRING_FEATURES,
    CANONICAL_FEATURES,
    DROP_REASONS,
    FORMATS,
    MAX_REPORTED_ROWS,
    MIXED,
    UNPAIRED,
    UNPAIRED_FIELDS,
    BadValue,
    ColumnMap,
    Drop,
    NormaliseResult,
    _Fields,
    _label,
    _show,
    detect_layouts,
    normalise_row,
)

DETECTION_BATCH = 1000  # rows read at a time when every row's layout is detected

# The map also writes why a row is dropped and a hash of the pair; both columns are removed again.
_WORK_FEATURES = Features(
    {**CANONICAL_FEATURES, "_drop": Value("string"), "_detail": Value("string"), "_key": Value("string")}
)

# datasets fingerprints a library function by its import path, not its code, so a cached map would
# survive a change to the parsers; passing a hash of the parsers' and this file to the map invalidates it.
_CODE_HASH = hashlib.blake2b(
    Path(formats.__file__).read_bytes() + Path(__file__).read_bytes(), digest_size=8
).hexdigest()


def as_dataset(rows: Dataset | list[dict], source_name: str = "<data>") -> Dataset:
    """A ``Dataset`` from a list of dicts (a ``Dataset`` passes through).

    Keys missing from some rows become null. A column whose values Arrow cannot hold in one type (a
    number among strings) is stored as JSON, so normalisation can drop those rows with a reason
    instead of the whole load failing. (``Dataset.from_list`` would instead keep only the first row's
    keys, and ``on_mixed_types`` would turn a string such as "42" into a number.)
    """
    if isinstance(rows, Dataset):
        return rows
    if not isinstance(rows, list):
        raise ValueError(f"`{source_name}`: expected a Dataset or a list of dicts, got {type(rows).__name__}")
    names: dict[str, None] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"`{source_name}` row {i}: expected a dict, got {_show(row)}")
        names.update(dict.fromkeys(row))
    arrays = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            encoded = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            arrays[name] = pa.array(encoded, type=pa.json_())
    return Dataset(pa.table(arrays))


def _normalise_example(
    row: dict, index: int, layouts: str | list[str], names: dict[str, str], code_hash: str, source_name: str
) -> dict:
    """``Dataset.map`` body: canonical columns plus the drop reason/detail and a pair hash.

    ``layouts`` is the layout of every row, or one name when all rows share it. ``code_hash`` is
    unused here; it is in the map's fingerprint (see ``_CODE_HASH``).
    """
    fmt = layouts if isinstance(layouts, str) else layouts[index]
    try:
        result = normalise_row(row, fmt, ColumnMap(**names))
    except BadValue as err:
        raise ValueError(f"`{source_name}` row {index}: {err}") from None
    if isinstance(result, Drop):
        empty: dict = {
            "prompt": [],
            "chosen": "",
            "rejected": "",
            "text_prompt": None,
            "layout": fmt,
            "label": None,
        }
        return {**empty, "_drop": result.reason, "_detail": result.detail, "_key": ""}
    text = json.dumps(
        [result["prompt"], result["chosen"], result["rejected"], result["text_prompt"]], ensure_ascii=False
    )
    key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return {**result, "_drop": "", "_detail": "", "_key": key}


def _row_layouts(ds: Dataset, names: dict[str, str], source_name: str) -> list[str]:
    """``detect_layouts`` over every row of ``ds``, reading only the columns the choice rests on."""
    visible = [*ds.column_names, *names]
    # A completion tells an unpaired row from a pair only in a file with the columns of both.
    keys = ("prompt", "chosen", *(("completion",) if UNPAIRED_FIELDS <= set(visible) else ()))
    wanted = [names.get(key, key) for key in keys if names.get(key, key) in ds.column_names]
    if (
        "prompt" in visible
        and "completion" not in keys
        and all(ds.features[c] in _STRING_FEATURES for c in wanted)
    ):
        # String columns: every row with both values is prompt strings and a row with a null is of no
        # layout (so it takes that one too); no need to read a million rows to learn it.
        return detect_layouts(visible, [{"prompt": "", "chosen": ""}], source_name) * len(ds)
    if not wanted:
        # No column the choice reads: every row looks the same (and datasets cannot iterate a split
        # dataset through zero columns).
        return detect_layouts(visible, [{"prompt": None, "chosen": None}], source_name) * len(ds)
    columns = ds.select_columns(wanted)
    rows = (
        {key: row.get(names.get(key, key)) for key in keys}
        for batch in columns.iter(batch_size=DETECTION_BATCH)
        for row in (dict(zip(batch, values)) for values in zip(*batch.values()))
    )
    return detect_layouts(visible, rows, source_name)


def check_layouts(
    dataset_or_rows: Dataset | list[dict],
    columns: ColumnMap | dict[str, str] | None = None,
    fmt: str | None = None,
    source_name: str = "<data>",
) -> dict[str, int]:
    """Layout -> rows of a source, without normalising it: the one-line ValueError of ``normalise`` for
    a source of no known layout, an unknown ``fmt`` or a mapped column that does not exist, early (before
    a model is built) and naming the source."""
    ds = as_dataset(dataset_or_rows, source_name)
    names = _column_names(ds, columns, source_name)
    if len(ds) == 0:
        raise ValueError(f"`{source_name}`: the source has no rows")
    fmt, layouts, per_row = _layouts(ds, names, fmt, source_name)
    if UNPAIRED in layouts:
        _check_labels(ds, names, per_row, source_name)
    return layouts


def _check_labels(ds: Dataset, names: dict[str, str], per_row: list[str] | None, source_name: str) -> None:
    """The first unpaired row whose label is not a bool, as ``normalise`` refuses it (``BadValue``)."""
    column = names.get("label", "label")
    labels = ds[column] if column in ds.column_names else [None] * len(ds)
    for index, label in enumerate(labels):
        if per_row is not None and per_row[index] != UNPAIRED:
            continue
        try:
            _label(_Fields({column: label}, names))
        except BadValue as err:
            raise ValueError(f"`{source_name}` row {index}: {err}") from None


def _keep_batch(reasons: list[str]) -> list[bool]:
    return [not reason for reason in reasons]


def normalise(
    dataset_or_rows: Dataset | list[dict],
    columns: ColumnMap | dict[str, str] | None = None,
    fmt: str | None = None,
    source_name: str = "<data>",
    num_proc: int | None = None,
) -> NormaliseResult:
    """Detect the layout (unless ``fmt`` is given) and turn every row into a canonical pair.

    Runs as ``Dataset.map``/``filter`` so results are cached by fingerprint and ``num_proc`` parallelises.
    Raises ValueError when the layout is unknown, a mapped column does not exist, or no row is usable.
    """
    ds = as_dataset(dataset_or_rows, source_name)
    names = _column_names(ds, columns, source_name)
    if len(ds) == 0:
        raise ValueError(f"`{source_name}`: the source has no rows")
    fmt, layouts, per_row = _layouts(ds, names, fmt, source_name)
    mapped = ds.map(
        _normalise_example,
        with_indices=True,
        fn_kwargs={
            "layouts": per_row if fmt == MIXED else fmt,
            "names": names,
            "code_hash": _CODE_HASH,
            "source_name": source_name,
        },
        remove_columns=ds.column_names,
        features=_WORK_FEATURES,
        num_proc=num_proc,
        desc=f"Normalising {source_name}",
    )
    # map keeps order and length, so a position in `mapped` is the source row number.
    reasons = mapped.with_format("arrow")["_drop"].to_pylist()
    dropped, first_dropped, examples = _drops(mapped, reasons)
    source_index = [i for i, reason in enumerate(reasons) if not reason]
    if not source_index:
        counts = ", ".join(f"{r}={n}" for r, n in dropped.items())
        first = f"; first: {examples[reasons[0]]}" if reasons else ""
        raise ValueError(
            f"`{source_name}`: no usable rows ({len(reasons)} dropped: {counts}){first}; "
            "fix or remove those rows, or map the columns with `columns:`"
        )
    kept = mapped
    if dropped:
        kept = mapped.filter(_keep_batch, input_columns="_drop", batched=True, num_proc=num_proc)
    keys = mapped.with_format("arrow")["_key"].to_pylist()
    duplicates = len(source_index) - len({keys[i] for i in source_index})
    return NormaliseResult(
        rows=kept.remove_columns(["_drop", "_detail", "_key"]),
        format=fmt,
        total=len(reasons),
        kept=len(source_index),
        dropped=dropped,
        first_dropped=first_dropped,
        duplicates=duplicates,
        source_name=source_name,
        drop_examples=examples,
        source_index=source_index,
        layouts=layouts,
    )


def _column_names(
    ds: Dataset, columns: ColumnMap | dict[str, str] | None, source_name: str
) -> dict[str, str]:
    """The column mapping as canonical key -> column; a mapped column that does not exist is refused."""
    if isinstance(columns, dict):
        columns = ColumnMap.from_dict(columns)
    names = columns.as_dict() if columns else {}
    absent = {key: col for key, col in names.items() if col not in ds.column_names}
    if absent:
        raise ValueError(
            f"`{source_name}`: columns mapping {absent} names column(s) that do not exist; "
            f"the columns are {ds.column_names}"
        )
    return names


def _layouts(
    ds: Dataset, names: dict[str, str], fmt: str | None, source_name: str
) -> tuple[str, dict[str, int], list[str] | None]:
    """(the format: ``fmt``, the one detected layout or MIXED; layout -> rows; each row's layout when
    detected)."""
    if fmt is None:
        per_row = _row_layouts(ds, names, source_name)
        layouts = dict(Counter(per_row).most_common())
        return (next(iter(layouts)) if len(layouts) == 1 else MIXED), layouts, per_row
    if fmt not in FORMATS:
        raise ValueError(
            f"`{source_name}`: unknown format {fmt!r}; use one of {list(FORMATS)} or leave it unset"
        )
    return fmt, {fmt: len(ds)}, None


def _drops(
    mapped: Dataset, reasons: list[str]
) -> tuple[dict[str, int], dict[str, list[int]], dict[str, str]]:
    """(reason -> count in DROP_REASONS order, reason -> first row numbers, reason -> "row N: why")."""
    dropped: Counter[str] = Counter(r for r in reasons if r)
    first_dropped: dict[str, list[int]] = {}
    for i, reason in enumerate(reasons):
        if reason and len(first_dropped.setdefault(reason, [])) < MAX_REPORTED_ROWS:
            first_dropped[reason].append(i)
    order = {reason: i for i, reason in enumerate(DROP_REASONS)}
    dropped_sorted = dict(sorted(dropped.items(), key=lambda kv: order[kv[0]]))
    examples = {r: f"row {rows[0]}: {mapped[rows[0]]['_detail']}" for r, rows in first_dropped.items()}
    return dropped_sorted, first_dropped, examples
