"""The AutopilotRuleObject status as data: its records, their encoding, and the names of the objects.

Why this module exists: the state store (statestore.py) and the approvals store (approvals.py) write
the same kinds of fields (times, labels, names) and the agent reads them back after a restart, so
the encoding is one pure module, tested without an apiserver: `encode_status` / `decode_status`
(`StateDecodeError` for anything this agent did not write), the records kept next to the state
(`LastAction`, `InFlight`, `RecentAction`, `StoredStatus`, `ActionHistory`), and the naming of
objects and labels (`object_name`, `label_value`, `object_manifest`).

Encoding: times are RFC 3339 strings in UTC with the fraction of a second written out exactly
(`format_time`): the decimal digits of the shortest repr of the float, however many that takes.
They read well with kubectl, sort as text, and `parse_time(format_time(t)) == t` for every finite t
between the years 1 and 9999. Absent (None) fields are left out of the status.

`status.recentActions` keeps the last RECENT_ACTIONS starts of actions on the pair (name and time).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Final

from agent.adapters.errors import StateDecodeError
from agent.core.policy import ActionStart
from agent.core.rules import API_GROUP, API_VERSION
from agent.core.states import ObjectState, RuleState

VERSION: Final = API_VERSION.split("/", 1)[1]
RULES_PLURAL: Final = "autopilotrules"
OBJECTS_PLURAL: Final = "autopilotruleobjects"
APPROVALS_PLURAL: Final = "actionapprovals"
OBJECT_KIND: Final = "AutopilotRuleObject"

RULE_LABEL: Final = f"{API_GROUP}/rule"
OBJECT_KIND_LABEL: Final = f"{API_GROUP}/object-kind"
OBJECT_NAMESPACE_LABEL: Final = f"{API_GROUP}/object-namespace"
OBJECT_NAME_LABEL: Final = f"{API_GROUP}/object-name"
MODE_LABEL: Final = f"{API_GROUP}/mode"
"""On the AutopilotRuleObjects of a dry-run agent only (value DRY_RUN_MODE): live agents never read them."""
DRY_RUN_MODE: Final = "dry-run"

NAMESPACED_KINDS: Final = frozenset({"PersistentVolumeClaim", "KafkaBroker", "Pod"})
"""Object kinds whose key is `namespace/name`; for the others the key is the name."""

RECENT_ACTIONS: Final = 32
"""How many action starts each pair keeps in status.recentActions (the oldest are dropped)."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TIME: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")
_LABEL_VALUE: Final = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NAME_HASH_LENGTH: Final = 10
_MAX_NAME: Final = 253


# --- the records kept next to the state ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LastAction:
    """The most recent action taken on the object, for people reading the status."""

    name: str
    before: str = ""
    after: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str = ""


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """An action requested and not yet verified; written before the action is applied."""

    action: str
    requested_at: float
    detail: Mapping[str, str] = field(default_factory=dict)
    """What a verifier needs to check the effect, e.g. the requested size."""


@dataclass(frozen=True, kw_only=True)
class RecentAction:
    """One action started on the object, kept for the policy's rate limits."""

    name: str
    started_at: float


