"""The agent's CRDs on a fake apiserver: a dry-run install creates only what is missing and replaces
nothing; without the CRDs the agent says once what is wrong and how to fix it, and keeps checking with
backoff until they appear."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from fakes import FakeClock

from agent.adapters.errors import KubeError, NotFoundError
from agent.adapters.kubernetes import KubeClient
from agent.adapters.kubernetes.crds import CRD_NAMES, install_crds, wait_until_served

ESTABLISHED = {"conditions": [{"type": "Established", "status": "True"}]}


class CrdApi:
    """The CRD and state-object calls of the access layer, in memory."""

    server = "https://fake-apiserver"

    def __init__(self, *, clock: FakeClock, crds: dict[str, dict[str, Any]] | None = None) -> None:
        self.clock = clock
        self.crds = crds or {}
        self.writes: list[tuple[str, str]] = []
        self.list_error: KubeError | None = None
        self.lists = 0

    def _not_found(self, name: str) -> NotFoundError:
        return NotFoundError(f"{name} not found", server=self.server, verb="GET", resource="x", name=name, status=404)

    async def read_crd(self, name: str) -> dict[str, Any]:
        if name not in self.crds:
            raise self._not_found(name)
        return copy.deepcopy(self.crds[name])

    async def create_crd(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        self.writes.append(("create", name))
        self.crds[name] = {**copy.deepcopy(manifest), "status": ESTABLISHED}
        return self.crds[name]

    async def replace_crd(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.writes.append(("replace", name))
        self.crds[name] = {**copy.deepcopy(body), "status": ESTABLISHED}
        return self.crds[name]

    async def list_custom_objects(self, **_: Any) -> dict[str, Any]:
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        return {"items": [], "metadata": {}}


def kube(api: CrdApi) -> KubeClient:
    return cast(KubeClient, api)


def existing(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "7", "labels": {"installed-by": "live-release"}},
        "status": ESTABLISHED,
    }


@pytest.mark.asyncio
async def test_a_dry_run_install_creates_only_the_missing_crds_and_replaces_none() -> None:
    present = {name: existing(name) for name in CRD_NAMES[:2]}
    api = CrdApi(clock=FakeClock(), crds=copy.deepcopy(present))

    await install_crds(kube(api), replace_existing=False)

    assert api.writes == [("create", CRD_NAMES[2])]
    assert {name: api.crds[name] for name in present} == present, "an existing CRD must be left exactly as it was"


@pytest.mark.asyncio
async def test_a_live_install_still_replaces_existing_crds() -> None:
    api = CrdApi(clock=FakeClock(), crds={name: existing(name) for name in CRD_NAMES})
    await install_crds(kube(api))
    assert api.writes == [("replace", name) for name in CRD_NAMES]


@pytest.mark.asyncio
async def test_missing_crds_are_reported_once_with_the_fix_and_checked_with_backoff_until_they_appear() -> None:
    clock = FakeClock()
    api = CrdApi(clock=clock)
    api.list_error = api._not_found("autopilotruleobjects")
    reports: list[str] = []
    clock.after_sleeps(5, lambda: setattr(api, "list_error", None))  # someone installs the CRDs meanwhile
    started = clock.monotonic()

    await wait_until_served(kube(api), on_missing=reports.append)

    assert len(reports) == 1, "one clear error, not one per check"
    assert "autopilotruleobjects.kafka-autopilot.io" in reports[0]
    assert "--install-crds" in reports[0] and "rbac.installCRDs" in reports[0]
    assert api.lists == 6
    assert clock.monotonic() - started >= 2 + 4 + 8 + 16 + 32, "backoff, not a fixed 2 s poll"


@pytest.mark.asyncio
async def test_a_refusal_other_than_a_missing_crd_is_raised_not_waited_on() -> None:
    api = CrdApi(clock=FakeClock())
    api.list_error = KubeError("forbidden", server=api.server, verb="GET", resource="x", status=403)
    with pytest.raises(KubeError, match="forbidden"):
        await wait_until_served(kube(api), on_missing=lambda _: None)
    assert api.lists == 1
