"""A live progress bar per level, on stderr so stdout keeps only the tables."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from insieme.bench.metrics import LevelMetrics, RequestRecord
from insieme.bench.settings import Level


class RichProgress:
    """A ``ProgressSink`` that draws one bar per level with live tokens/s and errors."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.fields[level]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[rate]}"),
            console=console or Console(stderr=True),
        )
        self._task: TaskID | None = None
        self._live = False
        self._started = 0.0
        self._tokens = 0
        self._errors = 0

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._live:
            self._progress.stop()

    def level_started(self, level: Level, requests: int) -> None:
        # Drawn from the first level on, so a server that fails its checks leaves no trace.
        if not self._live:
            self._progress.start()
            self._live = True
        self._task = self._progress.add_task("", total=requests, level=level.name, rate="")
        self._started, self._tokens, self._errors = time.perf_counter(), 0, 0

    def request_done(self, record: RequestRecord) -> None:
        if self._task is None:
            return
        if record.ok:
            self._tokens += record.output_len
        else:
            self._errors += 1
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(self._task, advance=1, rate=self._rate(self._tokens / elapsed))

    def level_done(self, metrics: LevelMetrics) -> None:
        if self._task is not None:
            self._progress.update(self._task, rate=self._rate(metrics.output_throughput))

    def _rate(self, tokens_per_s: float) -> str:
        errors = f"  [red]{self._errors} errors[/]" if self._errors else ""
        return f"{tokens_per_s:,.0f} tok/s{errors}"
