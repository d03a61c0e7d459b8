"""Streaming input and output: rows come in chunks and go out in chunks, so a file of any size
never sits in memory. Inputs may be local paths or fsspec URLs; outputs are local files,
written beside the target (``.partial``) and moved into place only when the run succeeds."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from explainer.batch._options import RejectedRow
from explainer.exceptions import ValidationError

FORMATS = (".csv", ".parquet", ".jsonl")


def table_format(location: str, what: str) -> str:
    suffix = Path(location.split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise ValidationError.for_field(
            what, f"must end in one of {', '.join(FORMATS)}, not {suffix or 'nothing'!r}"
        )
    return suffix


@dataclass(frozen=True)
class Source:
    """An input table: its columns, its row count where known, and its rows in chunks."""

    location: str
    kind: str
    columns: list[str]
    rows: int | None

    @classmethod
    def open(cls, location: str) -> Source:
        kind = table_format(location, "--input")
        try:
            if kind == ".parquet":
                import pyarrow.parquet as pq

                with _open(location, "rb") as handle:
                    meta = pq.ParquetFile(handle)
                    return cls(
                        location, kind, list(meta.schema_arrow.names), meta.metadata.num_rows
                    )
            if kind == ".csv":
                with _open(location, "rb") as handle:
                    columns = list(pd.read_csv(handle, nrows=0).columns)
                return cls(location, kind, columns, None)
            with _open(location, "rb") as handle:
                first = handle.readline()
            columns = list(json.loads(first)) if first.strip() else []
            return cls(location, kind, columns, None)
        except FileNotFoundError:
            raise
        except (ValueError, OSError) as exc:
            raise ValidationError.for_field(
                "--input", f"{location} cannot be read as {kind[1:]} ({exc})"
            ) from None

    def chunks(self, columns: list[str], strings: list[str], size: int) -> Iterator[pd.DataFrame]:
        """The rows, ``size`` at a time, with only ``columns`` (``strings`` read as text)."""
        try:
            if self.kind == ".parquet":
                yield from self._parquet(columns, size)
            elif self.kind == ".csv":
                yield from self._csv(columns, strings, size)
            else:
                yield from self._jsonl(columns, size)
        except (ValueError, OSError) as exc:
            raise ValidationError.for_field(
                "--input", f"{self.location} cannot be read as {self.kind[1:]} ({exc})"
            ) from None

    def _parquet(self, columns: list[str], size: int) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        with _open(self.location, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=size, columns=columns):
                yield batch.to_pandas()

    def _csv(self, columns: list[str], strings: list[str], size: int) -> Iterator[pd.DataFrame]:
        wanted = set(columns)
        with _open(self.location, "rb") as handle:
            reader = pd.read_csv(
                handle,
                usecols=lambda c: c in wanted,
                dtype={c: str for c in strings},
                chunksize=size,
            )
            for chunk in reader:
                yield chunk[columns]

    def _jsonl(self, columns: list[str], size: int) -> Iterator[pd.DataFrame]:
        records: list[dict[str, Any]] = []
        with _open(self.location, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number} is not JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise ValueError(f"line {number} is not a JSON object")
                records.append({c: record.get(c) for c in columns})
                if len(records) == size:
                    yield pd.DataFrame.from_records(records, columns=columns)
                    records = []
        if records:
            yield pd.DataFrame.from_records(records, columns=columns)


@contextlib.contextmanager
def _open(location: str, mode: str) -> Iterator[IO[Any]]:
    if "://" in location:
        import fsspec

        with fsspec.open(location, mode) as handle:
            yield handle
    else:
        with open(location, mode) as handle:
            yield handle


class Sink:
    """The output file, written chunk by chunk into ``<output>.partial``; ``commit`` moves it
    into place, ``discard`` removes it (a failed run leaves no half-written output)."""

    def __init__(self, location: str) -> None:
        self.kind = table_format(location, "--output")
        self.path = Path(location)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._text: IO[str] | None = None
        self._parquet: Any = None
        self._wrote_header = False

    def write_lines(self, lines: list[str]) -> None:
        handle = self._text_handle()
        for line in lines:
            handle.write(line)
            handle.write("\n")

    def write_table(self, table: pd.DataFrame) -> None:
        if self.kind == ".csv":
            table.to_csv(self._text_handle(), header=not self._wrote_header, index=False)
            self._wrote_header = True
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            schema = pa.Schema.from_pandas(table, preserve_index=False)
            self._parquet = pq.ParquetWriter(self.partial, schema)
        arrow = pa.Table.from_pandas(table, schema=self._parquet.schema, preserve_index=False)
        self._parquet.write_table(arrow)

    def _text_handle(self) -> IO[str]:
        if self._text is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._text = open(self.partial, "w", encoding="utf-8", newline="")  # noqa: SIM115
        return self._text

    def _close(self) -> None:
        if self._text is not None:
            self._text.close()
            self._text = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def commit(self) -> None:
        if self._text is None and self._parquet is None and self.kind == ".jsonl":
            self._text_handle()  # no rows: an empty jsonl (tables always get their header)
        self._close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self._close()
        self.partial.unlink(missing_ok=True)


class RejectLog:
    """``<output stem>.rejected.jsonl``: one line per rejected row (with ``--skip-invalid``)."""

    def __init__(self, output: str) -> None:
        path = Path(output)
        self.path = path.with_name(path.stem + ".rejected.jsonl")
        self.count = 0
        self._handle: IO[str] | None = None
        self.path.unlink(missing_ok=True)  # a previous run's list would mislead

    def write(self, rejects: list[RejectedRow]) -> None:
        if not rejects:
            return
        if self._handle is None:
            self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        for reject in rejects:
            self._handle.write(json.dumps(reject.to_dict(), ensure_ascii=False) + "\n")
        self.count += len(rejects)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
