"""Per-(rule, object) state kept in the Kubernetes API, so that no cause is ever acted on twice.

Why this module exists: the state machine (agent.core.states) decides when to act, but its decisions
are only safe if the state they start from survives a restart and is shared by every replica. Here
each (rule, object) pair is one cluster-scoped `AutopilotRuleObject`, and the state lives in its
status. Every status write carries the resourceVersion this store last read, so of two replicas
that start from the same state, exactly one write succeeds and the other gets `StateConflictError`:
its decision was made on a state that no longer exists, and it must not act on it.

Before an action is applied, `record_in_flight` writes what is about to happen into the status (a
guard, like pvc-autoresizer's annotation). An agent that restarts mid-action finds that record with
`in_flight` and verifies the action's effect instead of applying it a second time; a second replica
trying to record the same action gets `ActionInFlightError`.

"Based on" means: the status this store last read (`load`, `in_flight`) or wrote for the pair; for a
pair it has never seen, "nothing stored". A conflict (HTTP 409) is retried only when a fresh read
shows the status unchanged from that base (someone touched labels or annotations, not the state).

Encoding: times are RFC 3339 strings in UTC with the fraction of a second written out exactly
(`format_time`): the decimal digits of the shortest repr of the float, however many that takes.
They read well with kubectl, sort as text, and `parse_time(format_time(t)) == t` for every finite t
between the years 1 and 9999. Absent (None) fields are left out of the status.

`status.recentActions` keeps the last RECENT_ACTIONS starts of actions on the pair (name and time);
`action_history` lists them for every pair at once, for the guardrail policy (agent.core.policy).

The module also installs the three CRDs (`install_crds`), reads AutopilotRules stored in the cluster
as YAML text for the rule loader (`list_cluster_rules`), and writes their `Valid` condition
(`set_rule_status`).

Exceptions:

    StateStoreError
    ├── StateConflictError      another writer changed the state this store based its change on
    │   └── ActionInFlightError an action is already recorded in flight for the pair
    ├── StateDecodeError        a stored status this agent cannot read (also a ValueError)
    └── StateStoreApiError      the API server refused or could not be reached (`temporary` says
                                whether trying again later may help); chains the client's error
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib.resources
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Final

import aiohttp
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent.core.diagnostics import Problem, Severity
from agent.core.policy import ActionStart
from agent.core.rules import API_GROUP, API_VERSION, RULE_KIND
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

CRD_FILES: Final = ("autopilotrules.yaml", "autopilotruleobjects.yaml", "actionapprovals.yaml")
CRD_NAMES: Final = tuple(f"{file.removesuffix('.yaml')}.{API_GROUP}" for file in CRD_FILES)

NAMESPACED_KINDS: Final = frozenset({"PersistentVolumeClaim", "KafkaBroker", "Pod"})
"""Object kinds whose key is `namespace/name`; for the others the key is the name."""

CLUSTER_RULE_FILE_PREFIX: Final = "cluster:autopilotrule/"
VALID_CONDITION: Final = "Valid"

_MAX_WRITE_ATTEMPTS: Final = 5
RECENT_ACTIONS: Final = 32
"""How many action starts each pair keeps in status.recentActions (the oldest are dropped)."""
_LIST_PAGE: Final = 500
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TIME: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")
_LABEL_VALUE: Final = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NAME_HASH_LENGTH: Final = 10
_MAX_NAME: Final = 253


# --- errors -----------------------------------------------------------------------------------------


class StateStoreError(Exception):
    """Base of this module's errors."""


class StateConflictError(StateStoreError):
    """The stored state is no longer the one this store based its change on: another replica (or
    an earlier life of this agent) moved it. The caller must not act on its decision."""

    def __init__(self, message: str, *, rule: str, object_key: str) -> None:
        super().__init__(f"{rule}: {object_key}: {message}")
        self.rule = rule
        self.object_key = object_key


class ActionInFlightError(StateConflictError):
    """An action is already recorded in flight for the pair: verify it, do not apply another."""

    def __init__(self, *, rule: str, object_key: str, in_flight: InFlight) -> None:
        super().__init__(
            f"action {in_flight.action!r} is already in flight since {format_time(in_flight.requested_at)}",
            rule=rule,
            object_key=object_key,
        )
        self.in_flight = in_flight


