"""The agent's three CustomResourceDefinitions, as shipped in agent/resources/crds/, and their installation.

Why this module exists: `kafka-autopilot run --install-crds` creates or replaces the CRDs
(AutopilotRule, AutopilotRuleObject, ActionApproval) and waits until the apiserver serves them, so
that a fresh cluster needs nothing applied by hand. The wait polls on the client's Clock. A dry-run
agent (`replace_existing=False`) creates only the CRDs that are missing and never replaces one: it
must not change what a live agent's release installed.

Without `--install-crds`, `wait_until_served` holds the agent until the apiserver serves its state
objects: it reports the missing CRD once, naming the fix (MISSING_CRDS_FIX), and keeps checking with
backoff (tenacity, on the Clock) in case someone installs them.
"""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Callable, Mapping
from typing import Any, Final

import yaml

from agent.adapters.errors import ConflictError, KubeError, NotFoundError
from agent.adapters.kubernetes.client import KubeClient
from agent.adapters.kubernetes.statuscodec import OBJECTS_PLURAL, VERSION
from agent.adapters.retry import RetryPolicy, retrying
from agent.core.rules import API_GROUP

CRD_FILES: Final = ("autopilotrules.yaml", "autopilotruleobjects.yaml", "actionapprovals.yaml")
CRD_NAMES: Final = tuple(f"{file.removesuffix('.yaml')}.{API_GROUP}" for file in CRD_FILES)
_MAX_WRITE_ATTEMPTS: Final = 5
MISSING_CRDS_FIX: Final = (
    "install them: run with --install-crds (Helm chart: rbac.installCRDs=true), or apply the chart's crds/ "
    "folder (helm install does; helm upgrade does not)"
)
CRD_WAIT: Final = RetryPolicy(
    attempts=None, deadline_seconds=None, base_seconds=2.0, max_seconds=60.0, jitter_seconds=1.0
)
"""Checking for missing CRDs: 2 s, 4 s, ... up to a minute between checks, for as long as it takes."""


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


async def install_crds(kube: KubeClient, *, timeout_seconds: float = 60.0, replace_existing: bool = True) -> None:
    """Create (and, with `replace_existing`, replace) the three CRDs and wait (on the client's Clock) until
    the API server serves each of them; a temporary KubeError when one is not served within `timeout_seconds`.
    Without `replace_existing` (a dry-run agent) only missing CRDs are created; existing ones are left as
    they are."""
    for manifest in crd_manifests():
        await _apply_crd(kube, manifest, replace_existing=replace_existing)
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


async def wait_until_served(
    kube: KubeClient, *, on_missing: Callable[[str], None], policy: RetryPolicy = CRD_WAIT
) -> None:
    """Return once the API server serves AutopilotRuleObjects (the agent's state). While it answers 404,
    call `on_missing(message)` once, the message naming the fix, and check again with `policy`'s backoff;
    other temporary errors are retried the same way, a permanent one (e.g. 403) is raised."""
    crd = f"{OBJECTS_PLURAL}.{API_GROUP}"
    reported = False
    async for attempt in retrying(policy, clock=kube.clock):
        with attempt:
            try:
                await kube.list_custom_objects(group=API_GROUP, version=VERSION, plural=OBJECTS_PLURAL, limit=1)
            except NotFoundError as error:
                message = (
                    f"kube-apiserver {kube.server} does not serve {crd} (the CRD is not installed); "
                    f"{MISSING_CRDS_FIX}. Checking again with backoff."
                )
                if not reported:
                    on_missing(message)
                    reported = True
                raise KubeError(
                    message,
                    server=kube.server,
                    verb="GET",
                    resource=OBJECTS_PLURAL,
                    temporary=True,
                ) from error


async def _apply_crd(kube: KubeClient, manifest: Mapping[str, Any], *, replace_existing: bool) -> None:
    """Create the CRD, or (with `replace_existing`) replace it at the resourceVersion just read (again when
    someone wrote it meanwhile)."""
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
        if not replace_existing:
            return
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
