"""`kafka-autopilot backtest`: what the rules would have done over a window of real Prometheus history.

An SRE asks "what would this rule have done last week?" before trusting it. The answer comes from the
same machinery as `kafka-autopilot test` (`agent.runtime.replay`: the real matching, state machine and
planners, with a simulated executor), with time moving through the window one step at a time. The
history is read with one range query per distinct expression (chunked for long windows, see
`PrometheusClient.range_query`), and the vector at each step is looked up from those answers; an
instant query at that time would give the same.

Objects come from the cluster or a YAML inventory. A PVC starts the window at the first capacity history
shows for it within the window (the capacity queries, in order, until one names it; the window may start
before the first scrape), else at the size it has now.

Resizes are simulated forward (`SizedHistory`):
- after a simulated resize the planners see the planned size;
- an expression that divides by a capacity metric (`... / kubelet_volume_stats_capacity_bytes`,
  `... / px_volume_capacity_bytes`, as the usage-percentage aliases do) is scaled, per PVC and step, by
  the capacity history recorded over the one the replay has given the PVC: a resize the history lacks
  lowers the usage the rule sees, and one the history has (the live agent's) is not seen before the
  replay makes it. Other expressions are history as recorded;
- a simulated resize is done (its cooldown starts) when history shows the PVC at its new size, if it
  does within the rule's cooldown (replaying a run where the agent made it), else at once.


Rules that cannot be replayed from Prometheus are left out with the reason: `provider: kubernetes`
conditions (computed from live Node objects, which have no history).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from agent.audit.trail import AuditRecord
from agent.core.engine import PlannedAction, distinct_queries
from agent.core.matching import DEFAULT_IDENTITY_LABELS, IdentityIndex, TargetObject
from agent.core.policy import Policy
from agent.core.rules import ConditionProvider, Rule, TargetKind
from agent.core.samples import InstantVector, RangeSeries, Sample, vectors_by_time
from agent.runtime.replay import Replay, paced_rules

DEFAULT_STEP_SECONDS = 30
CAPACITY_QUERIES = ("kubelet_volume_stats_capacity_bytes", "px_volume_capacity_bytes")
"""Where a PVC's size at the start of the window is looked up, in this order."""

RangeQuery = Callable[..., Sequence[RangeSeries]]
"""`PrometheusClient.range_query`: (expr, *, start, end, step, on_chunk) -> the series of the window."""


class BacktestError(ValueError):
    """The backtest cannot run as asked (a bad time, an empty window, no rule left to replay)."""


@dataclass(frozen=True, kw_only=True)
class Window:
    start: int
    end: int
    step: int

    def times(self) -> range:
        return range(self.start, self.end + 1, self.step)

    @property
    def steps(self) -> int:
        return len(self.times())


CAPACITY_DIVISOR = re.compile(r"/\s*\(?\s*(" + "|".join(CAPACITY_QUERIES) + r")\b")
"""An expression whose value is inversely proportional to a PVC's capacity (e.g. used / capacity)."""

