"""Which per-object `evaluation` records a cycle writes, and when a rule's `evaluation-summary` is due.

Why it exists: one evaluation record per selected object per cycle does not scale (10,000 PVCs on a
2 s poll is 300,000 lines a minute, nearly all saying what the previous cycle said). `--audit-evaluations`
chooses what is written:

- `changes` (the default): an object's evaluation record only when its verdict, the verdict of one of
  its expressions, or its durable state (agent.core.states.ObjectState, but for `last_holding_at`, which
  moves every cycle while `for` is waited for) differs from its previous cycle's (its first cycle counts
  as a change): so every transition, and every `for` restarted, has the values behind it;
- `sample:N`: the changes, and every object on every N-th cycle of the rule (the first included);
- `all`: every object on every cycle.

Transitions, actions, holds by the policy and errors are not evaluations: they are always written. What
is remembered is one signature (verdicts and state) per (rule, object) evaluated in the rule's latest
cycle, so memory follows the objects the rule selects: an object that is gone (or kept out by the
policy) is forgotten, and written again when it comes back.

The summary (`evaluation-summary`, one per rule) is written every cycle with `all`; otherwise when its
counts changed, on a sampled cycle, or when SUMMARY_HEARTBEAT_SECONDS passed since the rule's last one, so a
steady rule still shows once a minute that it is evaluated, and what it sees.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from agent.core.engine import Evaluations, ObjectEvaluation, ObjectStates, verdicts_by_object
from agent.core.states import UNTOUCHED, ObjectState, Verdict

SUMMARY_HEARTBEAT_SECONDS = 60.0
"""At most this long between two summaries of a rule whose counts stay the same."""

_SAMPLE = re.compile(r"sample:([1-9][0-9]*)")

Signature = tuple[Verdict, tuple[bool | None, ...], ObjectState | None]
"""What `changes` compares: the object's verdict, each expression's (None: that expression had no data),
and its state after the cycle but for `last_holding_at`."""


class EvaluationMode(StrEnum):
    CHANGES = "changes"
    SAMPLE = "sample"
    ALL = "all"


@dataclass(frozen=True, kw_only=True)
class EvaluationAuditing:
    """The parsed `--audit-evaluations` value."""

    mode: EvaluationMode = EvaluationMode.CHANGES
    every: int = 0
    """With `sample`: every this many cycles, every object (N >= 1)."""

    @classmethod
    def parse(cls, text: str) -> EvaluationAuditing:
        """`changes`, `all` or `sample:N` (N a whole number >= 1); anything else is a ValueError saying so."""
        if text in (EvaluationMode.CHANGES, EvaluationMode.ALL):
            return cls(mode=EvaluationMode(text))
        sample = _SAMPLE.fullmatch(text)
        if sample is None:
            raise ValueError(f"{text!r}: expected changes, all or sample:N (N a whole number >= 1)")
        return cls(mode=EvaluationMode.SAMPLE, every=int(sample.group(1)))

    def __str__(self) -> str:
        return f"sample:{self.every}" if self.mode is EvaluationMode.SAMPLE else self.mode.value


def signature(evaluation: ObjectEvaluation, state: ObjectState | None) -> Signature:
    steady = replace(state, last_holding_at=None) if state is not None else None
    return evaluation.verdict, tuple(result.holds for result in evaluation.results), steady


def _signatures(evaluations: Sequence[ObjectEvaluation], states: Mapping[str, ObjectState]) -> dict[str, Signature]:
    if not isinstance(evaluations, Evaluations):
        return {evaluation.object: signature(evaluation, states.get(evaluation.object)) for evaluation in evaluations}
    signatures: dict[str, Signature] = {}
    # A quiet object (clear, every condition false, untouched) has one signature: not worked out 10,000 times.
    touched = states.touched if isinstance(states, ObjectStates) else None
    stirred = evaluations.stirred()
    quiet: Signature = (Verdict.CLEAR, (False,) * evaluations.conditions, UNTOUCHED)
    for position, (key, verdict) in enumerate(zip(evaluations.keys, evaluations.verdicts, strict=True)):
        if touched is not None and key not in stirred and key not in touched:
            signatures[key] = quiet
            continue
        state = states.get(key)
        steady = (
            replace(state, last_holding_at=None) if state is not None and state.last_holding_at is not None else state
        )
        signatures[key] = verdict, evaluations.holds(position), steady
    return signatures


def verdict_counts(evaluations: Sequence[ObjectEvaluation]) -> dict[str, int]:
    """Objects by verdict, every verdict present (0 when none): holds, clear, no-data."""
    counted = Counter(verdict for _, verdict in verdicts_by_object(evaluations))
    return {verdict.value: counted[verdict] for verdict in Verdict}


@dataclass
class _RuleMemory:
    cycles: int = 0
    sampled: bool = False
    """Whether the rule's latest cycle wrote every object (the `all` mode, or a `sample:N` cycle)."""
    signatures: Mapping[str, Signature] = field(default_factory=dict)
    summary: Mapping[str, object] | None = None
    summary_at: float | None = None


@dataclass
class EvaluationAudit:
    """Per rule, what the previous cycle said, to choose what this cycle writes (see the module's docstring)."""

    auditing: EvaluationAuditing = field(default_factory=EvaluationAuditing)
    _rules: dict[str, _RuleMemory] = field(default_factory=dict)

    def to_write(
        self, rule: str, evaluations: Sequence[ObjectEvaluation], states: Mapping[str, ObjectState]
    ) -> list[ObjectEvaluation]:
        """The evaluations of the rule's new cycle to write (`states`: the objects' states after it);
        remembers what this cycle said for the next."""
        memory = self._rules.setdefault(rule, _RuleMemory())
        mode = self.auditing.mode
        memory.sampled = mode is EvaluationMode.ALL or (
            mode is EvaluationMode.SAMPLE and memory.cycles % self.auditing.every == 0
        )
        memory.cycles += 1
        previous = memory.signatures
        memory.signatures = _signatures(evaluations, states)
        if memory.sampled:
            return list(evaluations)
        if isinstance(evaluations, Evaluations):  # build only the records written
            return [
                evaluations[position]
                for position, key in enumerate(evaluations.keys)
                if previous.get(key) != memory.signatures[key]
            ]
        return [
            evaluation
            for evaluation in evaluations
            if previous.get(evaluation.object) != memory.signatures[evaluation.object]
        ]

    def summary_due(self, rule: str, counts: Mapping[str, object], *, at: float) -> bool:
        """Whether the rule's summary with these counts is written now (`at`: a monotonic time in seconds).

        Call it after `to_write` of the same cycle."""
        memory = self._rules.setdefault(rule, _RuleMemory())
        due = (
            memory.sampled
            or counts != memory.summary
            or memory.summary_at is None
            or at - memory.summary_at >= SUMMARY_HEARTBEAT_SECONDS
        )
        if due:
            memory.summary, memory.summary_at = dict(counts), at
        return due
