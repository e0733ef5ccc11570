"""Rich rendering of ``streamflow.core.progress`` events for the CLI: one bar per task with rows
done, rows/s and elapsed time. Only the CLI imports this module (library code reports
progress through a plain callback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from streamflow.core.progress import ProgressCallback, ProgressEvent


class RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"/{int(task.total):,}" if task.total is not None else ""
        unit = task.fields.get("unit", "rows")
        return Text(f"{int(task.completed):,}{total} {unit}", style="progress.download")


class RowsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text("", style="progress.data.speed")
        unit = task.fields.get("unit", "rows")
        return Text(f"{task.completed / elapsed:,.0f} {unit}/s", style="progress.data.speed")


@contextmanager
def rich_progress(console: Console, *, enabled: bool = True) -> Iterator[ProgressCallback]:
    """A progress callback drawing bars on ``console`` while the block runs."""
    if not enabled:
        yield lambda _e: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(bar_width=24),
        RowsColumn(),
        RowsPerSecondColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_event(event: ProgressEvent) -> None:
        if event.message and event.total is None and not event.done:
            progress.console.print(f"[dim]{event.message}[/]", highlight=False)
            return
        task_id: TaskID | None = tasks.get(event.task)
        if task_id is None:
            task_id = tasks[event.task] = progress.add_task(event.task, total=event.total, unit=event.unit)
        progress.update(task_id, completed=event.done, total=event.total)

    with progress:
        yield on_event
