"""AutopilotRules stored in the cluster: read them as YAML for the rule loader, and write their status.

Why this module exists: with `--cluster-rules` the agent's rules are AutopilotRule objects. The
loader wants text with a file name for its problems (`cluster:autopilotrule/<name>`), and people
want to see with kubectl whether a rule was valid (`Valid` condition), how many objects it matched,
in which states, and when it was last evaluated. The runtime watches the objects and decides when a
status is worth writing (agent.runtime.liverules); this module only shapes and writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import yaml

from agent.adapters.errors import ConflictError, KubeError
from agent.adapters.kubernetes.client import KubeClient
from agent.adapters.kubernetes.statuscodec import RULES_PLURAL, VERSION, format_time
from agent.core.diagnostics import Problem, Severity
from agent.core.rules import API_GROUP, API_VERSION, RULE_KIND

CLUSTER_RULE_FILE_PREFIX: Final = "cluster:autopilotrule/"
VALID_CONDITION: Final = "Valid"
_MAX_WRITE_ATTEMPTS: Final = 5


@dataclass(frozen=True, kw_only=True)
class ClusterRule:
    """One AutopilotRule object, as YAML text for the rule loader."""

    name: str
    text: str
    generation: int | None
    """metadata.generation when listed; pass it to `set_rule_status` as observedGeneration."""
    uid: str | None = None

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


def cluster_rule(obj: Mapping[str, Any]) -> ClusterRule:
    """The rule of one AutopilotRule object, as listed or watched."""
    metadata = obj.get("metadata") or {}
    generation = metadata.get("generation")
    return ClusterRule(
        name=str(metadata["name"]),
        text=cluster_rule_text(obj),
        generation=generation if isinstance(generation, int) else None,
        uid=metadata.get("uid"),
    )


async def read_cluster_rules(kube: KubeClient) -> list[ClusterRule]:
    """Every AutopilotRule in the cluster, sorted by name."""
    listed = await kube.list_custom_objects(group=API_GROUP, version=VERSION, plural=RULES_PLURAL)
    rules = [cluster_rule(obj) for obj in listed.get("items") or []]
    return sorted(rules, key=lambda rule: rule.name)


async def list_cluster_rules(kube: KubeClient) -> list[tuple[str, str]]:
    """(name, YAML text) of every AutopilotRule in the cluster; parse each with
    `parse_rules(text, file=cluster_rule_file(name))`."""
    return [(rule.name, rule.text) for rule in await read_cluster_rules(kube)]


def rule_status(
    *,
    current: Mapping[str, Any] | None,
    problems: Sequence[Problem],
    generation: int | None,
    now: float,
    objects: int | None = None,
    evaluated_at: float | None = None,
    objects_by_state: Mapping[str, int] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """An AutopilotRule's new status (pure): the Valid condition, keeping its transition time when
    its status did not change, and the other fields that are given. `note` ends the condition's
    message (e.g. that the last valid version still runs)."""
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
        "message": "\n".join([*(str(problem) for problem in problems), *([note] if note else [])]),
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
    if objects_by_state is not None:
        status["objectsByState"] = dict(sorted(objects_by_state.items()))
    if evaluated_at is not None:
        status["lastEvaluated"] = format_time(math.floor(evaluated_at))
    return status


class RuleStatusApi(Protocol):
    """The KubeClient calls a status write makes."""

    @property
    def server(self) -> str: ...

    async def get_custom_object(self, *, group: str, version: str, plural: str, name: str) -> dict[str, Any]: ...

    async def replace_custom_object_status(
        self, *, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...


async def write_rule_status(
    kube: RuleStatusApi,
    *,
    seen: Mapping[str, Any],
    new_status: Callable[[Mapping[str, Any] | None], dict[str, Any] | None],
) -> dict[str, Any] | None:
    """Write the status `new_status` makes of the current one (None: nothing to write) on the object as
    last `seen` (its resourceVersion); on a conflict, read it again and ask again. Returns the object
    written, or None when no write was needed."""
    obj = dict(seen)
    name = str((obj.get("metadata") or {}).get("name"))
    for _ in range(_MAX_WRITE_ATTEMPTS):
        status = new_status(obj.get("status"))
        if status is None:
            return None
        try:
            return await kube.replace_custom_object_status(
                group=API_GROUP, version=VERSION, plural=RULES_PLURAL, body={**obj, "status": status}
            )
        except ConflictError:
            obj = await kube.get_custom_object(group=API_GROUP, version=VERSION, plural=RULES_PLURAL, name=name)
    raise KubeError(
        f"kube-apiserver {kube.server}: writing the status of AutopilotRule {name}: kept conflicting",
        server=kube.server,
        verb="PUT",
        resource=f"{RULES_PLURAL}/status",
        name=name,
        status=409,
    )


async def set_rule_status(
    kube: RuleStatusApi,
    *,
    name: str,
    problems: Sequence[Problem],
    generation: int | None,
    now: float,
    objects: int | None = None,
    evaluated_at: float | None = None,
) -> None:
    """Write an AutopilotRule's Valid condition (False with every problem when the loader found
    errors) and, when given, its object count and last evaluation time, on a fresh read.

    Informational only, so a conflict is simply retried on a fresh read.
    """
    seen = await kube.get_custom_object(group=API_GROUP, version=VERSION, plural=RULES_PLURAL, name=name)
    await write_rule_status(
        kube,
        seen=seen,
        new_status=lambda current: rule_status(
            current=current,
            problems=problems,
            generation=generation,
            now=now,
            objects=objects,
            evaluated_at=evaluated_at,
        ),
    )
