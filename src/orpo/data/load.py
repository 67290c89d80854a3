"""Load preference data from wherever it lives, mix several sources, and split off an eval set.

Sources: a .jsonl / .json / .csv / .parquet file (optionally .gz for the text
kinds), a folder of such files, a glob, a folder written by ``datasets.save_to_disk``, a Hub dataset
name ``org/name`` (with split and subset), and in Python a ``Dataset``, ``DatasetDict`` or list of
dicts. Files are read with the ``datasets`` builders, so they are cached by fingerprint; when a file
cannot be parsed we find the file and line ourselves, because the builders' errors do not say.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import datasets
import numpy as np
from datasets import Dataset, DatasetDict, Features, Json, Value, concatenate_datasets

from orpo.data.builtin import is_builtin, load_builtin
from orpo.data.formats import FORMATS, ColumnMap, NormaliseResult
from orpo.data.normalise import as_dataset, normalise

# file suffix -> datasets builder
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Split names recognised in file names (``train.jsonl``, ``dev-00001.parquet``), as the Hub does.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "evaluation": "validation",
}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Source: TypeAlias = str | Path | Dataset | DatasetDict | list[dict]


def source_label(source: Source, name_hint: str | None = None) -> str:
    """A short name for messages: the hint, the path or Hub name, or a description of the object."""
    if name_hint:
        return name_hint
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, list):
        return f"<list of {len(source)} rows>"
    return f"<{type(source).__name__}>"


def load_source(
    source: Source,
    split: str | None = "train",
    subset: str | None = None,
    name_hint: str | None = None,
    encoding: str = "utf-8",
) -> Dataset | DatasetDict:
    """Load one source as a ``Dataset`` (or a ``DatasetDict`` of every split when ``split`` is None).

    ``subset`` is the Hub configuration name; ``name_hint`` names in-memory sources in messages.
    ``builtin:NAME`` is a dataset shipped with the package (``orpo.data.builtin``). ``encoding`` is
    the text encoding of local JSON / CSV files.
    """
    if is_builtin(source):
        return as_dataset(load_builtin(str(source), split or "train"), str(source))
    label = source_label(source, name_hint)
    if isinstance(source, Dataset):
        return source
    if isinstance(source, DatasetDict):
        return _pick_split(source, split, label)
    if isinstance(source, list):
        return as_dataset(source, label)
    if not isinstance(source, (str, Path)):
        raise ValueError(
            f"cannot load {type(source).__name__}; give a path, glob, Hub name, Dataset, DatasetDict or list of dicts"
        )
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _pick_split(datasets.load_from_disk(str(path)), split, label)
        files = sorted(p for p in path.rglob("*") if p.is_file() and _builder(p))
        return _load_files(files, split, label, encoding)
    if path.is_file():
        if not _builder(path):
            raise ValueError(
                f"{label}: unsupported file type; use one of {sorted(BUILDERS)} (or .gz of the text ones)"
            )
        return _load_files([path], split, label, encoding)
    if glob.has_magic(str(source)):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if _builder(Path(p)))
        if not files:
            raise ValueError(f"no data files match {label} (looked for {sorted(BUILDERS)})")
        return _load_files(files, split, label, encoding)
    if _HUB_NAME.match(str(source)) and not _builder(path):
        return _load_hub(str(source), split, subset)
    raise ValueError(f"no such file or folder: {label}")


def _load_hub(name: str, split: str | None, subset: str | None) -> Dataset | DatasetDict:
    try:
        return datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # network, auth, missing split ...: one line for the CLI, cause chained
        raise ValueError(
            f"could not load Hub dataset {name} (subset={subset}, split={split}; no local file or folder "
            f"has that name either): {_root_message(err)}"
        ) from err


def _pick_split(data: Dataset | DatasetDict, split: str | None, label: str) -> Dataset | DatasetDict:
    if isinstance(data, Dataset) or split is None:
        return data
    if split not in data:
        raise ValueError(f"{label} has no split {split!r}; its splits are {sorted(data)}")
    return data[split]


def _builder(path: Path) -> str | None:
    """The ``datasets`` builder that reads a data file of this name, or None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name.removesuffix(".gz")
        if name.endswith(".parquet"):  # parquet compresses internally; .parquet.gz is not readable
            return None
    return BUILDERS.get(Path(name).suffix)


