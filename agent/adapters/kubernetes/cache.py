"""Watch-fed caches: the agent lists each kind once, then follows its changes, and cycles read memory.

Why this module exists: a cycle that LISTs every PVC, pod, node and state object of the cluster on
every poll makes the apiserver's load grow with the cluster, not with Kafka. Here each kind the rules
need is listed once and then watched (`KubeClient.watch`), narrowed server-side by the rules' label
selectors (one watch per distinct selector), and kept as small decoded records (`PvcInfo`, `PodInfo`,
`NodeInfo`, ...: decoded once per event, never the raw JSON). A steady cycle makes no request to read
what it looks at.

- `WatchCache` is one kind (and selector): key -> record, `synced` once its first list arrived, the
  whole view replaced on RESYNC (the apiserver answered 410 Gone: the watch listed again), and
  listeners told of each change (agent.runtime.watches triggers rules from them). A permanent error
  (403: the agent may not list or watch the kind) fails the cache: `problem` names the server and the
  request that failed, and every read of it raises. It is tried again, with a fresh list, after pauses
  of 5 s doubling to 2 minutes (`FAILED_WATCH_RETRY`), so a permission granted later is picked up
  without a restart; the cache is readable again once that list is complete.
- `ClusterCaches` is the inventory's `ClusterReader` (agent.runtime.inventory) over the caches the
  rules need; `problem_for(rule)` says why a rule must not evaluate yet (not synced, or failed), so a
  cycle never decides on an empty view (fail closed).
- `ReadYourWrites` keeps what this process last wrote (or read fresh) for an object until the cache
  has caught up with it, so a store never decides on the stale cached copy of its own write.

Writes do not go through the caches: they carry the resourceVersion they are based on, and a conflict
re-reads that one object (a GET). Destructive steps re-check the live object with a GET too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import structlog

from agent.adapters.clock import Clock
from agent.adapters.errors import KubeError, NotFoundError
from agent.adapters.kubernetes.client import (
    NodeInfo,
    PodInfo,
    PvcInfo,
    StorageClassInfo,
    WatchEvent,
    WatchKind,
    _epoch,
    _strings,
)
from agent.adapters.retry import RetryPolicy, retrying
from agent.core.rules import Rule, TargetKind

__all__ = [
    "CacheChange",
    "CacheNotSyncedError",
    "ClusterCaches",
    "NodeLease",
    "ReadYourWrites",
    "WatchCache",
    "WatchSource",
    "not_synced",
    "run_caches",
    "state_object_record",
]

R = TypeVar("R")
ChangeType = Literal["ADDED", "MODIFIED", "DELETED", "RESYNC", "SYNCED", "FAILED"]
NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
_log = structlog.get_logger("kafka_autopilot.kubernetes")


class WatchSource(Protocol):
    """What a cache needs of `KubeClient`: its name, and `watch()`."""

    @property
    def server(self) -> str: ...

    @property
    def clock(self) -> Clock:
        """What a failed watch waits on before it is tried again."""
        ...

    def watch(
        self,
        kind: WatchKind,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        synced_event: bool = False,
    ) -> AsyncIterator[WatchEvent]: ...


class CacheNotSyncedError(RuntimeError):
    """A read of a cache that has not listed yet: deciding on its empty view would be wrong."""


@dataclass(frozen=True, kw_only=True)
class CacheChange(Generic[R]):
    """One change of a cache's view. RESYNC: the whole view was replaced (key ""); SYNCED: the first
    list is in; FAILED: the watch hit a permanent error (`WatchCache.problem`)."""

    type: ChangeType
    key: str
    old: R | None
    new: R | None


@dataclass(frozen=True, kw_only=True)
class NodeLease:
    """A kubelet's Lease in kube-node-lease: when it was last renewed (epoch seconds)."""

    node: str
    renewed: float | None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> NodeLease:
        return cls(
            node=str((raw.get("metadata") or {}).get("name") or ""),
            renewed=_epoch((raw.get("spec") or {}).get("renewTime")),
        )


def namespace_labels_record(raw: Mapping[str, Any]) -> Mapping[str, str]:
    return _strings((raw.get("metadata") or {}).get("labels"))


