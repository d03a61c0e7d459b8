"""Shared helpers of the benchmarks: the demo models in a store, timing, the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from explainer.service import ExplainerService
from model_store import FileSystemStore, MemoryStore
from model_store.demo import DemoModel, build_demo_models, seed_demo


def demo_store(path: str | None = None) -> tuple[FileSystemStore, dict[str, DemoModel]]:
    """The three demo models, registered and promoted (in memory, or in the folder ``path``)."""
    models = {m.name: m for m in build_demo_models()}
    store: FileSystemStore = FileSystemStore(path) if path else MemoryStore()
    if not store.names():
        seed_demo(store, models.values())
    return store, models


def service(store: FileSystemStore) -> ExplainerService:
    return ExplainerService(store)


def naive_explainer(pipeline: Any) -> Callable[[pd.DataFrame], Any]:
    """The in-process path a data scientist would write for one fitted
    ``Pipeline(..., XGBoost)``: the pipeline's transform, then ``shap.TreeExplainer`` (built
    once; path-dependent SHAP on log-odds) on the rows."""
    import shap

    explainer = shap.TreeExplainer(pipeline[-1])
    transform = pipeline[:-1].transform
    return lambda rows: explainer.shap_values(transform(rows))


def timings(call: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    """Seconds per call, ``repeat`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    try:
        with open("/proc/meminfo") as handle:
            kib = int(handle.readline().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        one, five, fifteen = os.getloadavg()
        load = f", load average {one:.1f}/{five:.1f}/{fifteen:.1f}"
    return f"{cores} cores{memory}, Python {platform.python_version()}{load}"