def _split_of(path: Path) -> str | None:
    stem = path.name.split(".")[0].lower()
    return SPLIT_NAMES.get(re.split(r"[-_ ]", stem)[0])


def _load_files(
    files: list[Path], split: str | None, label: str, encoding: str = "utf-8"
) -> Dataset | DatasetDict:
    if not files:
        raise ValueError(f"{label}: no data files inside (looked for {sorted(BUILDERS)})")
    kinds = {kind for f in files if (kind := _builder(f))}
    if len(kinds) > 1:
        raise ValueError(f"{label}: mixes file kinds {sorted(kinds)}; point at one kind, e.g. with a glob")
    builder = kinds.pop()
    # Files named after a split (train.jsonl, test.jsonl) form that split; otherwise all are "train".
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(f) or "train", []).append(f)
    if split is not None:
        if split not in by_split:
            raise ValueError(
                f"{label} has no files for split {split!r}; the splits found are {sorted(by_split)}"
            )
        by_split = {split: by_split[split]}
    loaded = DatasetDict({name: _load_split(paths, builder, encoding) for name, paths in by_split.items()})
    return loaded if split is None else loaded[split]


def _load_split(files: list[Path], builder: str, encoding: str = "utf-8") -> Dataset:
    kwargs = {}
    for f in files:
        if builder != "parquet":
            _check_text(f, encoding)
        elif f.stat().st_size == 0:
            raise ValueError(f"{f} is empty (0 bytes): it holds no rows")
    if builder != "parquet":
        kwargs["encoding"] = encoding
    if builder == "csv":
        # Read every CSV column as text: pandas would make a column of "56", "12" answers integers.
        kwargs["features"] = Features(dict.fromkeys(_csv_header(files[0], encoding), Value("string")))
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as err:
        raise _parse_error(files, builder, err, encoding) from err
    if builder == "json" and _holds_json(ds.features):
        # datasets stores a column of mixed types (a number among strings) as Json, and while doing so
        # turns strings that look like JSON ("42", "true") into numbers and booleans. Re-read the
        # records ourselves so such strings stay text and only the truly non-text rows get dropped.
        try:
            return as_dataset([record for f in files for record in _read_json_records(f, encoding)])
        except ValueError:  # not a list of records (e.g. a dict of columns): keep what datasets read
            return ds
    return ds


def _csv_header(path: Path, encoding: str = "utf-8") -> list[str]:
    opened = (
        gzip.open(path, "rt", newline="", encoding=encoding)
        if path.suffix == ".gz"
        else open(path, newline="", encoding=encoding)
    )
    with opened as fh:
        return next(csv.reader(fh), [])


def _read_bytes(path: Path) -> bytes:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        return fh.read()


def _holds_json(feature) -> bool:
    """Whether a feature (or any feature nested in it) is ``datasets.Json``."""
    if isinstance(feature, Json):
        return True
    if isinstance(feature, dict):
        return any(_holds_json(f) for f in feature.values())
    inner = getattr(feature, "feature", None)  # List / LargeList
    return inner is not None and _holds_json(inner)


