"""The local and Dask engines: read chunks, process them (here or on a cluster), write them in
input order. Both run the same ``process_chunk``, so their outputs are identical."""

from __future__ import annotations

import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import pandas as pd

from explainer.batch._chunk import (
    ChunkResult,
    ChunkSpec,
    OutputKind,
    batch_service,
    check_columns,
    prepare,
    process_chunk,
    remote_chunk,
)
from explainer.batch._io import RejectLog, Sink, Source
from explainer.batch._options import DEFAULT_ID_COLUMN, BatchOptions, BatchSummary
from explainer.exceptions import ValidationError
from explainer.service import parse_ref
from model_store.base import ModelStore


class _Pending(Protocol):
    def result(self) -> ChunkResult: ...


def run_batch(
    options: BatchOptions,
    store: ModelStore,
    *,
    store_url: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Explain every row of ``options.input`` into ``options.output``; nothing is archived.

    ``store_url`` is where Dask workers find the store (default: ``store.url``)."""
    started = time.perf_counter()
    if options.chunk_rows < 1:
        raise ValidationError.for_field("--chunk-rows", "must be at least 1")
    name, version = parse_ref(options.ref)
    service = batch_service(store, treeshap=options.treeshap, threads=1)
    record = service.record(name, version)
    schema = record.schema
    source = Source.open(options.input)
    sink = Sink(options.output)
    missing = [n for n in schema.feature_names if n not in source.columns]
    if missing:
        raise ValidationError.for_field(
            "--input", f"lacks the feature columns {missing} of {record.ref}"
        )
    id_column = _id_column(options.id_column, source.columns)
    kind: OutputKind = "jsonl" if sink.kind == ".jsonl" else "table"
    if kind == "table":
        check_columns(schema, id_column)
    spec = ChunkSpec(
        name=record.name,
        version=record.version,
        sha256=record.sha256,
        method=options.method,
        output_space=options.output_space,
        id_column=id_column,
        output_kind=kind,
    )
    columns = schema.feature_names + ([id_column] if id_column else [])
    strings = [f.name for f in schema.features if f.is_categorical] + (
        [id_column] if id_column else []
    )
    chunks = enumerate(source.chunks(columns, strings, options.chunk_rows))
    rejects = RejectLog(options.output) if options.skip_invalid else None
    bar = _progress(options, source.rows)
    rows_read = rows_explained = 0
    try:
        if options.engine == "dask":
            url = store_url or getattr(store, "url", None)
            if not options.scheduler or not url:
                raise ValidationError.for_field(
                    "--scheduler", "is required with --engine dask (the scheduler's address)"
                )
            results = _dask(options, spec, url, chunks)
        else:
            model = service.model(record.name, record.version)
            prepare(model, options.method, options.output_space, options.treeshap)

            def work(index: int, first_row: int, raw: pd.DataFrame) -> ChunkResult:
                return process_chunk(service, model, spec, index, first_row, raw)

            results = _local(options.threads, work, chunks)
        for result in results:
            if result.rejects and rejects is None:
                first = result.rejects[0]
                raise ValidationError(
                    f"{first.sentence()}; nothing was written (fix the input, or pass "
                    "--skip-invalid to explain the valid rows and list the others)",
                    [],
                )
            if rejects is not None:
                rejects.write(result.rejects)
            if result.lines is not None:
                sink.write_lines(result.lines)
            elif result.table is not None:
                sink.write_table(result.table)
            rows_read += result.rows_read
            rows_explained += result.rows_explained
            bar.update(result.rows_read)
        if kind == "table" and rows_read == 0:
            from explainer.batch._chunk import to_table

            sink.write_table(to_table(schema, [], id_column))
        sink.commit()
    except BaseException:
        sink.discard()
        raise
    finally:
        bar.close()
        if rejects is not None:
            rejects.close()
    summary = BatchSummary(
        model=record.ref,
        rows_read=rows_read,
        rows_explained=rows_explained,
        rows_rejected=rows_read - rows_explained,
        output=str(sink.path),
        rejects=str(rejects.path) if rejects is not None and rejects.count else None,
        seconds=time.perf_counter() - started,
    )
    if echo is not None:
        echo(_summary_line(summary))
    return summary


def _id_column(asked: str | None, columns: list[str]) -> str | None:
    if asked is None:
        return DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in columns else None
    if asked not in columns:
        raise ValidationError.for_field("--id-column", f"{asked!r} is not a column of the input")
    return asked


def _offsets(
    chunks: Iterator[tuple[int, pd.DataFrame]],
) -> Iterator[tuple[int, int, pd.DataFrame]]:
    """(chunk index, 1-based number of its first row, rows)."""
    first = 1
    for index, raw in chunks:
        yield index, first, raw
        first += len(raw)


def _local(
    threads: int,
    work: Callable[[int, int, pd.DataFrame], ChunkResult],
    chunks: Iterator[tuple[int, pd.DataFrame]],
) -> Iterator[ChunkResult]:
    """Chunks on ``threads`` threads (the TreeSHAP kernel runs without the GIL), in order."""
    if threads <= 1:
        for index, first, raw in _offsets(chunks):
            yield work(index, first, raw)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="crm-explain-batch") as pool:
        pending: deque[Future[ChunkResult]] = deque()
        try:
            for index, first, raw in _offsets(chunks):
                pending.append(pool.submit(work, index, first, raw))
                if len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _dask(
    options: BatchOptions,
    spec: ChunkSpec,
    store_url: str,
    chunks: Iterator[tuple[int, pd.DataFrame]],
) -> Iterator[ChunkResult]:
    """Chunks on a Dask cluster: each worker loads the model from ``store_url`` itself."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise ValidationError.for_field(
            "--engine", "dask needs dask[distributed]: pip install 'dask[distributed]'"
        ) from None
    try:
        client = Client(options.scheduler, set_as_default=False, timeout="20s")  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ValidationError.for_field(
            "--scheduler", f"no Dask scheduler answers at {options.scheduler} ({exc})"
        ) from None
    try:
        window = max(2, 2 * sum(client.nthreads().values()))  # type: ignore[no-untyped-call]
        run = uuid.uuid4().hex[:12]
        pending: deque[Any] = deque()
        for index, first, raw in _offsets(chunks):
            pending.append(
                client.submit(
                    remote_chunk,
                    store_url,
                    options.treeshap,
                    spec,
                    index,
                    first,
                    raw,
                    pure=False,
                    key=f"crm-explain-{spec.name}-{run}-{index}",
                )
            )
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _progress(options: BatchOptions, total: int | None) -> Any:
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        unit="rows",
        desc=f"explaining {options.ref}",
        file=sys.stderr,
        disable=not options.progress,
        mininterval=0.2 if tty else 5.0,
        dynamic_ncols=tty,
    )


def _summary_line(summary: BatchSummary) -> str:
    line = (
        f"explained {summary.rows_explained} of {summary.rows_read} rows with {summary.model} "
        f"into {summary.output} in {summary.seconds:.1f} s ({summary.rows_per_second:.0f} rows/s)"
    )
    if summary.rows_rejected:
        line += f"; {summary.rows_rejected} invalid rows skipped, listed in {summary.rejects}"
    return line