_DURATION = re.compile(r"^(\d+[smhdw])+$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_seconds(text: str) -> int:
    """`30s`, `5m`, `1h30m`, `7d`, `2w` as whole seconds; BacktestError otherwise."""
    text = text.strip()
    if not _DURATION.match(text):
        raise BacktestError(f"{text!r} is not a duration like 30s, 5m, 24h or 7d")
    return sum(int(number) * _UNITS[unit] for number, unit in re.findall(r"(\d+)([smhdw])", text))


def parse_time(text: str, *, now: float) -> int:
    """An RFC 3339 time (`2026-01-02T03:04:05Z`), `now`, or a duration back from now (`-24h`), as whole
    Unix seconds."""
    text = text.strip()
    if text == "now":
        return int(now)
    if text.startswith("-"):
        return int(now) - parse_duration_seconds(text[1:])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestError(f"{text!r} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor -DURATION") from None
    if moment.tzinfo is None:
        raise BacktestError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    return int(moment.timestamp())


def make_window(*, start: str, end: str, step: str, now: float) -> Window:
    window = Window(start=parse_time(start, now=now), end=parse_time(end, now=now), step=parse_duration_seconds(step))
    if window.step <= 0:
        raise BacktestError("--step must be at least 1s")
    if window.end <= window.start:
        raise BacktestError(f"--from must be before --to (got {start} .. {end})")
    return window


def replayable(rules: Sequence[Rule]) -> tuple[list[Rule], dict[str, str]]:
    """The rules a backtest can replay, and why each other one is left out."""
    kept, left_out = [], {}
    for rule in rules:
        if rule.conditions.provider is ConditionProvider.KUBERNETES:
            left_out[rule.name] = "provider: kubernetes conditions come from live Node objects, which have no history"
        else:
            kept.append(rule)
    return kept, left_out


def first_values(series: Sequence[RangeSeries]) -> InstantVector:
    """Each series' first value in the window, as one vector."""
    return tuple(Sample(labels=one.labels, value=one.points[0][1]) for one in series if one.points)


def sized_at_start(
    objects: Sequence[TargetObject], *, capacity_vectors: Sequence[InstantVector]
) -> tuple[list[TargetObject], list[str]]:
    """PVCs at the capacity the first vector naming each shows; the others as they are. Also a note
    for each PVC no vector names (it keeps the size it has now)."""
    claims = [obj for obj in objects if obj.kind is TargetKind.PVC]
    index = IdentityIndex(objects=claims, identity_labels=DEFAULT_IDENTITY_LABELS[TargetKind.PVC])
    sizes: dict[str, float] = {}
    for vector in capacity_vectors:
        for key, value in index.join(vector).values.items():
            sizes.setdefault(key, value)
    notes = [
        f"{claim.key}: no capacity in history at the start; starting from its size now"
        for claim in claims
        if claim.key not in sizes
    ]
    sized = [
        replace(obj, capacity_bytes=int(sizes[obj.key])) if obj.key in sizes and sizes[obj.key] > 0 else obj
        for obj in objects
    ]
    return sized, notes


@dataclass
class History:
    """Each expression's vector at each step of the window, from one range query per expression."""

    vectors: dict[str, dict[float, InstantVector]] = field(default_factory=dict)
    first: InstantVector = ()
    """Each series' first value in the window (for a capacity query: the sizes at the start)."""

    def vector_at(self, query: str, at: float) -> InstantVector:
        return self.vectors.get(query, {}).get(float(at), ())


def read_history(
    queries: Sequence[str], *, window: Window, range_query: RangeQuery, on_steps: Callable[[int], None] | None = None
) -> History:
    history = History()
    for query in queries:
        series = range_query(query, start=window.start, end=window.end, step=window.step, on_chunk=on_steps)
        history.vectors[query] = vectors_by_time(series)
    return history


def pvc_key(labels: Mapping[str, str]) -> str | None:
    """The PVC a series names by the default identity labels (namespace + persistentvolumeclaim | pvc)."""
    namespace, name = labels.get("namespace"), labels.get("persistentvolumeclaim") or labels.get("pvc")
    return f"{namespace}/{name}" if namespace and name else None


@dataclass
class SizedHistory:
    """The history, with the capacity each PVC had at each step, read through the sizes the replay gave."""

    history: History
    objects: Mapping[str, TargetObject]
    """The replay's objects, as it changes them."""
    recorded: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)
    """Capacity query -> step -> PVC key -> bytes."""

    @classmethod
    def of(cls, history: History, objects: Mapping[str, TargetObject], capacity: Mapping[str, History]) -> SizedHistory:
        recorded = {
            query: {
                at: {key: sample.value for sample in vector if (key := pvc_key(sample.labels))}
                for at, vector in found.vectors.get(query, {}).items()
            }
            for query, found in capacity.items()
        }
        return cls(history=history, objects=objects, recorded=recorded)

    def capacity(self, query: str, key: str, at: float) -> float | None:
        return self.recorded.get(query, {}).get(float(at), {}).get(key)

    def vector_at(self, query: str, at: float) -> InstantVector:
        vector = self.history.vector_at(query, at)
        divisor = CAPACITY_DIVISOR.search(query)
        if divisor is None:
            return vector
        scaled = []
        for sample in vector:
            key = pvc_key(sample.labels)
            recorded = self.capacity(divisor.group(1), key, at) if key else None
            target = self.objects.get(key) if key else None
            simulated = target.capacity_bytes if target is not None else None
            factor = recorded / simulated if recorded and simulated else 1.0
            scaled.append(sample if factor == 1.0 else Sample(labels=sample.labels, value=sample.value * factor))
        return tuple(scaled)

    def finish_time(self, rule: Rule, planned: PlannedAction, after: TargetObject | None, *, times: range) -> float:
        """When history first shows the PVC at its planned size, within the rule's cooldown; else at once."""
        size = after.capacity_bytes if after is not None and after.kind is TargetKind.PVC else None
        if size is None:
            return planned.at
        for at in times:
            within = planned.at <= at <= planned.at + rule.cooldown_seconds
            if within and any((self.capacity(query, planned.object, at) or 0) >= size for query in self.recorded):
                return float(at)
        return planned.at


@dataclass(frozen=True, kw_only=True)
class BacktestResult:
    window: Window
    rules: tuple[Rule, ...]
    records: tuple[AuditRecord, ...]
    left_out: Mapping[str, str]
    notes: tuple[str, ...] = ()


def run_backtest(
    *,
    rules: Sequence[Rule],
    objects: Sequence[TargetObject],
    window: Window,
    range_query: RangeQuery,
    on_progress: Callable[[int, int], None] | None = None,
    policy: Policy | None = None,
) -> BacktestResult:
    """Replay `rules` over `window`, with a guardrail `policy` if given; `on_progress(done, total)` counts
    steps read and then replayed."""
    kept, left_out = replayable(rules)
    if not kept:
        raise BacktestError("no rule left to replay: " + "; ".join(f"{n}: {why}" for n, why in left_out.items()))
    paced = paced_rules(kept, step_seconds=window.step)
    queries = distinct_queries(paced)
    total = window.steps * (len(queries) + len(CAPACITY_QUERIES) + 1)
    done = 0

    def advance(steps: int) -> None:
        nonlocal done
        done += steps
        if on_progress is not None:
            on_progress(min(done, total), total)

    history = read_history(queries, window=window, range_query=range_query, on_steps=advance)
    capacity = {
        query: History(
            vectors={
                query: vectors_by_time(
                    series := range_query(query, start=window.start, end=window.end, step=window.step, on_chunk=advance)
                )
            },
            first=first_values(series),
        )
        for query in CAPACITY_QUERIES
    }
    sized, notes = sized_at_start(objects, capacity_vectors=[found.first for found in capacity.values()])
    replay = Replay(rules=paced, objects={obj.key: obj for obj in sized}, vector_at=lambda q, at: (), policy=policy)
    sizes = SizedHistory.of(history, replay.objects, capacity)
    replay.vector_at = sizes.vector_at
    replay.finish_time = lambda rule, planned, after: sizes.finish_time(rule, planned, after, times=window.times())
    for index, now in enumerate(window.times()):
        replay.cycle(now)
        if index % 100 == 99:
            advance(100)
    advance(window.steps % 100)
    return BacktestResult(
        window=window, rules=tuple(paced), records=tuple(replay.records), left_out=left_out, notes=tuple(notes)
    )