@dataclass(frozen=True, kw_only=True)
class StoredStatus:
    """A decoded AutopilotRuleObject status; `state` is None when none was written yet."""

    state: ObjectState | None = None
    last_action: LastAction | None = None
    in_flight: InFlight | None = None
    recent_actions: tuple[RecentAction, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ActionHistory:
    """Every pair's recent action starts and the pairs with an action in flight, from one list."""

    starts: tuple[ActionStart, ...] = ()
    in_flight: frozenset[tuple[str, str]] = frozenset()
    """(rule, object key) pairs with an in-flight record."""


NOT_ACTED_OUTCOMES = frozenset({"held", "declined"})
"""Outcomes of actions that did not run: they are not starts for the policy's rate limits."""


def acted(last_action: LastAction) -> bool:
    """Whether the action ran (or, in dry-run, would have): only those count as starts."""
    return last_action.outcome not in NOT_ACTED_OUTCOMES


def with_recent(recent: Sequence[RecentAction], last_action: LastAction | None) -> tuple[RecentAction, ...]:
    """`recent` with `last_action`'s start added (once, and only if it acted), keeping the last RECENT_ACTIONS."""
    if last_action is None or last_action.started_at is None or not acted(last_action):
        return tuple(recent)
    start = RecentAction(name=last_action.name, started_at=last_action.started_at)
    if start in recent:
        return tuple(recent)
    return tuple(sorted((*recent, start), key=lambda action: action.started_at))[-RECENT_ACTIONS:]


# --- the codec (pure) -------------------------------------------------------------------------------


def format_time(value: float) -> str:
    """Epoch seconds as RFC 3339 in UTC, with every decimal digit of the float's shortest repr."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite time: {value!r}")
    with localcontext() as context:
        context.prec = 200
        exact = Decimal(repr(float(value)))
        whole = int(exact.to_integral_value(rounding=ROUND_FLOOR))
        fraction = exact - whole
    try:
        moment = _EPOCH + timedelta(seconds=whole)
    except OverflowError as error:
        raise ValueError(f"time out of range (years 1-9999): {value!r}") from error
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if fraction:
        text += "." + format(fraction, "f").split(".", 1)[1].rstrip("0")
    return text + "Z"


def parse_time(text: str) -> float:
    """The epoch seconds an RFC 3339 time stands for; exact for `format_time`'s output."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, digits, offset = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError as error:
        raise ValueError(f"not an RFC 3339 time: {text!r} ({error})") from None
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    whole = (moment - _EPOCH) // timedelta(seconds=1)
    if not digits:
        return float(whole)
    with localcontext() as context:
        context.prec = 200
        return float(Decimal(whole) + Decimal(f"0.{digits}"))


def _put_time(target: dict[str, Any], key: str, value: float | None) -> None:
    if value is not None:
        target[key] = format_time(value)


def _get_time(source: Mapping[str, Any], key: str, *, path: str) -> float | None:
    raw = source.get(key)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as error:
        raise StateDecodeError(f"{path}.{key}: {error}") from None


def _get_string(source: Mapping[str, Any], key: str, *, path: str) -> str:
    raw = source.get(key, "")
    if not isinstance(raw, str):
        raise StateDecodeError(f"{path}.{key}: must be a string, got {raw!r}")
    return raw


def _get_mapping(source: Mapping[str, Any], key: str, *, path: str) -> Mapping[str, Any]:
    raw = source.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise StateDecodeError(f"{path}.{key}: must be a mapping, got {raw!r}")
    return raw


def encode_state(state: ObjectState) -> dict[str, Any]:
    """The status fields of an ObjectState (camelCase, times as RFC 3339, None left out)."""
    encoded: dict[str, Any] = {"state": state.state.value}
    _put_time(encoded, "since", state.since)
    _put_time(encoded, "activeAt", state.active_at)
    _put_time(encoded, "cooldownUntil", state.cooldown_until)
    _put_time(encoded, "approvedAt", state.approved_at)
    _put_time(encoded, "approvalDeclinedAt", state.approval_declined_at)
    _put_time(encoded, "lastHoldingAt", state.last_holding_at)
    if state.attempts_not_acted:
        encoded["attemptsNotActed"] = state.attempts_not_acted
    encoded["reason"] = state.reason
    if state.entered_at:
        encoded["enteredAt"] = {name: format_time(at) for name, at in sorted(state.entered_at.items())}
    return encoded


def decode_state(status: Mapping[str, Any], *, path: str = "status") -> ObjectState:
    """The inverse of `encode_state`; raises StateDecodeError for anything it did not write."""
    raw_state = status.get("state")
    try:
        state = RuleState(str(raw_state))
    except ValueError:
        raise StateDecodeError(f"{path}.state: unknown state {raw_state!r}") from None
    entered = _get_mapping(status, "enteredAt", path=path)
    attempts = status.get("attemptsNotActed", 0)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise StateDecodeError(f"{path}.attemptsNotActed: must be a whole number of at least 0, got {attempts!r}")
    return ObjectState(
        state=state,
        since=_get_time(status, "since", path=path),
        active_at=_get_time(status, "activeAt", path=path),
        cooldown_until=_get_time(status, "cooldownUntil", path=path),
        approved_at=_get_time(status, "approvedAt", path=path),
        approval_declined_at=_get_time(status, "approvalDeclinedAt", path=path),
        reason=_get_string(status, "reason", path=path),
        last_holding_at=_get_time(status, "lastHoldingAt", path=path),
        attempts_not_acted=attempts,
        entered_at={
            str(name): at for name in entered if (at := _get_time(entered, name, path=f"{path}.enteredAt")) is not None
        },
    )


def encode_last_action(action: LastAction) -> dict[str, Any]:
    encoded: dict[str, Any] = {"name": action.name, "before": action.before, "after": action.after}
    _put_time(encoded, "startedAt", action.started_at)
    _put_time(encoded, "finishedAt", action.finished_at)
    encoded["outcome"] = action.outcome
    return encoded


def decode_last_action(raw: Mapping[str, Any], *, path: str = "status.lastAction") -> LastAction:
    return LastAction(
        name=_get_string(raw, "name", path=path),
        before=_get_string(raw, "before", path=path),
        after=_get_string(raw, "after", path=path),
        started_at=_get_time(raw, "startedAt", path=path),
        finished_at=_get_time(raw, "finishedAt", path=path),
        outcome=_get_string(raw, "outcome", path=path),
    )


def encode_in_flight(in_flight: InFlight) -> dict[str, Any]:
    encoded: dict[str, Any] = {"action": in_flight.action, "requestedAt": format_time(in_flight.requested_at)}
    if in_flight.detail:
        encoded["detail"] = dict(sorted(in_flight.detail.items()))
    return encoded


def decode_in_flight(raw: Mapping[str, Any], *, path: str = "status.inFlight") -> InFlight:
    requested_at = _get_time(raw, "requestedAt", path=path)
    if requested_at is None:
        raise StateDecodeError(f"{path}.requestedAt: missing")
    detail = _get_mapping(raw, "detail", path=path)
    return InFlight(
        action=_get_string(raw, "action", path=path),
        requested_at=requested_at,
        detail={str(key): _get_string(detail, key, path=f"{path}.detail") for key in detail},
    )


def encode_status(
    *,
    state: ObjectState | None,
    last_action: LastAction | None = None,
    in_flight: InFlight | None = None,
    recent_actions: Sequence[RecentAction] = (),
) -> dict[str, Any]:
    """A whole AutopilotRuleObject status."""
    encoded = encode_state(state) if state is not None else {}
    if last_action is not None:
        encoded["lastAction"] = encode_last_action(last_action)
    if recent_actions:
        encoded["recentActions"] = [
            {"name": action.name, "startedAt": format_time(action.started_at)} for action in recent_actions
        ]
    if in_flight is not None:
        encoded["inFlight"] = encode_in_flight(in_flight)
    return encoded


def decode_status(status: Mapping[str, Any] | None) -> StoredStatus:
    """The inverse of `encode_status`; an empty or missing status decodes to no state."""
    if not status:
        return StoredStatus()
    if not isinstance(status, Mapping):
        raise StateDecodeError(f"status: must be a mapping, got {status!r}")
    last_action = status.get("lastAction")
    in_flight = status.get("inFlight")
    for key, raw in (("lastAction", last_action), ("inFlight", in_flight)):
        if raw is not None and not isinstance(raw, Mapping):
            raise StateDecodeError(f"status.{key}: must be a mapping, got {raw!r}")
    return StoredStatus(
        state=decode_state(status) if "state" in status else None,
        last_action=decode_last_action(last_action) if last_action is not None else None,
        in_flight=decode_in_flight(in_flight) if in_flight is not None else None,
        recent_actions=_decode_recent(status.get("recentActions")),
    )


def _decode_recent(raw: Any) -> tuple[RecentAction, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise StateDecodeError(f"status.recentActions: must be a list, got {raw!r}")
    found = []
    for index, item in enumerate(raw):
        path = f"status.recentActions[{index}]"
        if not isinstance(item, Mapping):
            raise StateDecodeError(f"{path}: must be a mapping, got {item!r}")
        started_at = _get_time(item, "startedAt", path=path)
        if started_at is None:
            raise StateDecodeError(f"{path}.startedAt: missing")
        found.append(RecentAction(name=_get_string(item, "name", path=path), started_at=started_at))
    return tuple(found)


def _digest(*parts: str) -> str:
    return hashlib.sha1("\n".join(parts).encode(), usedforsecurity=False).hexdigest()


def object_name(*, rule: str, object_key: str, dry_run: bool = False) -> str:
    """The AutopilotRuleObject's name: `<rule>-<10 hex digits of sha1(rule, key)>`, a DNS subdomain;
    a dry-run agent's own object of the pair is `dry-run.<that>`.

    Rule names are DNS subdomains already (the loader checks); a long one is cut so that the whole
    name stays within 253 characters, and the hash keeps names of different pairs apart.
    """
    lead = f"{DRY_RUN_MODE}." if dry_run else ""
    room = _MAX_NAME - _NAME_HASH_LENGTH - 1 - len(lead)
    prefix = re.sub(r"[^a-z0-9.-]+", "-", rule.lower())[:room].strip(".-")
    suffix = _digest(rule, object_key)[:_NAME_HASH_LENGTH]
    return lead + (f"{prefix}-{suffix}" if prefix else suffix)


def label_value(text: str) -> str:
    """`text` when it is a valid label value; otherwise a readable, deterministic stand-in."""
    if _LABEL_VALUE.match(text):
        return text
    readable = re.sub(r"[^-A-Za-z0-9_.]+", "-", text)[:52].strip("-_.")
    suffix = _digest(text)[:_NAME_HASH_LENGTH]
    return f"{readable}-{suffix}" if readable else suffix


def split_object_key(*, object_kind: str, object_key: str) -> tuple[str, str]:
    """(namespace, name) of an object key; namespace is "" for cluster-scoped kinds."""
    if object_kind in NAMESPACED_KINDS and "/" in object_key:
        namespace, name = object_key.split("/", 1)
        return namespace, name
    return "", object_key


def object_manifest(*, rule: str, object_key: str, object_kind: str, dry_run: bool = False) -> dict[str, Any]:
    """A new AutopilotRuleObject, without status (the status subresource ignores it on create); a dry-run
    agent's is named apart, labelled MODE_LABEL=dry-run and says `mode: dry-run` in its spec."""
    namespace, name = split_object_key(object_kind=object_kind, object_key=object_key)
    labels = {
        RULE_LABEL: label_value(rule),
        OBJECT_KIND_LABEL: label_value(object_kind),
        OBJECT_NAME_LABEL: label_value(name),
    }
    if namespace:
        labels[OBJECT_NAMESPACE_LABEL] = label_value(namespace)
    mode = {"mode": DRY_RUN_MODE} if dry_run else {}
    if dry_run:
        labels[MODE_LABEL] = DRY_RUN_MODE
    return {
        "apiVersion": API_VERSION,
        "kind": OBJECT_KIND,
        "metadata": {"name": object_name(rule=rule, object_key=object_key, dry_run=dry_run), "labels": labels},
        "spec": {
            "rule": rule,
            "objectKind": object_kind,
            "objectKey": object_key,
            "objectNamespace": namespace,
            "objectName": name,
            **mode,
        },
    }
