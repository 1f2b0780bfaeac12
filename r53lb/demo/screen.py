"""The demo's screen: a live table on a terminal, plain progress lines otherwise."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .fleet import FLEET, World, ZONE

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live


@dataclass
class Row:
    weight: int | None = None
    reason: str = ""
    health: str = "up"


class Reporter:
    """A live table on a terminal; plain progress lines otherwise. Events are lines in both."""

    def __init__(self, world: World, live: bool, started: float) -> None:
        self.world = world
        self.started = started
        self.rows: dict[tuple[str, str], Row] = {(p.name, n.node): Row() for p in FLEET for n in p.nodes}
        self.step_text = "starting"
        self.console: "Console | None" = None
        self._live: "Live | None" = None
        if live:
            from rich.console import Console
            from rich.live import Live

            self.console = Console(highlight=False)
            self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)

    def __enter__(self) -> "Reporter":
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str, style: str = "") -> None:
        stamp = f"[{self.elapsed():5.1f}s]"
        if self.console is not None:
            from rich.markup import escape

            self.console.print(f"[dim]{stamp}[/] " + (f"[{style}]{escape(text)}[/]" if style else escape(text)))
        else:
            print(f"{stamp} {text}", flush=True)

    def step(self, text: str) -> None:
        self.step_text = text
        self.line(f"== {text}", "bold cyan")
        self.refresh()

    def update(self, weights: dict[tuple[str, str], tuple[int | None, str]], health: dict[tuple[str, str], bool]) -> None:
        for key, row in self.rows.items():
            w, reason = weights.get(key, (None, ""))
            row.weight, row.reason = w, reason
            row.health = "up" if health.get(key, True) else "down"
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        t = Table(title=f"r53lb demo ({ZONE}) - {self.step_text}", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("record", "node", "server", "health", "weight", "reason"):
            t.add_column(col, justify="right" if col == "weight" else "left",
                         no_wrap=True, overflow="ellipsis" if col == "reason" else "fold")
        for p in FLEET:
            for n in p.nodes:
                key = (p.name, n.node)
                row = self.rows[key]
                server = "[green]running[/]" if self.world.server_up.get(key, True) else "[red]killed[/]"
                health = "[green]up[/]" if row.health == "up" else "[red]down[/]"
                w = "-" if row.weight is None else str(row.weight)
                wstyle = "red" if row.weight == 0 else ("yellow" if row.weight is not None and row.weight < n.weight else "")
                t.add_row(p.record.removesuffix("." + ZONE), f"{n.node} {n.address}", server, health,
                          f"[{wstyle}]{w}[/]" if wstyle else w, row.reason)
        return Group(t, Text(f"elapsed {self.elapsed():.1f}s", style="dim"))
