"""Reading and writing the tables users hand over: csv, parquet, jsonl."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from explainer.exceptions import ValidationError

FORMATS = (".csv", ".parquet", ".jsonl")


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValidationError.for_field(
            str(path), f"must end in one of {', '.join(FORMATS)}, not {suffix or 'nothing'!r}"
        )
    return suffix


def read_table(path: Path) -> pd.DataFrame:
    kind = table_format(path)
    try:
        if kind == ".csv":
            return pd.read_csv(path)
        if kind == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True)
    except (ValueError, OSError) as exc:
        raise ValidationError.for_field(
            str(path), f"cannot be read as {kind[1:]} ({exc})"
        ) from None
