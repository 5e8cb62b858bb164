"""ActionApprovals against a real kube-apiserver: created once per episode whoever asks, answers kept
across restarts, answers never overwritten, and the `approve` / `decline` / `approvals` commands.

Only the control plane runs (no Kafka, no Prometheus). Each test uses object names of its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from chart_support import APPROVER_RULES, approver_kubeconfig
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient, Configuration

from agent.adapters.clock import WallClock
from agent.adapters.errors import AnswerConflictError, KubeError
from agent.adapters.kubernetes import KubeClient
from agent.adapters.kubernetes.approvals import ApprovalStore
from agent.adapters.kubernetes.crds import install_crds
from agent.core.approvals import ActionPreview, Answer, ApprovalRequest, Phase, approval_name
from sandbox.kube import KubeApi, KubeControlPlane, ensure_binaries

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
APPROVALS = "/apis/kafka-autopilot.io/v1alpha1/namespaces/{namespace}/actionapprovals"
T0 = 1_717_416_000.25
RESIZE = ActionPreview(action="openstorage.io.action.volume/resize", before="400Gi", after="800Gi")


def _kube(api_client: ApiClient) -> KubeClient:
    """The access layer over a test's own ApiClient (closed by the test's `async with`)."""
    return KubeClient(api_client=api_client, clock=WallClock())


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    control_plane = KubeControlPlane(
        work_dir=tmp_path_factory.mktemp("kube"),
        binaries=ensure_binaries(build=False),
        node_count=1,
        ttl_seconds=900,
    )
    control_plane.start()
    try:
        asyncio.run(_prepare(control_plane.kubeconfig_path))
        yield control_plane
    finally:
        control_plane.stop()


async def _prepare(kubeconfig: Path) -> None:
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api_client:
        await install_crds(_kube(api_client))
        await client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "kafka"}})


@pytest.fixture
async def api_client(plane: KubeControlPlane) -> AsyncIterator[ApiClient]:
    async with await config.new_client_from_config(config_file=str(plane.kubeconfig_path)) as api_client:
        yield api_client


@pytest.fixture
def api(plane: KubeControlPlane) -> KubeApi:
    return plane.api()


def request_for(claim: str, *, episode: float = T0, rule: str = "kafka-resize") -> ApprovalRequest:
    key = f"kafka/{claim}"
    return ApprovalRequest(
        name=approval_name(rule=rule, object_key=key, episode=episode),
        namespace="kafka",
        rule=rule,
        object_kind="PersistentVolumeClaim",
        object_key=key,
        object_namespace="kafka",
        object_name=claim,
        episode=episode,
        actions=(RESIZE,),
        why="100 * (px_volume_usage_bytes / px_volume_capacity_bytes) = 82.5 (holds)",
        values={"100 * (px_volume_usage_bytes / px_volume_capacity_bytes)": 82.5},
    )


def cli(plane: KubeControlPlane, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--kubeconfig", str(kubeconfig or plane.kubeconfig_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- the store ----------------------------------------------------------------------------------------


async def test_one_approval_per_episode_whoever_asks_and_however_often(api_client: ApiClient, api: KubeApi) -> None:
    request = request_for("data-once")
    first, created = await ApprovalStore(kube=_kube(api_client)).ensure(request, now=T0)
    assert created
    again, created_again = await ApprovalStore(kube=_kube(api_client)).ensure(request, now=T0 + 60)  # a restarted agent
    assert not created_again
    assert again.name == first.name
    stored = api.get(f"{APPROVALS.format(namespace='kafka')}/{request.name}")
    assert stored["spec"]["approvalState"] == "pending"
    assert stored["metadata"]["labels"]["kafka-autopilot.io/rule"] == "kafka-resize"
    preview = stored["status"]["preview"]
    assert (preview["action"], preview["before"], preview["after"]) == (RESIZE.action, "400Gi", "800Gi")
    assert preview["object"] == "kafka/data-once"
    assert "82.5" in preview["why"]
    assert preview["conditions"] == [
        {"expression": "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)", "value": "82.5"}
    ]
    assert stored["status"]["phase"] == "Pending"
    assert stored["status"]["requestedAt"] == "2024-06-03T12:00:00Z"
    items = api.get(APPROVALS.format(namespace="kafka"))["items"]
    assert [item["metadata"]["name"] for item in items].count(request.name) == 1

    next_episode = request_for("data-once", episode=T0 + 900)
    _, created_next = await ApprovalStore(kube=_kube(api_client)).ensure(next_episode, now=T0 + 900)
    assert created_next and next_episode.name != request.name


async def test_two_replicas_asking_at_once_create_one_approval(api_client: ApiClient, api: KubeApi) -> None:
    request = request_for("data-race")
    results = await asyncio.gather(*(ApprovalStore(kube=_kube(api_client)).ensure(request, now=T0) for _ in range(4)))
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert api.get(f"{APPROVALS.format(namespace='kafka')}/{request.name}")["status"]["phase"] == "Pending"


async def test_an_answer_is_kept_and_never_overwritten(api_client: ApiClient) -> None:
    store = ApprovalStore(kube=_kube(api_client))
    approval, _ = await store.ensure(request_for("data-answer"), now=T0)
    approved = await store.answer(approval, answer=Answer.APPROVED, by="sre-on-call", reason="disk is the bottleneck")
    assert (approved.answer, approved.answered_by, approved.answer_reason) == (
        Answer.APPROVED,
        "sre-on-call",
        "disk is the bottleneck",
    )
    restarted, created = await ApprovalStore(kube=_kube(api_client)).ensure(request_for("data-answer"), now=T0 + 30)
    assert not created and restarted.answer is Answer.APPROVED
    assert (await store.answer(restarted, answer=Answer.APPROVED, by="someone", reason="")).answer is Answer.APPROVED
    with pytest.raises(AnswerConflictError, match="already approved by sre-on-call"):
        await store.answer(restarted, answer=Answer.DECLINED, by="someone else", reason="")
    with pytest.raises(AnswerConflictError, match="changed while answering"):
        await store.answer(approval, answer=Answer.DECLINED, by="stale reader", reason="")  # read before the answer


async def test_a_cancelled_approval_stays_readable_and_takes_no_answer(api_client: ApiClient) -> None:
    store = ApprovalStore(kube=_kube(api_client))
    approval, _ = await store.ensure(request_for("data-cancel"), now=T0)
    cancelled = await store.set_phase(
        namespace="kafka", name=approval.name, phase=Phase.CANCELLED, message="cancelled: conditions cleared", now=T0
    )
    assert cancelled is not None and cancelled.phase is Phase.CANCELLED
    assert cancelled.summary == "openstorage.io.action.volume/resize 400Gi -> 800Gi"  # the preview is kept
    with pytest.raises(AnswerConflictError, match="no longer waits"):
        await store.answer(cancelled, answer=Answer.APPROVED, by="late", reason="")
    assert await store.set_phase(namespace="kafka", name="no-such", phase=Phase.USED, message="", now=T0) is None


async def test_a_name_taken_by_another_object_is_a_clash_not_an_answer(api_client: ApiClient) -> None:
    store = ApprovalStore(kube=_kube(api_client))
    mine = request_for("data-clash")
    await store.ensure(mine, now=T0)
    other = replace(mine, object_key="kafka/someone-else")
    with pytest.raises(KubeError, match="name clash"):
        await store.ensure(other, now=T0)


async def test_an_unreachable_apiserver_is_named() -> None:
    configuration = Configuration()
    configuration.host = "https://127.0.0.1:1"
    async with ApiClient(configuration=configuration) as unreachable:
        with pytest.raises(KubeError) as raised:
            await ApprovalStore(kube=_kube(unreachable)).get(namespace="kafka", name="x")
    assert str(raised.value).startswith("kube-apiserver https://127.0.0.1:1: GET actionapprovals kafka/x: no answer")
    assert raised.value.temporary


# --- the commands -------------------------------------------------------------------------------------


def test_approvals_lists_the_waiting_ones_and_approve_answers(plane: KubeControlPlane, api: KubeApi) -> None:
    request = request_for("data-cli")

    async def create() -> None:
        async with await config.new_client_from_config(config_file=str(plane.kubeconfig_path)) as api_client:
            await ApprovalStore(kube=_kube(api_client)).ensure(request, now=T0)

    asyncio.run(create())
    listed = cli(plane, "approvals")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:5] == ["NAMESPACE", "NAME", "RULE", "OBJECT", "ACTION"]
    (row,) = [line for line in rows if request.name in line]
    assert "kafka-resize" in row and "kafka/data-cli" in row and "400Gi -> 800Gi" in row and "pending" in row
    as_json = [json.loads(line) for line in cli(plane, "approvals", "--json", "-n", "kafka").stdout.splitlines()]
    assert any(item["name"] == request.name and item["why"] for item in as_json)

    approved = cli(plane, "approve", request.name, "--reason", "capacity review done", "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout and "400Gi -> 800Gi" in approved.stdout
    stored = api.get(f"{APPROVALS.format(namespace='kafka')}/{request.name}")
    assert stored["spec"]["approvalState"] == "approved"
    admin = whoami(api)  # the kubeconfig's user, not the name given with --by
    assert stored["metadata"]["annotations"]["kafka-autopilot.io/answered-by"] == admin != "alice"
    assert stored["metadata"]["annotations"]["kafka-autopilot.io/answer-reason"] == "for alice: capacity review done"
    assert request.name not in cli(plane, "approvals").stdout  # answered: no longer waiting

    assert cli(plane, "approve", request.name, "-n", "kafka").returncode == 0  # the same answer again: done
    declined = cli(plane, "decline", request.name)
    assert declined.returncode == 1
    assert f"already approved by {admin}" in declined.stderr


def whoami(api: KubeApi) -> str:
    review = api.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


APPROVER_ROLE = "kafka-autopilot-test-approver"


def approver(plane: KubeControlPlane, api: KubeApi, *, name: str, folder: Path) -> Path:
    return approver_kubeconfig(
        api,
        server=plane.apiserver_url,
        ca_file=plane.pki_dir / "ca.crt",
        namespace="kafka",
        name=name,
        role=APPROVER_ROLE,
        folder=folder,
    )


def test_each_answer_records_the_kubernetes_user_who_gave_it(
    plane: KubeControlPlane, api: KubeApi, tmp_path: Path
) -> None:
    """Two people, two identities: each answer names the ServiceAccount whose token made it, whatever
    --by says and whoever runs the command on this machine."""
    role = {"metadata": {"name": APPROVER_ROLE}, "rules": APPROVER_RULES}
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    first, second = request_for("data-alice"), request_for("data-bob")

    async def create() -> None:
        async with await config.new_client_from_config(config_file=str(plane.kubeconfig_path)) as api_client:
            for request in (first, second):
                await ApprovalStore(kube=_kube(api_client)).ensure(request, now=T0)

    asyncio.run(create())
    alice = approver(plane, api, name="alice", folder=tmp_path)
    bob = approver(plane, api, name="bob", folder=tmp_path)

    approved = cli(plane, "approve", first.name, "-n", "kafka", "--by", "bob", kubeconfig=alice)
    declined = cli(plane, "decline", second.name, "-n", "kafka", kubeconfig=bob)

    assert (approved.returncode, declined.returncode) == (0, 0), approved.stderr + declined.stderr
    answered_by = {
        request.name: api.get(f"{APPROVALS.format(namespace='kafka')}/{request.name}")["metadata"]["annotations"][
            "kafka-autopilot.io/answered-by"
        ]
        for request in (first, second)
    }
    assert answered_by == {
        first.name: "system:serviceaccount:kafka:alice",
        second.name: "system:serviceaccount:kafka:bob",
    }


def test_an_unknown_name_exits_1(plane: KubeControlPlane) -> None:
    result = cli(plane, "decline", "no-such-approval", "-n", "kafka")
    assert result.returncode == 1
    assert "no ActionApproval no-such-approval in namespace kafka" in result.stderr


def test_an_unreachable_apiserver_exits_2_and_names_it(plane: KubeControlPlane, tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    text = plane.kubeconfig_path.read_text()
    server = f"https://127.0.0.1:{plane.state.apiserver_port}"
    assert server in text
    broken.write_text(text.replace(server, "https://127.0.0.1:1"))
    for args in (("approve", "anything"), ("approvals",)):
        result = cli(plane, *args, kubeconfig=broken)
        assert result.returncode == 2, result
        assert "kube-apiserver https://127.0.0.1:1" in result.stderr
        assert "no answer" in result.stderr
