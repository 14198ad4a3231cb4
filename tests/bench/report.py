"""Figures, the printed table and ``bench-results/bench.json``.

Absolute times drift between runs on these machines, so every figure that carries a target
is a ratio or a count measured in the same run, or a time the issue sets a bound for.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

CHECKS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass
class Figure:
    name: str
    value: float
    unit: str = ""
    target: tuple[str, float] | None = None
    """``("<=", 0.5)``: the issue's bound for this figure; ``None`` for context figures."""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        return CHECKS[op](self.value, bound)

    def shown_value(self) -> str:
        if self.unit in ("count", "") and float(self.value).is_integer():
            return f"{int(self.value)}"
        digits = 1 if abs(self.value) >= 100 else 2 if abs(self.value) >= 1 else 3
        return f"{self.value:.{digits}f} {self.unit}".strip()

    def shown_target(self) -> str:
        if self.target is None:
            return ""
        op, bound = self.target
        return f"{op} {bound:g} {self.unit if self.unit not in ('count', '') else ''}".strip()


@dataclass
class ScenarioResult:
    number: int
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def add(self, *args, **kwargs) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure


def table(results: list[ScenarioResult]) -> str:
    rows = [("#", "measure", "value", "target", "met")]
    for result in results:
        if result.error:
            rows.append((str(result.number), f"{result.title}: not measured (see below)", "", "", ""))
        for figure in result.figures:
            met = {True: "yes", False: "NO", None: ""}[figure.met]
            rows.append((str(result.number), figure.name, figure.shown_value(), figure.shown_target(), met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def notes(results: list[ScenarioResult]) -> str:
    return "\n".join(
        f"[{result.number}] {result.title} ({result.seconds:.0f} s): "
        + (f"FAILED: {result.error}" if result.error else " ".join(result.notes))
        for result in results
    )


def write_json(results: list[ScenarioResult], path: Path, *, quick: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "scenarios": [
            {
                "number": result.number,
                "title": result.title,
                "seconds": round(result.seconds, 1),
                "error": result.error,
                "notes": result.notes,
                "figures": [asdict(figure) | {"met": figure.met} for figure in result.figures],
            }
            for result in results
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
