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

In the agent, `load` and `action_history` read a watch-fed cache of the store's mode (`watched_objects`,
agent.adapters.kubernetes.cache): no LIST per cycle. What this store wrote, or read fresh (`status`,
a conflict's re-read), is kept in place of the cache's copy until the watch delivers it, so the store
never decides on a stale view of its own write. Without a cache (the CLI), they LIST.

"Based on" means: the status this store last read (`load`, `in_flight`) or wrote for the pair; for a
pair it has never seen, "nothing stored". A conflict (HTTP 409) is retried only when a fresh read
shows the status unchanged from that base (someone touched labels or annotations, not the state).

`lastHoldingAt` (when the conditions were last seen holding while `for` is waited for) moves every cycle
in `Triggered`; a write whose only change is that field is not sent. This store keeps the newer value in
memory and gives it back with the state (`load`, `status`) while the stored object is the one it based
that on (same resourceVersion); the next real change writes it. Another replica, or this agent after a
restart, reads the value of the last real write instead: older than the truth, so the time no agent saw
the conditions holding counts as a gap and `for` restarts when it is over the gap limit (fail closed).

A quiet object has no AutopilotRuleObject (agent.core.collection): `stored_pairs` lists every pair for the
collector, and `delete` removes one only while it is the object that was read (uid and resourceVersion
preconditions), so a state another writer just moved is never deleted.

`status.recentActions` keeps the last starts of actions on the pair; `action_history` lists them
for every pair at once, for the guardrail policy (agent.core.policy).

A dry-run agent (`StateStore(dry_run=True)`) keeps its states in objects of its own (named
`dry-run.<name>`, labelled `kafka-autopilot.io/mode=dry-run`, `spec.mode: dry-run`), and each store
reads only the objects of its own mode: what a dry-run agent would have done never puts an object in
cooldown or uses up a rate limit of a live agent started later, and the reverse.

The store reaches the apiserver only through the access layer (`KubeClient`'s custom-object calls);
the status encoding is `statuscodec`. Errors (agent.adapters.errors):

    KubeError                   the API server refused or could not be reached (`temporary` says
    │                           whether trying again later may help); chains the client's error
    ├── ConflictError
    │   └── StateConflictError  another writer changed the state this store based its change on
    │       └── ActionInFlightError an action is already recorded in flight for the pair
    └── StateDecodeError        a stored status this agent cannot read (also a ValueError)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent.adapters.errors import (
    ActionInFlightError,
    ConflictError,
    KubeError,
    NotFoundError,
    StateConflictError,
    StateDecodeError,
)
from agent.adapters.kubernetes.cache import ReadYourWrites, WatchCache, WatchSource, state_object_record
from agent.adapters.kubernetes.client import KubeClient
from agent.adapters.kubernetes.statuscodec import (
    DRY_RUN_MODE,
    MODE_LABEL,
    OBJECT_KIND,
    OBJECTS_PLURAL,
    RULE_LABEL,
    VERSION,
    ActionHistory,
    InFlight,
    LastAction,
    StoredStatus,
    acted,
    decode_status,
    encode_status,
    format_time,
    label_value,
    object_manifest,
    object_name,
    with_recent,
)
from agent.core.collection import StoredPair
from agent.core.policy import ActionStart
from agent.core.rules import API_GROUP
from agent.core.states import ObjectState

_MAX_WRITE_ATTEMPTS: Final = 5
_HOLDING: Final = "lastHoldingAt"
"""The status field not written on its own (see the module docstring)."""
_LIST_PAGE: Final = 500


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

    def __init__(
        self, *, kube: KubeClient, dry_run: bool = False, watched: WatchCache[Mapping[str, Any]] | None = None
    ) -> None:
        self._kube = kube
        self._dry_run = dry_run
        self._watched = watched
        """The objects of this store's mode, watch-fed (`watched_objects`); without it, `load` LISTs."""
        self._own: ReadYourWrites[Mapping[str, Any]] = ReadYourWrites(version_of=_version_text, cache=watched)
        self._seen: dict[tuple[str, str], _Snapshot] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._holding: dict[tuple[str, str], tuple[object, Any]] = {}
        """Pair -> (resourceVersion of its stored object, the newer `lastHoldingAt` not written to it)."""
        self._listed: dict[tuple[str, str], tuple[str, str]] = {}
        """Pair -> (uid, resourceVersion) as `stored_pairs` read it: the precondition of its `delete`."""

    # -- reads

    async def load(self, rule: str) -> dict[str, ObjectState]:
        """Object key -> state for every pair of `rule` that has a state; each becomes a write base."""
        found: dict[str, ObjectState] = {}
        for obj in await self._objects(rule):
            spec = obj.get("spec") or {}
            if spec.get("rule") != rule or not isinstance(spec.get("objectKey"), str):
                continue
            key = spec["objectKey"]
            self._seen[(rule, key)] = _Snapshot(obj=obj)
            stored = _decode(self._with_holding((rule, key), obj))
            if stored.state is not None:
                found[key] = stored.state
        for gone in [pair for pair in self._holding if pair[0] == rule and pair[1] not in found]:
            del self._holding[gone]
        return found

    async def status(self, rule: str, object_key: str) -> StoredStatus:
        """The pair's whole stored status (fresh from the API server); becomes the write base."""
        snapshot = await self._read(rule=rule, object_key=object_key)
        self._seen[(rule, object_key)] = snapshot
        return _decode(self._with_holding((rule, object_key), snapshot.obj))

    async def action_history(self) -> ActionHistory:
        """Every pair's recent action starts (and in-flight ones), all rules, in one list.

        Read-only: it does not change the write base of any pair, so a rule's own `load` stays the
        base of its writes. A status this agent cannot read raises StateDecodeError: the guardrails
        must not count from a partial history.
        """
        starts: list[ActionStart] = []
        in_flight: set[tuple[str, str]] = set()
        for rule, key, _obj, stored in await self._every_pair():
            for action in stored.recent_actions:
                starts.append(ActionStart(rule=rule, object=key, action=action.name, at=action.started_at))
            last = stored.last_action
            if (
                last is not None
                and last.started_at is not None
                and acted(last)
                and not any(action.started_at == last.started_at for action in stored.recent_actions)
            ):
                starts.append(ActionStart(rule=rule, object=key, action=last.name, at=last.started_at))
            if stored.in_flight is not None:
                in_flight.add((rule, key))
                flying = stored.in_flight
                starts.append(ActionStart(rule=rule, object=key, action=flying.action, at=flying.requested_at))
        return ActionHistory(starts=tuple(starts), in_flight=frozenset(in_flight))

    async def stored_pairs(self) -> list[StoredPair]:
        """Every pair this store's mode keeps, all rules, for the collector (agent.core.collection).

        Each becomes the base of a later `delete`. A status this agent cannot read raises StateDecodeError:
        nothing is collected from a partial view.
        """
        pairs: list[StoredPair] = []
        for rule, key, obj, stored in await self._every_pair():
            starts = [action.started_at for action in stored.recent_actions if action.started_at is not None]
            if stored.last_action is not None and stored.last_action.started_at is not None:
                starts.append(stored.last_action.started_at)
            metadata = obj.get("metadata") or {}
            self._listed[(rule, key)] = (str(metadata.get("uid") or ""), str(metadata.get("resourceVersion") or ""))
            pairs.append(
                StoredPair(
                    rule=rule,
                    object_key=key,
                    state=stored.state,
                    in_flight=stored.in_flight is not None,
                    last_started_at=max(starts, default=None),
                )
            )
        return pairs

    async def delete(self, rule: str, object_key: str) -> bool:
        """Delete the pair's AutopilotRuleObject as `stored_pairs` read it, on condition that it is still
        that object (uid and resourceVersion): a state another writer moved since raises StateConflictError
        and stays. True when deleted, False when it was gone already."""
        pair = (rule, object_key)
        read = self._listed.pop(pair, None)
        if read is None:
            raise self._conflict("not read by stored_pairs: nothing to base a delete on", rule, object_key)
        uid, resource_version = read
        async with self._locks.setdefault(pair, asyncio.Lock()):
            try:
                deleted = await self._kube.delete_custom_object(
                    group=API_GROUP,
                    version=VERSION,
                    plural=OBJECTS_PLURAL,
                    name=object_name(rule=rule, object_key=object_key, dry_run=self._dry_run),
                    uid=uid,
                    resource_version=resource_version,
                )
            except ConflictError as error:
                raise self._conflict("changed since it was read; not deleted", rule, object_key) from error
            self._seen.pop(pair, None)
            self._holding.pop(pair, None)
            if self._watched is not None:
                self._own.forget(object_name(rule=rule, object_key=object_key, dry_run=self._dry_run))
            return deleted

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
                flying = stored.in_flight
                raise ActionInFlightError(
                    f"action {flying.action!r} is already in flight since {format_time(flying.requested_at)}",
                    rule=rule,
                    object_key=object_key,
                    in_flight=flying,
                    server=self._kube.server,
                )
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
            wanted = encode_status(**_fields(change(_decode(self._with_holding(pair, base.obj)))))
            if base.obj is None and not wanted:
                return
            if base.obj is not None and _apart_from_holding(base.status) == _apart_from_holding(wanted):
                self._remember_holding(pair, base.obj, wanted.get(_HOLDING))
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
                    written = await self._kube.replace_custom_object_status(
                        group=API_GROUP, version=VERSION, plural=OBJECTS_PLURAL, body=body
                    )
                except NotFoundError as error:
                    raise self._conflict("the stored state was deleted meanwhile", rule, object_key) from error
                except ConflictError:
                    current = await self._read(rule=rule, object_key=object_key)
                    self._require_unchanged(base, current, rule=rule, object_key=object_key)
                    continue
                self._seen[pair] = _Snapshot(obj=written)
                self._note(written, based_on=current.obj)
                self._holding.pop(pair, None)
                return
            raise self._conflict("the stored object kept changing", rule, object_key)

    def _remember_holding(self, pair: tuple[str, str], stored: Mapping[str, Any], holding: Any) -> None:
        if (stored.get("status") or {}).get(_HOLDING) == holding:
            self._holding.pop(pair, None)
        else:
            self._holding[pair] = (_version(stored), holding)

    def _with_holding(self, pair: tuple[str, str], obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """`obj` with the newer `lastHoldingAt` this store kept for it, while it is the object that was based on."""
        remembered = self._holding.get(pair)
        if obj is None or remembered is None:
            return obj
        version, holding = remembered
        if _version(obj) != version:  # written since, by us or another writer: its own value is the truth
            del self._holding[pair]
            return obj
        status = _apart_from_holding(obj.get("status") or {})
        if holding is not None:
            status[_HOLDING] = holding
        return {**obj, "status": status}

    def _conflict(self, message: str, rule: str, object_key: str) -> StateConflictError:
        return StateConflictError(message, rule=rule, object_key=object_key, server=self._kube.server)

    def _require_unchanged(self, base: _Snapshot, current: _Snapshot, *, rule: str, object_key: str) -> None:
        """A retry is safe only if the stored status is still the one the change was based on."""
        if dict(current.status) != dict(base.status):
            stored = _decode(current.obj) if current.obj is not None else StoredStatus()
            now = stored.state.state.value if stored.state is not None else "no state"
            raise self._conflict(
                f"another writer changed the stored state (now {now}); not acting on a stale decision",
                rule,
                object_key,
            )

    async def _create(self, *, rule: str, object_key: str, object_kind: str) -> _Snapshot:
        manifest = object_manifest(rule=rule, object_key=object_key, object_kind=object_kind, dry_run=self._dry_run)
        try:
            created = await self._kube.create_custom_object(
                group=API_GROUP, version=VERSION, plural=OBJECTS_PLURAL, body=manifest
            )
        except ConflictError:
            return await self._read(rule=rule, object_key=object_key)
        self._note(created)
        return _Snapshot(obj=created)

    async def _read(self, *, rule: str, object_key: str) -> _Snapshot:
        name = object_name(rule=rule, object_key=object_key, dry_run=self._dry_run)
        try:
            obj = await self._kube.get_custom_object(group=API_GROUP, version=VERSION, plural=OBJECTS_PLURAL, name=name)
        except NotFoundError:
            return _NOTHING
        spec = obj.get("spec") or {}
        if spec.get("rule") != rule or spec.get("objectKey") != object_key:
            raise KubeError(
                f"kube-apiserver {self._kube.server}: {OBJECT_KIND} {name} belongs to {spec.get('rule')!r}: "
                f"{spec.get('objectKey')!r}, not to {rule!r}: {object_key!r} (name clash)",
                server=self._kube.server,
                verb="GET",
                resource=OBJECTS_PLURAL,
                name=name,
            )
        self._note(obj)
        return _Snapshot(obj=obj)

    def _note(self, obj: Mapping[str, Any], *, based_on: Mapping[str, Any] | None = None) -> None:
        """`obj` was just written (based on `based_on`) or read fresh: newer than the cache, until it shows it."""
        if self._watched is not None:
            self._own.note(_name_of(obj), obj, based_on=_version_text(based_on))

    async def _every_pair(self) -> list[tuple[str, str, Mapping[str, Any], StoredStatus]]:
        """(rule, object key, object, its decoded status) for every pair of this store's mode; raises
        StateDecodeError on a status this agent cannot read."""
        pairs = []
        for obj in await self._objects(None):
            spec = obj.get("spec") or {}
            rule, key = spec.get("rule"), spec.get("objectKey")
            if isinstance(rule, str) and isinstance(key, str):
                pairs.append((rule, key, obj, _decode(obj)))
        return pairs

    async def _objects(self, rule: str | None) -> list[Mapping[str, Any]]:
        """The pairs of `rule` (all rules when None) of this store's mode: from the watch-fed cache, with
        what this store wrote or read since in place of the cache's older copies; else by a LIST."""
        if self._watched is None:
            return list(await self._list(rule))
        await self._watched.wait_synced()
        found: list[Mapping[str, Any]] = []
        for name, cached in self._watched.items():
            obj = self._own.view(name, cached)
            if obj is not None and (rule is None or (obj.get("spec") or {}).get("rule") == rule):
                found.append(obj)
        for name, obj in list(self._own.pending().items()):
            if self._watched.get(name) is None and (rule is None or (obj.get("spec") or {}).get("rule") == rule):
                found.append(obj)
        return found

    async def _list(self, rule: str | None) -> list[dict[str, Any]]:
        """The pairs of `rule` (by label), or of every rule when None; this store's mode only."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        mode = _mode_selector(self._dry_run)
        selector = f"{RULE_LABEL}={label_value(rule)},{mode}" if rule is not None else mode
        while True:
            page = await self._kube.list_custom_objects(
                group=API_GROUP,
                version=VERSION,
                plural=OBJECTS_PLURAL,
                label_selector=selector,
                limit=_LIST_PAGE,
                continue_token=token,
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items


def watched_objects(source: WatchSource, *, dry_run: bool) -> WatchCache[Mapping[str, Any]]:
    """The watch-fed cache of the AutopilotRuleObjects of one mode (the selector `_list` uses)."""
    return WatchCache(
        source=source, kind="autopilotruleobjects", label_selector=_mode_selector(dry_run), decode=state_object_record
    )


def _mode_selector(dry_run: bool) -> str:
    return f"{MODE_LABEL}={DRY_RUN_MODE}" if dry_run else f"{MODE_LABEL}!={DRY_RUN_MODE}"


def _name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _version_text(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _decode(obj: Mapping[str, Any] | None) -> StoredStatus:
    if obj is None:
        return StoredStatus()
    try:
        return decode_status(obj.get("status"))
    except StateDecodeError as error:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise StateDecodeError(f"{OBJECT_KIND} {name}: {error}") from None


def _apart_from_holding(status: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key != _HOLDING}


def _version(obj: Mapping[str, Any]) -> object:
    return (obj.get("metadata") or {}).get("resourceVersion")


def _fields(stored: StoredStatus) -> dict[str, Any]:
    return {
        "state": stored.state,
        "last_action": stored.last_action,
        "in_flight": stored.in_flight,
        "recent_actions": stored.recent_actions,
    }