def state_object_record(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """An AutopilotRuleObject as the state store needs it (what it writes back: metadata, spec, status),
    without `managedFields`, the bulk of a small object."""
    metadata = {key: value for key, value in (raw.get("metadata") or {}).items() if key != "managedFields"}
    return {**raw, "metadata": metadata}


def object_key(raw: Mapping[str, Any]) -> str:
    """`namespace/name` for namespaced objects, `name` for cluster-scoped ones."""
    metadata = raw.get("metadata") or {}
    namespace, name = metadata.get("namespace"), str(metadata.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


FAILED_WATCH_RETRY: Final = RetryPolicy(attempts=None, base_seconds=5.0, max_seconds=120.0, jitter_seconds=1.0)
"""How a watch that failed for good (403, the kind not served) is tried again: for ever, 5 s doubling to
2 minutes, plus jitter. Each try is one LIST of the kind, so a refused watch costs the apiserver a
refused request every 2 minutes at most."""


def _is_kube_error(error: BaseException) -> bool:
    return isinstance(error, KubeError)


class WatchCache(Generic[R]):
    """One kind (of one namespace, narrowed by selectors), listed once and then watched; see the module docstring."""

    def __init__(
        self,
        *,
        source: WatchSource,
        kind: WatchKind,
        decode: Callable[[Mapping[str, Any]], R],
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self._source = source
        self.kind = kind
        self._decode = decode
        self.namespace = namespace
        self.label_selector = label_selector or None
        self.field_selector = field_selector or None
        self._records: dict[str, R] = {}
        self._synced = asyncio.Event()
        self._listeners: list[Callable[[CacheChange[R]], None]] = []
        self.failure: KubeError | None = None

    @property
    def name(self) -> str:
        """How health and readiness name this cache: `pvcs (app=kafka)`, `leases in kube-node-lease`."""
        narrowed = ", ".join(filter(None, [self.label_selector, self.field_selector]))
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.kind}{where}" + (f" ({narrowed})" if narrowed else "")

    @property
    def synced(self) -> bool:
        return self._synced.is_set() and self.failure is None

    @property
    def problem(self) -> str | None:
        """None when the cache can be read; else why not."""
        if self.failure is not None:
            return f"watch of {self.name} failed: {self.failure}"
        if not self._synced.is_set():
            return f"cache of {self.name} not synced yet"
        return None

    def subscribe(self, listener: Callable[[CacheChange[R]], None]) -> None:
        """Call `listener` on every change, in the watch's task (it must not block)."""
        self._listeners.append(listener)

    def records(self) -> Collection[R]:
        """Every record; raises while the cache cannot be read (not synced, or failed)."""
        self.require_readable()
        return self._records.values()

    def items(self) -> Collection[tuple[str, R]]:
        """(key, record) for every object; raises like `records`."""
        self.require_readable()
        return self._records.items()

    def get(self, key: str) -> R | None:
        """The record of `namespace/name` (or `name`), None when the cache has none; raises like `records`."""
        self.require_readable()
        return self._records.get(key)

    def require_readable(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self._synced.is_set():
            raise CacheNotSyncedError(f"kube-apiserver {self._source.server}: cache of {self.name} not synced yet")

    async def wait_synced(self) -> None:
        """Return once the first list is in; raise the watch's permanent error if it failed first."""
        if not self._synced.is_set():
            await self._synced.wait()
        if self.failure is not None:
            raise self.failure

    async def run(self) -> None:
        """Follow the kind until cancelled (or until its source is closed). A permanent error fails the
        cache (see `problem`) until a watch tried again after FAILED_WATCH_RETRY's pause has listed."""
        async for attempt in retrying(FAILED_WATCH_RETRY, clock=self._source.clock, retry_on=_is_kube_error):
            with attempt:
                await self._follow()

    async def _follow(self) -> None:
        if self.failure is not None:
            self._records = {}  # a view from before the failure: the new list rebuilds it
        events = self._source.watch(
            self.kind,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            synced_event=True,
        )
        try:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    self.apply(event)
        except KubeError as error:
            if self.failure is None:
                _log.error("watch failed; the rules that need it hold", cache=self.name, error=str(error))
            else:
                _log.info("watch still failing; tried again later", cache=self.name, error=str(error))
            self.failure = error
            self._synced.set()  # wakes `wait_synced`, which raises the failure
            self._tell(CacheChange(type="FAILED", key="", old=None, new=None))
            raise

    def apply(self, event: WatchEvent) -> None:
        """Take one watch event into the view (decoding the object once) and tell the listeners."""
        if event.type == "SYNCED":
            if self.failure is not None:
                _log.info("watch listed again after its failure; the rules that need it go on", cache=self.name)
                self.failure = None
            self._synced.set()
            self._tell(CacheChange(type="SYNCED", key="", old=None, new=None))
            return
        if event.type == "RESYNC":
            items = event.raw.get("items") or []
            self._records = {object_key(item): self._decode(item) for item in items if isinstance(item, Mapping)}
            self._synced.set()
            self._tell(CacheChange(type="RESYNC", key="", old=None, new=None))
            return
        key = object_key(event.raw)
        old = self._records.get(key)
        if event.type == "DELETED":
            self._records.pop(key, None)
            self._tell(CacheChange(type="DELETED", key=key, old=old, new=None))
            return
        new = self._decode(event.raw)
        self._records[key] = new
        self._tell(CacheChange(type=event.type, key=key, old=old, new=new))

    def _tell(self, change: CacheChange[R]) -> None:
        for listener in self._listeners:
            listener(change)


class ReadYourWrites(Generic[R]):
    """What this process last wrote (or read fresh) for each object, kept until its cache catches up.

    A watch delivers a write a moment after the write returns. Until then the cache shows the object
    at a version this process has already moved past (or not at all, for one it just created); a store
    that decided on that copy would act on a state that no longer exists. `view` gives the newer
    record while the cached one is at a version this process has seen superseded; a version it never
    saw is someone else's later write, and wins.
    """

    def __init__(self, *, version_of: Callable[[R], str], cache: WatchCache[R] | None = None) -> None:
        self._version_of = version_of
        self._latest: dict[str, R] = {}
        self._superseded: dict[str, list[str]] = {}
        if cache is not None:
            cache.subscribe(self._caught_up)

    KEEP_VERSIONS: Final = 8

    def note(self, key: str, record: R, *, based_on: str | None = None) -> None:
        """`record` was just written (based on the version `based_on`) or read fresh."""
        older = self._superseded.setdefault(key, [])
        previous = self._latest.get(key)
        for version in (based_on, self._version_of(previous) if previous is not None else None):
            if version and version not in older and version != self._version_of(record):
                older.append(version)
        del older[: -self.KEEP_VERSIONS]
        self._latest[key] = record

    def view(self, key: str, cached: R | None) -> R | None:
        """The freshest record of `key` this process knows: its own, or the cache's."""
        latest = self._latest.get(key)
        if latest is None:
            return cached
        if cached is None:
            return latest  # created (or read) here, not delivered by the watch yet
        version = self._version_of(cached)
        if version == self._version_of(latest) or version not in self._superseded.get(key, ()):
            self.forget(key)
            return cached
        return latest

    def pending(self) -> Mapping[str, R]:
        """The records the cache has not caught up with (it may not hold them at all yet)."""
        return self._latest

    def forget(self, key: str) -> None:
        self._latest.pop(key, None)
        self._superseded.pop(key, None)

    def _caught_up(self, change: CacheChange[R]) -> None:
        latest = self._latest.get(change.key)
        if latest is None:
            return
        shown = change.new if change.new is not None else change.old  # a DELETED event shows the last version
        if shown is not None and self._version_of(shown) == self._version_of(latest):
            self.forget(change.key)


def not_synced(caches: Iterable[WatchCache[Any]]) -> str | None:
    """None once every cache listed once; else `caches not synced: <kinds>` (and which watch failed)."""
    caches = list(caches)
    failed = [str(cache.problem) for cache in caches if cache.failure is not None]
    waiting = [cache.name for cache in caches if cache.failure is None and not cache.synced]
    said = [f"caches not synced: {', '.join(waiting)}"] if waiting else []
    return "; ".join([*said, *failed]) or None


async def run_caches(caches: Iterable[WatchCache[Any]]) -> None:
    """Run every cache until cancelled (a failed one is tried again alone; the others go on)."""
    async with asyncio.TaskGroup() as group:
        for cache in caches:
            group.create_task(cache.run(), name=f"cache:{cache.name}")


def _selector(rule: Rule) -> str:
    return rule.selector.query()


class ClusterCaches:
    """The inventory's ClusterReader, read from watch-fed caches of what the rules need.

    PVCs and pods: one cache per distinct label selector of the PVC and broker rules (a rule with no
    selector watches every object of the kind). Namespaces (for namespaceSelector) and StorageClasses
    (the resize executor) always. Nodes and node Leases only once a node rule needs them (its objects,
    its executor, a policy's cordoned-node count): at 1,000 nodes their Leases alone change about 100
    times a second, which an agent without a node rule has no reason to decode. A cache that no rule run
    now has needed for two passes of `run`'s timer (a rule edited to another selector, or removed) stops,
    and is listed afresh if a rule needs it again (`release_unused`).
    """

    def __init__(self, *, source: WatchSource, rules: Sequence[Rule]) -> None:
        self._source = source
        self.namespaces: WatchCache[Mapping[str, str]] = WatchCache(
            source=source, kind="namespaces", decode=namespace_labels_record
        )
        self.storage_classes: WatchCache[StorageClassInfo] = WatchCache(
            source=source, kind="storageclasses", decode=StorageClassInfo.from_raw
        )
        self.nodes, self.leases = self._new_node_caches()
        self.pvcs: dict[str, WatchCache[PvcInfo]] = {}
        self.pods: dict[str, WatchCache[PodInfo]] = {}
        self._nodes_needed = False
        self._added: list[Callable[[WatchCache[Any]], None]] = []
        self._start: Callable[[WatchCache[Any]], None] | None = None
        self._running: dict[WatchCache[Any], asyncio.Task[None]] = {}
        self._unused: set[WatchCache[Any]] = set()
        """Caches no rule needed at the last `release_unused`: released at the next one if still unneeded."""
        for rule in rules:
            self.needed_by(rule)

    def _new_node_caches(self) -> tuple[WatchCache[NodeInfo], WatchCache[NodeLease]]:
        nodes = WatchCache(source=self._source, kind="nodes", decode=NodeInfo.from_raw)
        leases = WatchCache(
            source=self._source, kind="leases", namespace=NODE_LEASE_NAMESPACE, decode=NodeLease.from_raw
        )
        return nodes, leases

    def on_added(self, listener: Callable[[WatchCache[Any]], None]) -> None:
        """Call `listener` with each cache made later for a new rule's label selector (AutopilotRules
        added while the agent runs), after its own listeners could subscribe and before it starts."""
        self._added.append(listener)

    async def run(self, *, rules: Callable[[], Iterable[Rule]] | None = None, every: float = 60.0) -> None:
        """Run every cache until cancelled, and those made later as soon as they are made (a failed one is
        tried again alone; the others go on). With `rules` (the rules run now), every `every` seconds
        the caches none of them has needed since the previous pass stop (`release_unused`)."""
        async with asyncio.TaskGroup() as group:

            def start(cache: WatchCache[Any]) -> None:
                self._running[cache] = group.create_task(cache.run(), name=f"cache:{cache.name}")

            self._start = start
            try:
                for cache in self.caches():
                    start(cache)
                if rules is None:
                    await asyncio.Event().wait()
                    return
                while True:
                    await self._source.clock.sleep(every)
                    self.release_unused(rules())
            finally:
                self._start = None
                self._running.clear()

    def release_unused(self, rules: Iterable[Rule]) -> list[str]:
        """Stop and forget the PVC, pod and node caches that none of `rules` needs now and that none
        needed at the previous call either (so a rule replaced by its new version, whose old loop may
        still finish a cycle, keeps its caches for one more pass); returns their names. A selector a rule
        takes up again later is listed afresh. At 20,000 pods, a rule edited away from a wide selector
        frees its cache."""
        needed = {cache for rule in rules for cache in self.needed_by(rule)}
        nodes: list[WatchCache[Any]] = [self.nodes, self.leases] if self._nodes_needed else []
        candidates: list[WatchCache[Any]] = [*self.pvcs.values(), *self.pods.values(), *nodes]
        # namespaces and StorageClasses: always kept
        unneeded = {cache for cache in candidates if cache not in needed}
        released = [cache for cache in candidates if cache in unneeded and cache in self._unused]
        self._unused = unneeded - set(released)
        for cache in released:
            self.pvcs = {selector: kept for selector, kept in self.pvcs.items() if kept is not cache}
            self.pods = {selector: kept for selector, kept in self.pods.items() if kept is not cache}
            task = self._running.pop(cache, None)
            if task is not None:
                task.cancel()
            _log.info("watch stopped: no rule needs it any more", cache=cache.name)
        if self.nodes in released:  # the next node rule lists them afresh (nodes and Leases go together)
            self._nodes_needed = False
            self.nodes, self.leases = self._new_node_caches()
        return [cache.name for cache in released]

    def _selected_by(
        self, caches: dict[str, WatchCache[R]], kind: WatchKind, selector: str, decode: Callable[[Mapping[str, Any]], R]
    ) -> WatchCache[R]:
        cache = caches.get(selector)
        if cache is None:
            cache = caches[selector] = WatchCache(
                source=self._source, kind=kind, label_selector=selector, decode=decode
            )
            self._watch_from_now(cache)
        return cache

    def _watch_from_now(self, cache: WatchCache[Any]) -> None:
        """A cache made part of the watched ones: its listeners told, and started when running."""
        for listener in self._added:
            listener(cache)
        if self._start is not None:
            self._start(cache)

    def _node_caches(self) -> list[WatchCache[Any]]:
        """Nodes and node Leases, made part of the watched caches (and started when running) at the first
        rule that needs them."""
        if not self._nodes_needed:
            self._nodes_needed = True
            self._watch_from_now(self.nodes)
            self._watch_from_now(self.leases)
        return [self.nodes, self.leases]

    def caches(self) -> list[WatchCache[Any]]:
        """Every cache watched now (`run` runs them; readiness waits for them)."""
        nodes: list[WatchCache[Any]] = [self.nodes, self.leases] if self._nodes_needed else []
        return [self.namespaces, self.storage_classes, *nodes, *self.pvcs.values(), *self.pods.values()]

    def needed_by(self, rule: Rule) -> list[WatchCache[Any]]:
        """The caches a cycle of `rule` reads (made, and started when running, for a selector not seen yet)."""
        if rule.target is TargetKind.PVC:
            claims = self._selected_by(self.pvcs, "pvcs", _selector(rule), PvcInfo.from_raw)
            return [self.namespaces, claims, self.storage_classes]
        if rule.target is TargetKind.BROKER:
            return [self.namespaces, self._selected_by(self.pods, "pods", _selector(rule), PodInfo.from_raw)]
        if rule.target is TargetKind.NODE:
            return self._node_caches()
        return []

    def problem_for(self, rule: Rule) -> str | None:
        """Why `rule` must not evaluate now (a cache it reads is not synced, or failed), else None."""
        problems = [problem for cache in self.needed_by(rule) if (problem := cache.problem) is not None]
        return "; ".join(problems) if problems else None

    # -- ClusterReader (agent.runtime.inventory)

    async def list_pvcs(self, *, label_selector: str | None = None) -> list[PvcInfo]:
        return list(self._selected(self.pvcs, "pvcs", label_selector).records())

    async def list_pods(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[PodInfo]:
        pods = self._selected(self.pods, "pods", label_selector).records()
        return [pod for pod in pods if namespace is None or pod.namespace == namespace]

    async def namespace_labels(self) -> dict[str, Mapping[str, str]]:
        return dict(self.namespaces.items())

    async def list_nodes(self) -> list[NodeInfo]:
        return list(self.nodes.records())

    async def node_lease_renew_times(self) -> dict[str, float]:
        return {lease.node: lease.renewed for lease in self.leases.records() if lease.renewed is not None}

    async def storage_class(self, name: str) -> StorageClassInfo:
        """Raises NotFoundError when there is no such StorageClass (as `KubeClient.storage_class`)."""
        found = self.storage_classes.get(name)
        if found is None:
            raise NotFoundError(
                f"kube-apiserver {self._source.server}: storageclasses {name} not found (watched)",
                server=self._source.server,
                verb="GET",
                resource="storageclasses",
                name=name,
                status=404,
            )
        return found

    def _selected(self, caches: Mapping[str, WatchCache[R]], kind: str, label_selector: str | None) -> WatchCache[R]:
        cache = caches.get(label_selector or "")
        if cache is None:
            raise CacheNotSyncedError(
                f"no watch of {kind} with label selector {label_selector!r}: no rule asked for one"
            )
        return cache
