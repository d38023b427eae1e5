"""Reading batch records: a DataFrame, mappings, or a CSV / JSONL / JSON file, streamed."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd


def read_records(source: Any) -> Iterator[dict[str, Any]]:
    """Records from a DataFrame, an iterable of mappings, or a CSV / JSONL / JSON file."""
    if _is_frame(source):
        yield from _frame_records(source)
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise ValidationError(f"records file {path} does not exist")
        suffix = path.suffix.lower()
        with path.open(encoding="utf-8", newline="") as fh:
            if suffix == ".csv":
                yield from csv.DictReader(fh)
            elif suffix in (".jsonl", ".ndjson"):
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        yield _json_object(line, f"{path.name} line {n}")
            elif suffix == ".json":
                data = json.load(fh)
                if not isinstance(data, list):
                    raise ValidationError(f"{path.name} must hold a JSON list of objects")
                for n, item in enumerate(data, 1):
                    yield _json_object(item, f"{path.name} item {n}")
            else:
                raise ValidationError(f"records file must be .csv, .jsonl or .json: {path.name}")
        return
    for rec in source:
        yield dict(rec)


def _is_frame(source: Any) -> bool:
    """Whether ``source`` is a DataFrame, without importing pandas: none exists before it is."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(source, pandas.DataFrame)


def _frame_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    from pandas import NaT

    cols = [str(c) for c in frame.columns]
    for row in frame.itertuples(index=False, name=None):
        yield {c: (None if _isna(v, NaT) else v) for c, v in zip(cols, row, strict=True)}


def _isna(v: Any, nat: Any) -> bool:
    return (isinstance(v, float) and math.isnan(v)) or v is nat


def _json_object(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{where} is not valid JSON: {exc.msg}") from None
    if not isinstance(item, dict):
        raise ValidationError(f"{where} is not a JSON object")
    return item
