"""The terminal side of ``stream-infer lag``: a plain table, or a live one that redraws in place."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream_infer.ops.lag import LagView

__all__ = ["render_text", "show_live"]


def _rate(view: LagView, topic: str, partition: int, which: int) -> str:
    rate = view.rates.get((topic, partition))
    return "-" if rate is None else f"{rate[which]:.1f}"


def render_text(view: LagView) -> str:
    """Fixed-width text: greppable, and what a pipe or a log file gets."""
    with_rates = bool(view.rates)
    head = f"{'TOPIC':<30} {'PARTITION':>9} {'COMMITTED':>12} {'END':>12} {'LAG':>10}"
    if with_rates:
        head += f" {'IN/S':>9} {'DONE/S':>9}"
    lines = [head]
    for p in view.snapshot.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        line = f"{p.topic:<30} {p.partition:>9} {committed:>12} {p.high:>12} {p.lag:>10}"
        if with_rates:
            line += f" {_rate(view, p.topic, p.partition, 0):>9}"
            line += f" {_rate(view, p.topic, p.partition, 1):>9}"
        lines.append(line)
    snap = view.snapshot
    lines.append(f"total lag: {snap.total_lag} (group {view.group}, {snap.members} members)")
    return "\n".join(lines)


def _table(view: LagView) -> Table:
    snap = view.snapshot
    table = Table(
        title=f"group {view.group}: {snap.members} members, total lag {snap.total_lag}",
        title_justify="left",
    )
    for name in ("topic", "partition", "committed", "end", "lag", "in/s", "done/s"):
        table.add_column(name, justify="left" if name == "topic" else "right")
    for p in snap.partitions:
        table.add_row(
            p.topic,
            str(p.partition),
            "-" if p.committed is None else str(p.committed),
            str(p.high),
            str(p.lag),
            _rate(view, p.topic, p.partition, 0),
            _rate(view, p.topic, p.partition, 1),
        )
    return table


def show_live(views: Iterable[LagView]) -> None:
    """Redraw the table in place until the views end (or Ctrl-C)."""
    console = Console()
    try:
        with Live(console=console, auto_refresh=False) as live:
            for view in views:
                live.update(_table(view), refresh=True)
    except KeyboardInterrupt:
        pass
