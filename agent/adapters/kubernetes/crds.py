"""The agent's three CustomResourceDefinitions, as shipped in agent/resources/crds/, and their installation.

Why this module exists: `kafka-autopilot run --install-crds` creates or replaces the CRDs
(AutopilotRule, AutopilotRuleObject, ActionApproval) and waits until the apiserver serves them, so
that a fresh cluster needs nothing applied by hand. The wait polls on the client's Clock.
"""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Mapping
from typing import Any, Final

import yaml

from agent.adapters.errors import ConflictError, KubeError, NotFoundError
from agent.adapters.kubernetes.client import KubeClient
from agent.adapters.retry import RetryPolicy, retrying
from agent.core.rules import API_GROUP

CRD_FILES: Final = ("autopilotrules.yaml", "autopilotruleobjects.yaml", "actionapprovals.yaml")
CRD_NAMES: Final = tuple(f"{file.removesuffix('.yaml')}.{API_GROUP}" for file in CRD_FILES)
_MAX_WRITE_ATTEMPTS: Final = 5


def crd_manifests() -> list[dict[str, Any]]:
    """The three CRDs, as shipped in agent/resources/crds/."""
    folder = importlib.resources.files("agent").joinpath("resources", "crds")
    manifests = []
    for file in CRD_FILES:
        loaded = yaml.safe_load(folder.joinpath(file).read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            where = f"agent/resources/crds/{file}"
            raise KubeError(f"{where}: not a manifest", server=where, verb="LOAD", resource="customresourcedefinitions")
        manifests.append(loaded)
    return manifests


def _is_established(crd: Mapping[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(condition.get("type") == "Established" and condition.get("status") == "True" for condition in conditions)


async def install_crds(kube: KubeClient, *, timeout_seconds: float = 60.0) -> None:
    """Create or replace the three CRDs and wait (on the client's Clock) until the API server serves
    each of them; a temporary KubeError when one is not served within `timeout_seconds`."""
    for manifest in crd_manifests():
        await _apply_crd(kube, manifest)
    waiting = RetryPolicy(attempts=None, deadline_seconds=timeout_seconds, base_seconds=0.2, max_seconds=1.0)
    for name in CRD_NAMES:
        try:
            async for attempt in retrying(waiting, clock=kube.clock):
                with attempt:
                    if not _is_established(await kube.read_crd(name)):
                        raise KubeError(
                            f"kube-apiserver {kube.server}: CRD {name} not established yet",
                            server=kube.server,
                            verb="GET",
                            resource="customresourcedefinitions",
                            name=name,
                            temporary=True,
                        )
        except KubeError as error:
            if not error.temporary:
                raise
            raise KubeError(
                f"kube-apiserver {kube.server}: CRDs not established within {timeout_seconds:.0f}s: {error}",
                server=kube.server,
                verb="GET",
                resource="customresourcedefinitions",
                name=name,
                temporary=True,
            ) from error


async def _apply_crd(kube: KubeClient, manifest: Mapping[str, Any]) -> None:
    """Create the CRD, or replace it at the resourceVersion just read (again when someone wrote it meanwhile)."""
    name = manifest["metadata"]["name"]
    for _ in range(_MAX_WRITE_ATTEMPTS):
        try:
            existing = await kube.read_crd(name)
        except NotFoundError:
            try:
                await kube.create_crd(manifest)
                return
            except ConflictError:
                continue
        body: Any = copy.deepcopy(dict(manifest))
        body["metadata"]["resourceVersion"] = (existing.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.replace_crd(body)
            return
        except ConflictError:
            continue
    raise ConflictError(
        f"kube-apiserver {kube.server}: CRD {name} kept changing while being replaced",
        server=kube.server,
        verb="PUT",
        resource="customresourcedefinitions",
        name=name,
        status=409,
    )