def _decoding_error(path: Path, raw: bytes, start: int, reason: str, encoding: str, lines_before: int = 0):
    line_start = raw.rfind(b"\n", 0, start) + 1
    line_number = lines_before + raw[:start].count(b"\n") + 1
    byte = raw[start : start + 1].hex()
    return ValueError(
        f"{path} line {line_number}, column {start - line_start + 1}: byte 0x{byte} is not valid "
        f"{encoding} ({reason}); if the file uses another encoding, set data.encoding "
        "(e.g. data.encoding=latin-1 or cp1252)"
    )


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    """``raw`` decoded; a ValueError naming the file, line and byte, and the ``data.encoding`` option."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise _decoding_error(path, raw, err.start, err.reason, encoding) from None


def _check_text(path: Path, encoding: str) -> None:
    """Refuse an empty or undecodable text file with a message naming it (the builders' do not).

    Streams the file in chunks: only one chunk is in memory, whatever the file's size.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    lines_before, has_text = 0, False
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            try:
                has_text = has_text or bool(decoder.decode(chunk).strip())
            except UnicodeDecodeError as err:
                start = max(err.start - (len(err.object) - len(chunk)), 0)  # bytes held from the last chunk
                raise _decoding_error(path, chunk, start, err.reason, encoding, lines_before) from None
            lines_before += chunk.count(b"\n")
        try:
            has_text = has_text or bool(decoder.decode(b"", final=True).strip())
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: ends inside a {encoding} character ({err.reason})") from None
    if not has_text:
        raise ValueError(f"{path} is empty: it holds no rows")


# ---------------------------------------------------------------------------------------------
# Reading JSON ourselves, to say which file and line cannot be parsed


def _root_message(err: BaseException) -> str:
    cause: BaseException | None = err
    while cause is not None:
        err, cause = cause, cause.__cause__ or cause.__context__
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _json_error(err: json.JSONDecodeError) -> str:
    """ "Expecting ',' delimiter at column 9"; some messages already end in "at" ("Unterminated string
    starting at"), which is not repeated."""
    return f"{err.msg.removesuffix(' at')} at column {err.colno}"


def _read_json_records(path: Path, encoding: str = "utf-8") -> list[dict]:
    """The records of a JSON array or JSON Lines file; ValueError naming the first line that is wrong."""
    text = _decode(path, _read_bytes(path), encoding)
    if not path.name.lower().removesuffix(".gz").endswith(".jsonl"):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise ValueError(f"{path} line {err.lineno}: not valid JSON ({_json_error(err)})") from None
            records = None  # more than one value: the file is JSON Lines after all
        if records is not None:
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise ValueError(f"{path}: expected a JSON array of objects or one object per line")
            return records
    records = []
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and other line separators.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number}: not valid JSON ({_json_error(err)})") from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path} line {number}: expected one JSON object per line, got {type(record).__name__}"
            )
        records.append(record)
    return records


def _parse_error(files: list[Path], builder: str, err: Exception, encoding: str = "utf-8") -> ValueError:
    """The most precise message we can give for files the ``datasets`` builder could not read."""
    for f in files:
        if builder == "json":
            try:
                _read_json_records(f, encoding)
            except ValueError as bad_line:
                return bad_line
        elif len(files) > 1:  # CSV/Parquet messages carry the line; load each alone to find the file
            try:
                datasets.load_dataset(builder, data_files=str(f), split="train")
            except Exception as single:
                return ValueError(f"{f}: cannot parse as {builder} ({_root_message(single)})")
    if len(files) == 1:
        return ValueError(f"{files[0]}: cannot parse as {builder} ({_root_message(err)})")
    shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
    return ValueError(f"{shown}: cannot load these files together ({_root_message(err)})")


# ---------------------------------------------------------------------------------------------
# Mixtures and splits