class StateDecodeError(StateStoreError, ValueError):
    """A stored status this agent cannot read; never treated as "no state"."""


class StateStoreApiError(StateStoreError):
    """The API server refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def temporary(self) -> bool:
        """True when the same request may succeed later (no answer, throttled, server error)."""
        return self.status is None or self.status == 429 or self.status >= 500


def _api_error(error: BaseException, what: str) -> StateStoreApiError:
    if isinstance(error, ApiException):
        reason = f"HTTP {error.status} {error.reason}"
        return StateStoreApiError(f"{what}: {reason}", status=int(error.status) if error.status else None)
    return StateStoreApiError(f"{what}: {type(error).__name__}: {error}", status=None)


_CLIENT_ERRORS: Final = (ApiException, aiohttp.ClientError, TimeoutError)


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


def with_recent(recent: Sequence[RecentAction], last_action: LastAction | None) -> tuple[RecentAction, ...]:
    """`recent` with `last_action`'s start added (once), keeping the last RECENT_ACTIONS."""
    if last_action is None or last_action.started_at is None:
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
    return ObjectState(
        state=state,
        since=_get_time(status, "since", path=path),
        active_at=_get_time(status, "activeAt", path=path),
        cooldown_until=_get_time(status, "cooldownUntil", path=path),
        approved_at=_get_time(status, "approvedAt", path=path),
        approval_declined_at=_get_time(status, "approvalDeclinedAt", path=path),
        reason=_get_string(status, "reason", path=path),
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


def object_name(*, rule: str, object_key: str) -> str:
    """The AutopilotRuleObject's name: `<rule>-<10 hex digits of sha1(rule, key)>`, a DNS subdomain.

    Rule names are DNS subdomains already (the loader checks); a long one is cut so that the whole
    name stays within 253 characters, and the hash keeps names of different pairs apart.
    """
    prefix = re.sub(r"[^a-z0-9.-]+", "-", rule.lower())[: _MAX_NAME - _NAME_HASH_LENGTH - 1].strip(".-")
    suffix = _digest(rule, object_key)[:_NAME_HASH_LENGTH]
    return f"{prefix}-{suffix}" if prefix else suffix


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


def object_manifest(*, rule: str, object_key: str, object_kind: str) -> dict[str, Any]:
    """A new AutopilotRuleObject, without status (the status subresource ignores it on create)."""
    namespace, name = split_object_key(object_kind=object_kind, object_key=object_key)
    labels = {
        RULE_LABEL: label_value(rule),
        OBJECT_KIND_LABEL: label_value(object_kind),
        OBJECT_NAME_LABEL: label_value(name),
    }
    if namespace:
        labels[OBJECT_NAMESPACE_LABEL] = label_value(namespace)
    return {
        "apiVersion": API_VERSION,
        "kind": OBJECT_KIND,
        "metadata": {"name": object_name(rule=rule, object_key=object_key), "labels": labels},
        "spec": {
            "rule": rule,
            "objectKind": object_kind,
            "objectKey": object_key,
            "objectNamespace": namespace,
            "objectName": name,
        },
    }


# --- CRDs -------------------------------------------------------------------------------------------


def crd_manifests() -> list[dict[str, Any]]:
    """The three CRDs, as shipped in agent/resources/crds/."""
    folder = importlib.resources.files("agent").joinpath("resources", "crds")
    manifests = []
    for file in CRD_FILES:
        loaded = yaml.safe_load(folder.joinpath(file).read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise StateStoreError(f"agent/resources/crds/{file}: not a manifest")
        manifests.append(loaded)
    return manifests


def _is_established(crd: Any) -> bool:
    conditions = getattr(getattr(crd, "status", None), "conditions", None) or []
    return any(condition.type == "Established" and condition.status == "True" for condition in conditions)


async def install_crds(api_client: client.ApiClient, *, timeout_seconds: float = 60.0) -> None:
    """Create or replace the three CRDs and wait until the API server serves each of them."""
    api = client.ApiextensionsV1Api(api_client)
    try:
        async with asyncio.timeout(timeout_seconds):
            for manifest in crd_manifests():
                await _apply_crd(api, manifest)
            for name in CRD_NAMES:
                while not _is_established(await api.read_custom_resource_definition(name)):
                    await asyncio.sleep(0.2)
    except TimeoutError:
        raise StateStoreApiError(f"CRDs not established within {timeout_seconds:.0f}s", status=None) from None
    except _CLIENT_ERRORS as error:
        raise _api_error(error, "installing the CRDs") from error


async def _apply_crd(api: client.ApiextensionsV1Api, manifest: Mapping[str, Any]) -> None:
    # The client sends a plain dict as it is; its stubs ask for the model class.
    name = manifest["metadata"]["name"]
    new: Any = manifest
    for _ in range(_MAX_WRITE_ATTEMPTS):
        try:
            existing = await api.read_custom_resource_definition(name)
        except ApiException as error:
            if error.status != 404:
                raise
            try:
                await api.create_custom_resource_definition(new)
                return
            except ApiException as create_error:
                if create_error.status == 409:
                    continue
                raise
        body: Any = copy.deepcopy(dict(manifest))
        body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        try:
            await api.replace_custom_resource_definition(name, body)
            return
        except ApiException as error:
            if error.status != 409:
                raise
    raise StateStoreApiError(f"CRD {name} kept changing while being replaced", status=409)


# --- the state store --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Snapshot:
    """An AutopilotRuleObject as last read or written; `obj` None means "nothing stored"."""

    obj: Mapping[str, Any] | None = None

    @property
    def status(self) -> Mapping[str, Any]:
        return (self.obj or {}).get("status") or {}


_NOTHING: Final = _Snapshot()

StatusChange = Callable[[StoredStatus], StoredStatus]


class StateStore:
    """Loads and saves the per-(rule, object) states of one agent; see the module docstring.

    One instance stands for one writer: it remembers the status it last read or wrote for each
    pair, and every write is based on it. Writes for one pair are serialised within the instance.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = client.CustomObjectsApi(api_client)
        self._seen: dict[tuple[str, str], _Snapshot] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- reads

    async def load(self, rule: str) -> dict[str, ObjectState]:
        """Object key -> state for every pair of `rule` that has a state; each becomes a write base."""
        found: dict[str, ObjectState] = {}
        for obj in await self._list(rule):
            spec = obj.get("spec") or {}
            if spec.get("rule") != rule or not isinstance(spec.get("objectKey"), str):
                continue
            key = spec["objectKey"]
            self._seen[(rule, key)] = _Snapshot(obj=obj)
            stored = _decode(obj)
            if stored.state is not None:
                found[key] = stored.state
        return found

    async def status(self, rule: str, object_key: str) -> StoredStatus:
        """The pair's whole stored status (fresh from the API server); becomes the write base."""
        snapshot = await self._read(rule=rule, object_key=object_key)
        self._seen[(rule, object_key)] = snapshot
        return _decode(snapshot.obj) if snapshot.obj is not None else StoredStatus()

    async def action_history(self) -> ActionHistory:
        """Every pair's recent action starts (and in-flight ones), all rules, in one list.

        Read-only: it does not change the write base of any pair, so a rule's own `load` stays the
        base of its writes. A status this agent cannot read raises StateDecodeError: the guardrails
        must not count from a partial history.
        """
        starts: list[ActionStart] = []
        in_flight: set[tuple[str, str]] = set()
        for obj in await self._list(None):
            spec = obj.get("spec") or {}
            rule, key = spec.get("rule"), spec.get("objectKey")
            if not isinstance(rule, str) or not isinstance(key, str):
                continue
            stored = _decode(obj)
            for action in stored.recent_actions:
                starts.append(ActionStart(rule=rule, object=key, action=action.name, at=action.started_at))
            last = stored.last_action
            if (
                last is not None
                and last.started_at is not None
                and not any(action.started_at == last.started_at for action in stored.recent_actions)
            ):
                starts.append(ActionStart(rule=rule, object=key, action=last.name, at=last.started_at))
            if stored.in_flight is not None:
                in_flight.add((rule, key))
                flying = stored.in_flight
                starts.append(ActionStart(rule=rule, object=key, action=flying.action, at=flying.requested_at))
        return ActionHistory(starts=tuple(starts), in_flight=frozenset(in_flight))

    async def in_flight(self, rule: str, object_key: str) -> InFlight | None:
        """The action recorded in flight for the pair, if any (fresh from the API server)."""
        return (await self.status(rule, object_key)).in_flight

    # -- writes

    async def save(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        state: ObjectState,
        last_action: LastAction | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        """Store `state`; `last_action` / `in_flight` replace the stored ones when given, else stay.

        Raises StateConflictError when the stored state is not the one this store based it on.
        """

        def change(stored: StoredStatus) -> StoredStatus:
            return StoredStatus(
                state=state,
                last_action=last_action if last_action is not None else stored.last_action,
                in_flight=in_flight if in_flight is not None else stored.in_flight,
                recent_actions=with_recent(stored.recent_actions, last_action),
            )

        await self._write(rule=rule, object_key=object_key, object_kind=object_kind, change=change)

    async def record_in_flight(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        action: str,
        requested_at: float,
        detail: Mapping[str, str] | None = None,
        state: ObjectState | None = None,
    ) -> InFlight:
        """Record, before applying it, that `action` is about to run (with `state`, when given).

        Raises ActionInFlightError if an action is already recorded for the pair, and
        StateConflictError if the state moved: in both cases the caller must not apply the action.
        """
        record = InFlight(action=action, requested_at=requested_at, detail=dict(detail or {}))

        def change(stored: StoredStatus) -> StoredStatus:
            if stored.in_flight is not None:
                raise ActionInFlightError(rule=rule, object_key=object_key, in_flight=stored.in_flight)
            return StoredStatus(
                state=state if state is not None else stored.state,
                last_action=stored.last_action,
                in_flight=record,
                recent_actions=stored.recent_actions,
            )

        await self._write(rule=rule, object_key=object_key, object_kind=object_kind, change=change)
        return record

    async def clear_in_flight(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        state: ObjectState | None = None,
        last_action: LastAction | None = None,
    ) -> None:
        """Drop the in-flight record once the action was verified (or found failed), storing the
        outcome's `state` and `last_action` in the same write when given."""

        def change(stored: StoredStatus) -> StoredStatus:
            return StoredStatus(
                state=state if state is not None else stored.state,
                last_action=last_action if last_action is not None else stored.last_action,
                in_flight=None,
                recent_actions=with_recent(stored.recent_actions, last_action),
            )

        await self._write(rule=rule, object_key=object_key, object_kind=object_kind, change=change)

    # -- internals

    async def _write(self, *, rule: str, object_key: str, object_kind: str, change: StatusChange) -> None:
        pair = (rule, object_key)
        async with self._locks.setdefault(pair, asyncio.Lock()):
            base = self._seen.get(pair, _NOTHING)
            wanted = encode_status(**_fields(change(_decode(base.obj) if base.obj is not None else StoredStatus())))
            if dict(base.status) == wanted and (base.obj is not None or not wanted):
                return
            current = base
            for _ in range(_MAX_WRITE_ATTEMPTS):
                if current.obj is None:
                    current = await self._create(rule=rule, object_key=object_key, object_kind=object_kind)
                    self._require_unchanged(base, current, rule=rule, object_key=object_key)
                    if current.obj is None:
                        continue
                body = {**current.obj, "status": wanted}
                try:
                    written = await self._api.replace_cluster_custom_object_status(
                        API_GROUP, VERSION, OBJECTS_PLURAL, body["metadata"]["name"], body
                    )
                except ApiException as error:
                    if error.status == 404:
                        raise StateConflictError(
                            "the stored state was deleted meanwhile", rule=rule, object_key=object_key
                        ) from error
                    if error.status != 409:
                        raise _api_error(error, f"writing the state of {rule}: {object_key}") from error
                    current = await self._read(rule=rule, object_key=object_key)
                    self._require_unchanged(base, current, rule=rule, object_key=object_key)
                    continue
                except _CLIENT_ERRORS as error:
                    raise _api_error(error, f"writing the state of {rule}: {object_key}") from error
                self._seen[pair] = _Snapshot(obj=written)
                return
            raise StateConflictError("the stored object kept changing", rule=rule, object_key=object_key)

    @staticmethod
    def _require_unchanged(base: _Snapshot, current: _Snapshot, *, rule: str, object_key: str) -> None:
        """A retry is safe only if the stored status is still the one the change was based on."""
        if dict(current.status) != dict(base.status):
            stored = _decode(current.obj) if current.obj is not None else StoredStatus()
            now = stored.state.state.value if stored.state is not None else "no state"
            raise StateConflictError(
                f"another writer changed the stored state (now {now}); not acting on a stale decision",
                rule=rule,
                object_key=object_key,
            )

    async def _create(self, *, rule: str, object_key: str, object_kind: str) -> _Snapshot:
        manifest = object_manifest(rule=rule, object_key=object_key, object_kind=object_kind)
        try:
            created = await self._api.create_cluster_custom_object(API_GROUP, VERSION, OBJECTS_PLURAL, manifest)
        except ApiException as error:
            if error.status != 409:
                raise _api_error(error, f"creating the state of {rule}: {object_key}") from error
            return await self._read(rule=rule, object_key=object_key)
        except _CLIENT_ERRORS as error:
            raise _api_error(error, f"creating the state of {rule}: {object_key}") from error
        return _Snapshot(obj=created)

    async def _read(self, *, rule: str, object_key: str) -> _Snapshot:
        name = object_name(rule=rule, object_key=object_key)
        try:
            obj = await self._api.get_cluster_custom_object(API_GROUP, VERSION, OBJECTS_PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return _NOTHING
            raise _api_error(error, f"reading the state of {rule}: {object_key}") from error
        except _CLIENT_ERRORS as error:
            raise _api_error(error, f"reading the state of {rule}: {object_key}") from error
        spec = obj.get("spec") or {}
        if spec.get("rule") != rule or spec.get("objectKey") != object_key:
            raise StateStoreError(
                f"{OBJECT_KIND} {name} belongs to {spec.get('rule')!r}: {spec.get('objectKey')!r}, "
                f"not to {rule!r}: {object_key!r} (name clash)"
            )
        return _Snapshot(obj=obj)

    async def _list(self, rule: str | None) -> list[dict[str, Any]]:
        """The pairs of `rule` (by label), or of every rule when None."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        try:
            while True:
                selector = f"{RULE_LABEL}={label_value(rule)}" if rule is not None else ""
                if token is None:
                    page = await self._api.list_cluster_custom_object(
                        API_GROUP, VERSION, OBJECTS_PLURAL, label_selector=selector, limit=_LIST_PAGE
                    )
                else:
                    page = await self._api.list_cluster_custom_object(
                        API_GROUP, VERSION, OBJECTS_PLURAL, label_selector=selector, limit=_LIST_PAGE, _continue=token
                    )
                items.extend(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    return items
        except _CLIENT_ERRORS as error:
            raise _api_error(error, f"listing the states of {rule or 'every rule'}") from error


def _decode(obj: Mapping[str, Any] | None) -> StoredStatus:
    if obj is None:
        return StoredStatus()
    try:
        return decode_status(obj.get("status"))
    except StateDecodeError as error:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise StateDecodeError(f"{OBJECT_KIND} {name}: {error}") from None


def _fields(stored: StoredStatus) -> dict[str, Any]:
    return {
        "state": stored.state,
        "last_action": stored.last_action,
        "in_flight": stored.in_flight,
        "recent_actions": stored.recent_actions,
    }


# --- AutopilotRules stored in the cluster -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClusterRule:
    """One AutopilotRule object, as YAML text for the rule loader."""

    name: str
    text: str
    generation: int | None
    """metadata.generation when listed; pass it to `set_rule_status` as observedGeneration."""

    @property
    def file(self) -> str:
        return cluster_rule_file(self.name)


def cluster_rule_file(name: str) -> str:
    """The `file` problems of a cluster rule are reported under."""
    return f"{CLUSTER_RULE_FILE_PREFIX}{name}"


def cluster_rule_text(obj: Mapping[str, Any]) -> str:
    """YAML for the loader: apiVersion, kind, metadata (name, labels) and spec; server fields left out."""
    metadata = obj.get("metadata") or {}
    kept = {key: metadata[key] for key in ("name", "labels") if metadata.get(key)}
    document = {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", RULE_KIND),
        "metadata": kept,
        "spec": obj.get("spec"),
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


async def read_cluster_rules(api_client: client.ApiClient) -> list[ClusterRule]:
    """Every AutopilotRule in the cluster, sorted by name."""
    api = client.CustomObjectsApi(api_client)
    try:
        listed = await api.list_cluster_custom_object(API_GROUP, VERSION, RULES_PLURAL)
    except _CLIENT_ERRORS as error:
        raise _api_error(error, "listing AutopilotRules") from error
    rules = [
        ClusterRule(
            name=str(obj["metadata"]["name"]),
            text=cluster_rule_text(obj),
            generation=obj["metadata"].get("generation"),
        )
        for obj in listed.get("items") or []
    ]
    return sorted(rules, key=lambda rule: rule.name)


async def list_cluster_rules(api_client: client.ApiClient) -> list[tuple[str, str]]:
    """(name, YAML text) of every AutopilotRule in the cluster; parse each with
    `parse_rules(text, file=cluster_rule_file(name))`."""
    return [(rule.name, rule.text) for rule in await read_cluster_rules(api_client)]


def rule_status(
    *,
    current: Mapping[str, Any] | None,
    problems: Sequence[Problem],
    generation: int | None,
    now: float,
    objects: int | None = None,
    evaluated_at: float | None = None,
) -> dict[str, Any]:
    """An AutopilotRule's new status (pure): the Valid condition, keeping its transition time when
    its status did not change, and the other fields that are given."""
    status = dict(current or {})
    errors = [problem for problem in problems if problem.severity is Severity.ERROR]
    valid = "False" if errors else "True"
    previous = next(
        (cond for cond in status.get("conditions") or [] if cond.get("type") == VALID_CONDITION),
        None,
    )
    changed = previous is None or previous.get("status") != valid
    condition: dict[str, Any] = {
        "type": VALID_CONDITION,
        "status": valid,
        "reason": "InvalidRule" if errors else "Loaded",
        "message": "\n".join(str(problem) for problem in problems),
        "lastTransitionTime": format_time(math.floor(now))
        if changed
        else (previous or {}).get("lastTransitionTime", format_time(math.floor(now))),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
        status["observedGeneration"] = generation
    others = [cond for cond in status.get("conditions") or [] if cond.get("type") != VALID_CONDITION]
    status["conditions"] = [condition, *others]
    if objects is not None:
        status["objects"] = objects
    if evaluated_at is not None:
        status["lastEvaluated"] = format_time(math.floor(evaluated_at))
    return status


async def set_rule_status(
    api_client: client.ApiClient,
    *,
    name: str,
    problems: Sequence[Problem],
    generation: int | None,
    now: float,
    objects: int | None = None,
    evaluated_at: float | None = None,
) -> None:
    """Write an AutopilotRule's Valid condition (False with every problem when the loader found
    errors) and, when given, its object count and last evaluation time.

    Informational only, so a conflict is simply retried on a fresh read.
    """
    api = client.CustomObjectsApi(api_client)
    what = f"writing the status of AutopilotRule {name}"
    for _ in range(_MAX_WRITE_ATTEMPTS):
        try:
            obj = await api.get_cluster_custom_object(API_GROUP, VERSION, RULES_PLURAL, name)
            obj["status"] = rule_status(
                current=obj.get("status"),
                problems=problems,
                generation=generation,
                now=now,
                objects=objects,
                evaluated_at=evaluated_at,
            )
            await api.replace_cluster_custom_object_status(API_GROUP, VERSION, RULES_PLURAL, name, obj)
            return
        except ApiException as error:
            if error.status != 409:
                raise _api_error(error, what) from error
        except _CLIENT_ERRORS as error:
            raise _api_error(error, what) from error
    raise StateStoreApiError(f"{what}: kept conflicting", status=409)
