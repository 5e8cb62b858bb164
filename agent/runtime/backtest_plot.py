"""`kafka-autopilot backtest --plot`: one panel per object and rule, drawn with matplotlib.

Each panel shows the expression's value through the window, its threshold, the stretches spent
Triggered (the `for` window running, or waiting), and a marker at each action, decline and hold.
matplotlib is the optional `[tools]` extra (`pip install kafka-autopilot[tools]`), imported only here
and only when a plot is asked for; the agent's image does not carry it. An `.html` file embeds the PNG
(base64), so it opens offline.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.audit.trail import AuditRecord
from agent.core.rules import Rule
from agent.core.states import RuleState
from agent.runtime.backtest import BacktestResult

PLOT_SUFFIXES = (".png", ".html")
MARKERS = {
    "action-applied": ("^", "tab:green", "action"),
    "action-declined": ("x", "tab:red", "declined"),
    "action-throttled": ("s", "tab:orange", "held"),
    "action-awaiting-approval": ("D", "tab:purple", "awaiting approval"),
}


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed: the message says how to get it."""


def _when(record: AuditRecord) -> datetime:
    return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))


def _panels(result: BacktestResult) -> dict[tuple[str, str], list[AuditRecord]]:
    panels: dict[tuple[str, str], list[AuditRecord]] = {}
    for record in result.records:
        if record.get("rule") and record.get("object"):
            panels.setdefault((str(record["rule"]), str(record["object"])), []).append(record)
    return panels


def _threshold(rule: Rule) -> list[float]:
    found = []
    for expression in rule.conditions.expressions[:1]:
        for value in expression.values:
            try:
                found.append(float(value))
            except ValueError:
                continue
    return found


def render_png(result: BacktestResult) -> bytes:
    try:
        importlib.import_module("matplotlib").use("Agg")  # no display: draw to memory
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError as error:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'kafka-autopilot[tools]' (it is not in the agent's image)"
        ) from error
    panels = _panels(result)
    rules = {rule.name: rule for rule in result.rules}
    count = max(1, len(panels))
    figure, axes = plt.subplots(count, 1, figsize=(11, 2.8 * count), sharex=True, squeeze=False)
    for axis, ((rule_name, obj), records) in zip(axes[:, 0], sorted(panels.items()), strict=False):
        _draw(axis, rule=rules.get(rule_name), title=f"{rule_name}  {obj}", records=records, end=result.window.end)
    if not panels:
        axes[0, 0].set_title("no object was evaluated")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _draw(axis: Any, *, rule: Rule | None, title: str, records: list[AuditRecord], end: int) -> None:
    evaluations = [r for r in records if r["event"] == "evaluation"]
    expression = rule.conditions.expressions[0].query if rule and rule.conditions.expressions else None
    times = [_when(r) for r in evaluations]
    values = [r["values"].get(expression) if expression else None for r in evaluations]
    points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if points:
        axis.plot([t for t, _ in points], [v for _, v in points], color="tab:blue", linewidth=1.2, label="value")
    for threshold in _threshold(rule) if rule else []:
        axis.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    entered: datetime | None = None
    for record in records:
        if record["event"] == "transition" and record["to"] == RuleState.TRIGGERED.value:
            entered = entered or _when(record)
        elif record["event"] == "transition" and entered is not None:
            axis.axvspan(entered, _when(record), color="gold", alpha=0.3)
            entered = None
    if entered is not None:
        axis.axvspan(entered, datetime.fromtimestamp(end, UTC), color="gold", alpha=0.3)
    low = min((v for _, v in points), default=0.0)
    for event, (marker, colour, label) in MARKERS.items():
        found = [_when(r) for r in records if r["event"] == event]
        if found:
            axis.scatter(found, [low] * len(found), marker=marker, color=colour, s=60, zorder=3, label=label)
    for_seconds = rule.conditions.for_seconds if rule else 0
    window = f", for {for_seconds}s" if for_seconds else ""
    axis.set_title(f"{title}{window}  (shaded: Triggered)", fontsize=9, loc="left")
    axis.legend(loc="upper left", fontsize=7)
    axis.grid(alpha=0.3)


def write_plot(result: BacktestResult, path: Path) -> None:
    """A PNG, or an HTML page with the PNG inside, chosen by the file's suffix."""
    png = render_png(result)
    if path.suffix.lower() == ".html":
        encoded = base64.b64encode(png).decode("ascii")
        title = html.escape(f"kafka-autopilot backtest {path.stem}")
        path.write_text(
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body><h1>{title}</h1><img alt="backtest plot" src="data:image/png;base64,{encoded}"></body></html>\n',
            encoding="utf-8",
        )
    else:
        path.write_bytes(png)