@dataclass
class SourceSpec:
    """One source of a training mixture.

    path:     file, folder, glob, save_to_disk folder, Hub name, or an in-memory Dataset / list of dicts
    split:    which split to read
    subset:   Hub configuration name
    columns:  column mapping (ColumnMap or a dict such as {"prompt": "input"}); None = detect
    limit:    keep at most this many normalised rows (a seeded random choice, source order kept)
    fraction: keep this share of the normalised rows, seeded; applied before ``limit``
    format:   force a layout (one of FORMATS) instead of detecting it
    """

    path: Source
    split: str = "train"
    subset: str | None = None
    columns: ColumnMap | None = None
    limit: int | None = None
    fraction: float | None = None
    format: str | None = None

    def __post_init__(self):
        if isinstance(self.columns, dict):
            self.columns = ColumnMap.from_dict(self.columns)
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(
                f"source {source_label(self.path)}: split must be a split name, got {self.split!r}"
            )
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise ValueError(
                f"source {source_label(self.path)}: limit must be a positive integer, got {self.limit!r}"
            )
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(
                f"source {source_label(self.path)}: fraction must be in (0, 1], got {self.fraction!r}"
            )
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(
                f"source {source_label(self.path)}: unknown format {self.format!r}; use one of {list(FORMATS)}"
            )


def _subsample(rows: Dataset, spec: SourceSpec, seed: int, label: str) -> Dataset:
    total = len(rows)
    target = total
    if spec.fraction is not None:
        target = max(1, round(spec.fraction * total))
    if spec.limit is not None:
        target = min(target, spec.limit)
    if target >= total:
        return rows
    # Seed from the source's label, not its position, so adding a source does not reshuffle the others.
    rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
    picked = np.sort(rng.choice(total, size=target, replace=False))
    return rows.select(picked.tolist())


def load_mixture(
    specs: list[SourceSpec], seed: int, num_proc: int | None = None, encoding: str = "utf-8"
) -> tuple[Dataset, list[NormaliseResult]]:
    """Load and normalise each source with its own mapping, subsample it, and concatenate the rows.

    Returns the canonical rows of all sources in spec order and one ``NormaliseResult`` per source
    (its ``rows`` is the subset that went into the mixture).
    """
    if not specs:
        raise ValueError("no data sources given; add at least one")
    parts, results = [], []
    for spec in specs:
        label = source_label(spec.path)
        if isinstance(spec.path, (str, Path)) and spec.split != "train":
            label = f"{label}[{spec.split}]"
        raw = load_source(spec.path, split=spec.split, subset=spec.subset, name_hint=label, encoding=encoding)
        result = normalise(raw, columns=spec.columns, fmt=spec.format, source_name=label, num_proc=num_proc)
        result.rows = _subsample(result.rows, spec, seed, label)
        parts.append(result.rows)
        results.append(result)
    return concatenate_datasets(parts), results


def train_eval_split(
    ds: Dataset,
    eval_fraction: float | None = None,
    eval_size: int | None = None,
    seed: int = 0,
    source_name: str = "<data>",
    usable: int | None = None,
) -> tuple[Dataset, Dataset]:
    """Split off a seeded random eval set; give exactly one of ``eval_fraction`` or ``eval_size``.

    ``usable``: how many of the rows normalise (the caller counts them), for the refusal of a split
    that leaves one side empty; the split itself is of all rows.
    """
    if (eval_fraction is None) == (eval_size is None):
        raise ValueError("give exactly one of eval_fraction or eval_size")
    if eval_fraction is not None and not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    size = round(eval_fraction * len(ds)) if eval_fraction is not None else int(eval_size or 0)
    if len(ds) < 2 or (usable is not None and usable < 2):
        count = len(ds) if usable is None else usable
        raise ValueError(
            f"`{source_name}` has {count} {'usable ' * (usable is not None)}row{'s' * (count != 1)}, too few to "
            "hold out an eval set and train on the rest; set data.eval_fraction=0 for no eval set, or give "
            "more rows"
        )
    if not 1 <= size < len(ds):
        raise ValueError(
            f"`{source_name}`: an eval set of {size} rows out of {len(ds)} leaves an empty train or eval set; "
            f"set data.eval_size (rows) between 1 and {len(ds) - 1}, or data.eval_fraction=0 for no "
            f"eval set (eval_fraction={eval_fraction})"
        )
    parts = ds.train_test_split(test_size=size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
