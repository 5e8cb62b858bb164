"""The Helm chart, with the real helm (built by scripts/build-helm.sh) and the real promtool:
`helm lint` and `helm template` in both modes, what the templates promise (replicas, leader
election, anti-affinity, PDB, the restricted securityContext, RBAC), copies that must not drift
(CRDs, rules), the alert rules (parsed and fired by promtool), the dashboard's queries, and the
README's RBAC table against the rendered roles.

What the apiserver says about the rendered objects is in test_helm_chart_cluster.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, REPO, helm, of_kind, one, render

from agent.adapters.promtool import check_promql
from agent.cli import build_parser
from agent.core import strimzi
from sandbox.kafka import generate_kafka_pki
from sandbox.prometheus import binaries

pytestmark = pytest.mark.prometheus

SIDECAR = {"sidecar": {"enabled": True, "kafkaNamespace": "kafka"}}
MONITORING = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
MONITORING["metrics"]["grafanaDashboard"] = {"enabled": True}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (agent,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(agent)


def rbac_rules(objects: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(scope, apiGroup, resource, verb) for every rule of the rendered ClusterRoles and Roles."""
    granted = set()
    for role in [*of_kind(objects, "ClusterRole"), *of_kind(objects, "Role")]:
        scope = "cluster" if role["kind"] == "ClusterRole" else role["metadata"]["namespace"]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((scope, group, resource, verb))
    return granted


# --- lint and render ---------------------------------------------------------------------------


OPENSHIFT = {"openshift": True}
STRIMZI_MTLS = {
    "kafka": {
        "bootstrap": "my-cluster-kafka-bootstrap.kafka:9093",
        "securityProtocol": "SSL",
        "tls": {
            "caSecret": {"name": "my-cluster-cluster-ca-cert", "key": "ca.crt"},
            "clientSecret": {"name": "kafka-autopilot", "certKey": "user.crt", "keyKey": "user.key"},
        },
    }
}
"""Kafka mTLS as with a Strimzi cluster: its cluster CA Secret and a KafkaUser's Secret (docs/strimzi.md)."""


@pytest.mark.parametrize("mode", ["service", "sidecar", "openshift", "mtls", "approvers"])
def test_helm_lint_passes_strict(mode: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    approvers = {"rbac": {"approver": {"users": ["alice@example.com"], "groups": ["sre"], "admissionPolicy": True}}}
    modes = {"sidecar": SIDECAR, "openshift": OPENSHIFT, "mtls": STRIMZI_MTLS, "approvers": approvers}
    values.write_text(yaml.safe_dump({**MONITORING, **modes.get(mode, {})}))
    done = helm("lint", "--strict", str(CHART), "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_helm_is_the_pinned_release() -> None:
    assert helm("version", "--short").stdout.startswith("v3.22.0")


def test_two_releases_in_one_namespace_elect_on_leases_of_their_own() -> None:
    def lease_of(release: str) -> tuple[str, list[str]]:
        objects = render(release=release)
        (flag,) = [arg for arg in container(objects)["args"] if arg.startswith("--lease-name=")]
        role = next(r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election"))
        named = [name for rule in role["rules"] for name in rule.get("resourceNames", [])]
        return flag.removeprefix("--lease-name="), named

    live, live_granted = lease_of("live")
    trial, trial_granted = lease_of("trial")
    assert (live, trial) == ("live-kafka-autopilot", "trial-kafka-autopilot")
    assert live_granted == [live] and trial_granted == [trial], "each release may renew only its own Lease"


def test_service_mode_runs_two_leader_electing_replicas_spread_over_nodes() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = container(objects)["args"]
    assert args[0] == "run"
    for flag in ("--leader-elect", "--lease-name=autopilot-kafka-autopilot", "--namespace=$(POD_NAMESPACE)"):
        assert flag in args
    assert "--lease-duration=15" in args and "--identity=$(POD_NAME)" in args
    assert "--dry-run" in args, "the chart must install in dry-run unless told otherwise"
    env = {
        item["name"]: item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for item in container(objects)["env"]
    }
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    hard = one(render(values={"podAntiAffinity": "hard"}), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert hard["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_pod_meets_pod_security_restricted_and_has_a_read_only_root() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    security = container(objects)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {mount["mountPath"] for mount in container(objects)["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_the_openshift_option_leaves_the_ids_to_the_platform_and_keeps_the_rest_restricted() -> None:
    objects = render(values=OPENSHIFT)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    security = container(objects)["securityContext"]
    for fixed in ("runAsUser", "runAsGroup", "fsGroup"):
        assert fixed not in pod["securityContext"] and fixed not in security, fixed
    assert pod["securityContext"]["runAsNonRoot"] is True and security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    own = render(values={"podSecurityContext": {"fsGroup": 2000, "runAsUser": None}})  # null drops a default
    context = one(own, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert context["fsGroup"] == 2000 and "runAsUser" not in context and context["runAsNonRoot"] is True


def test_placement_and_extra_volumes_come_from_values() -> None:
    zone_spread = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["infra"]}]}]
            }
        }
    }
    values = {
        "affinity": affinity,
        "topologySpreadConstraints": [zone_spread],
        "priorityClassName": "system-cluster-critical",
        "extraVolumes": [{"name": "ca-bundle", "configMap": {"name": "trusted-ca"}}],
        "extraVolumeMounts": [{"name": "ca-bundle", "mountPath": "/etc/pki/extra", "readOnly": True}],
        "extraEnv": [{"name": "SSL_CERT_DIR", "value": "/etc/pki/extra"}],
        "extraArgs": ["--log-level=debug"],
    }
    objects = render(values=values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["affinity"] == affinity, "affinity replaces the chart's anti-affinity"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread == {
        **zone_spread,
        "labelSelector": {"matchLabels": one(objects, "Deployment")["spec"]["selector"]["matchLabels"]},
    }
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert {"name": "ca-bundle", "configMap": {"name": "trusted-ca"}} in pod["volumes"]
    agent = container(objects)
    assert {"name": "ca-bundle", "mountPath": "/etc/pki/extra", "readOnly": True} in agent["volumeMounts"]
    assert {"name": "SSL_CERT_DIR", "value": "/etc/pki/extra"} in agent["env"]
    assert agent["args"][-1] == "--log-level=debug"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": "two"}, "/replicas"),
        ({"podAntiAffinity": "maybe"}, "/podAntiAffinity"),
        ({"replica": 3}, "additional properties 'replica' not allowed"),
        ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
        ({"metrics": {"prometheusRule": {"for": "ten minutes"}}}, "/metrics/prometheusRule/for"),
        ({"audit": {"evaluations": "sample:0"}}, "/audit/evaluations"),
    ],
    ids=["wrong-type", "not-an-option", "unknown-key", "unknown-protocol", "not-a-duration", "not-an-audit-mode"],
)
def test_the_values_schema_rejects_a_bad_value_and_names_it(
    values: dict[str, Any], complaint: str, tmp_path: Path
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = helm("lint", "--strict", str(CHART), "--values", str(values_file), check=False)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stdout + done.stderr
    assert complaint in done.stdout + done.stderr


def notes(values: dict[str, Any], tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it (`helm template` leaves it out): the chart copied with the
    notes wrapped in a template of their own."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_test_notes.tpl").write_text('{{- define "test.notes" -}}\n' + text + "{{- end -}}\n")
    (chart / "templates" / "test-notes.yaml").write_text('kind: Notes\ntext: {{ include "test.notes" . | toJson }}\n')
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = helm("template", "autopilot", str(chart), "--namespace", "kafka-autopilot", "--values", str(values_file))
    (found,) = [doc for doc in yaml.safe_load_all(done.stdout) if doc and doc.get("kind") == "Notes"]
    return str(found["text"])


def test_notes_say_how_to_reach_the_leaders_rules(tmp_path: Path) -> None:
    service = notes({}, tmp_path / "service")
    assert "get lease autopilot-kafka-autopilot -o jsonpath='{.spec.holderIdentity}'" in service
    assert "port-forward pod/$LEADER 8080" in service
    assert "curl -s localhost:8080/rules" in service
    assert "DRY-RUN" in service
    sidecar = notes({**SIDECAR, "dryRun": False}, tmp_path / "sidecar")
    assert "Sidecar mode" in sidecar and "get lease" not in sidecar and "LIVE" in sidecar


def test_values_become_the_agents_flags_and_secrets_become_files() -> None:
    values = {
        "dryRun": False,
        "prometheus": {
            "url": "https://mimir.example:8080/prometheus",
            "tenant": "team-kafka",
            "bearerTokenSecret": {"name": "prom-token", "key": "token"},
            "caSecret": {"name": "prom-ca", "key": "ca.crt"},
        },
        "kafka": {
            "bootstrap": "kafka-bootstrap.kafka:9093",
            "securityProtocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "autopilot", "passwordSecret": {"name": "kafka-user"}},
            "tls": {"caSecret": {"name": "kafka-ca"}},
        },
        "policy": {"content": "apiVersion: kafka-autopilot.io/v1alpha1\nkind: AutopilotPolicy\n"},
        "rules": {"shipped": ["kafka-resize.yaml"], "fromCluster": True},
        "audit": {"evaluations": "sample:30"},
    }
    objects = render(values=values)
    args = container(objects)["args"]
    expected = [
        "--rules=/etc/kafka-autopilot/rules",
        "--cluster-rules",
        "--policy=/etc/kafka-autopilot/policy/policy.yaml",
        "--prometheus=https://mimir.example:8080/prometheus",
        "--prometheus-tenant=team-kafka",
        "--prometheus-bearer-token-file=/etc/kafka-autopilot/prometheus-token/token",
        "--prometheus-ca-file=/etc/kafka-autopilot/prometheus-ca/ca.crt",
        "--kafka=kafka-bootstrap.kafka:9093",
        "--kafka-security-protocol=SASL_SSL",
        "--kafka-sasl-mechanism=SCRAM-SHA-512",
        "--kafka-sasl-username=autopilot",
        "--kafka-sasl-password-file=/etc/kafka-autopilot/kafka-sasl/password",
        "--kafka-ca-file=/etc/kafka-autopilot/kafka-ca/ca.crt",
        "--audit-evaluations=sample:30",
    ]
    assert [arg for arg in args if arg in expected] == expected
    assert "--dry-run" not in args
    assert "--audit-evaluations=changes" in container(render(values={}))["args"]
    secrets = {
        v["secret"]["secretName"]
        for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert secrets == {"prom-token", "prom-ca", "kafka-user", "kafka-ca"}
    config = one(objects, "ConfigMap")["data"]
    assert set(config) == {"kafka-resize.yaml", "policy.yaml"}
    granted = rbac_rules(objects)
    for verb in ("list", "watch", "get"):  # AutopilotRules are followed (list, then watch) while the agent runs
        assert ("cluster", "kafka-autopilot.io", "autopilotrules", verb) in granted
    assert ("cluster", "kafka-autopilot.io", "autopilotrules/status", "update") in granted  # their status
    assert not {rule for rule in rbac_rules(render(values={})) if rule[2].startswith("autopilotrules")}


FULL = {
    "dryRun": False,
    "prometheus": {
        "url": "https://mimir.example:8080/prometheus",
        "tenant": "team-kafka",
        "bearerTokenSecret": {"name": "prom-token"},
        "caSecret": {"name": "prom-ca"},
        "insecureSkipVerify": True,
    },
    "kafka": {
        "bootstrap": "kafka-bootstrap.kafka:9093",
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "autopilot", "passwordSecret": {"name": "kafka-user"}},
        "tls": {"caSecret": {"name": "kafka-ca"}, "clientSecret": {"name": "kafka-autopilot-user"}},
    },
    "storageApi": {"url": "http://portworx-api.kube-system:9021", "tokenSecret": {"name": "px-token"}},
    "rules": {"fromCluster": True},
    "rbac": {"installCRDs": True, "approver": {"users": ["alice@example.com"], "groups": ["kafka-sre"]}},
    "metrics": {"perPvcSeries": True},
    "audit": {"evaluations": "all", "eventsTopic": "kafka-autopilot-decisions", "eventsBuffer": 500},
}
# `run` flags the chart does not render, and why: in a pod the service account is the identity, the
# audit trail is the container's stdout, and --scope-pod is the sidecar's (README.md's snippet).
NOT_RENDERED = {
    "--kubeconfig": "in-cluster config",
    "--audit": "stdout",
    "--scope-pod": "sidecar snippet",
    "--log-format": "the default (json) suits a cluster; extraArgs sets it",
    "--log-level": "the default (info); extraArgs sets it",
    "--help": "",
}


def run_flags() -> set[str]:
    (run,) = [
        parser
        for action in build_parser()._subparsers._group_actions  # type: ignore[union-attr]
        for name, parser in action.choices.items()
        if name == "run"
    ]
    return {flag for action in run._actions for flag in action.option_strings if flag.startswith("--")}


def sidecar_snippet_args() -> list[str]:
    readme = (CHART / "README.md").read_text()
    snippet = readme.split("## Sidecar mode", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = yaml.safe_load(snippet)["spec"]["template"]["spec"]
    (agent,) = [c for c in spec["containers"] if c["name"] == "kafka-autopilot"]
    return [str(arg) for arg in agent["args"]]


def test_every_run_flag_is_rendered_by_the_chart_or_left_out_for_a_reason() -> None:
    rendered = {arg.split("=", 1)[0] for arg in [*container(render(values=FULL))["args"], *sidecar_snippet_args()]}
    rendered.discard("run")
    assert rendered <= run_flags(), f"the chart renders flags `run` does not know: {rendered - run_flags()}"
    missing = run_flags() - rendered - set(NOT_RENDERED)
    assert not missing, f"`kafka-autopilot run` flags the chart cannot set: {sorted(missing)}"


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "every-value"])
def test_the_agent_parses_the_flags_the_chart_renders(values: dict[str, Any], tmp_path: Path) -> None:
    """The rendered container's arguments, as the kubelet would expand them, get `kafka-autopilot run`
    (its real parser, and the shipped policy's loader) as far as connecting to Kubernetes."""
    objects = render(values=values)
    root = tmp_path / "etc"
    config = one(objects, "ConfigMap")["data"]
    for name, text in config.items():
        folder = root / ("policy" if name == "policy.yaml" else "rules")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    args = [
        arg.replace("/etc/kafka-autopilot", str(root))
        .replace("$(POD_NAMESPACE)", "kafka-autopilot")
        .replace("$(POD_NAME)", "autopilot-0")
        for arg in container(objects)["args"]
    ]
    pki = generate_kafka_pki(pki=tmp_path / "pki")  # the TLS flags are checked: real PEM files
    pem = {"--kafka-ca-file": pki.ca_file, "--kafka-cert-file": pki.cert_file, "--kafka-key-file": pki.key_file}
    for arg in args:
        if arg.startswith("--") and f"={root}/" in arg and not arg.startswith(("--rules", "--policy")):
            flag, _, file = arg.partition("=")
            secret = Path(file)
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.write_text(pem[flag].read_text() if flag in pem else "secret\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args, "--kubeconfig", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    # Parsing succeeded: the run got as far as connecting to Kubernetes, which the missing kubeconfig refuses.
    assert done.returncode == 2 and "cannot reach Kubernetes" in done.stderr, done.stderr
    assert "policy problem" not in done.stderr


def test_a_client_certificate_secret_is_mounted_and_passed_as_the_mtls_flags() -> None:
    objects = render(values=STRIMZI_MTLS)
    agent = container(objects)
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]

    assert [
        arg
        for arg in agent["args"]
        if arg.startswith(("--kafka-security", "--kafka-ca", "--kafka-cert", "--kafka-key"))
    ] == [
        "--kafka-security-protocol=SSL",
        "--kafka-ca-file=/etc/kafka-autopilot/kafka-ca/ca.crt",
        "--kafka-cert-file=/etc/kafka-autopilot/kafka-client-tls/user.crt",
        "--kafka-key-file=/etc/kafka-autopilot/kafka-client-tls/user.key",
    ]
    (client,) = [volume for volume in volumes if volume["name"] == "autopilot-kafka-client-tls"]
    assert client["secret"] == {
        "secretName": "kafka-autopilot",
        "items": [{"key": "user.crt", "path": "user.crt"}, {"key": "user.key", "path": "user.key"}],
    }
    (mount,) = [m for m in agent["volumeMounts"] if m["name"] == "autopilot-kafka-client-tls"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/kafka-autopilot/kafka-client-tls", True)
    assert not any(arg.startswith("--kafka-cert-file") for arg in container(render(values={}))["args"])


def test_approver_users_and_groups_are_bound_to_the_approver_role_and_told_to_the_agent() -> None:
    subject = {"kind": "ServiceAccount", "name": "oncall-bot", "namespace": "ops"}
    values = {"rbac": {"approver": {"subjects": [subject], "users": ["alice@example.com"], "groups": ["kafka-sre"]}}}
    objects = render(values=values)

    args = container(objects)["args"]
    (binding,) = [b for b in of_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"].endswith("-approver")]

    assert [arg for arg in args if arg.startswith("--approver-")] == [
        "--approver-user=alice@example.com",
        "--approver-group=kafka-sre",
    ]
    assert binding["subjects"] == [
        subject,
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kafka-sre"},
    ]
    assert not [arg for arg in container(render(values={}))["args"] if arg.startswith("--approver-")]


def test_the_answered_by_admission_policy_is_rendered_only_when_asked_for() -> None:
    objects = render(values={"rbac": {"approver": {"admissionPolicy": True}}})

    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")

    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (["actionapprovals"], ["UPDATE"])
    assert all("request.userInfo" in check["expression"] for check in policy["spec"]["validations"])
    assert not of_kind(render(values={}), "ValidatingAdmissionPolicy")


def test_tls_secrets_without_a_tls_protocol_are_refused_by_name(tmp_path: Path) -> None:
    values = {"kafka": {**STRIMZI_MTLS["kafka"], "securityProtocol": "SASL_PLAINTEXT"}}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    done = helm("template", "autopilot", str(CHART), "--values", str(values_file), check=False)

    assert done.returncode != 0
    assert (
        "kafka.tls.caSecret and kafka.tls.clientSecret need kafka.securityProtocol SSL or SASL_SSL, not SASL_PLAINTEXT"
        in done.stderr
    )


def test_policy_by_name_content_or_none() -> None:
    shipped = {path.stem for path in (CHART / "files" / "policies").glob("*.yaml")}
    assert shipped == {"default", "conservative", "audit-only"}
    default = one(render(), "ConfigMap")["data"]["policy.yaml"]
    assert default == (REPO / "policies" / "default.yaml").read_text().rstrip("\n")
    assert "--policy=/etc/kafka-autopilot/policy/policy.yaml" in container(render())["args"]
    audit = one(render(values={"policy": {"name": "audit-only"}}), "ConfigMap")["data"]["policy.yaml"]
    assert "name: audit-only" in audit
    own = "apiVersion: kafka-autopilot.io/v1alpha1\nkind: AutopilotPolicy\nmetadata:\n  name: mine\n"
    assert "name: mine" in one(render(values={"policy": {"content": own}}), "ConfigMap")["data"]["policy.yaml"]
    none = render(values={"policy": {"name": ""}})
    assert "policy.yaml" not in one(none, "ConfigMap")["data"]
    assert not [arg for arg in container(none)["args"] if arg.startswith("--policy")]
    refused = helm("template", "x", str(CHART), "--set", "policy.name=nope", check=False)
    assert refused.returncode != 0 and 'policy.name "nope": no such shipped policy' in refused.stderr


def test_policies_in_the_chart_are_the_shipped_policies() -> None:
    shipped = sorted(path.name for path in (REPO / "policies").glob("*.yaml"))
    assert sorted(path.name for path in (CHART / "files" / "policies").glob("*.yaml")) == shipped
    for name in shipped:
        assert (CHART / "files" / "policies" / name).read_bytes() == (REPO / "policies" / name).read_bytes(), (
            f"helm/kafka-autopilot/files/policies/{name} differs from policies/{name}: run scripts/sync-chart.sh"
        )


def test_the_approver_role_is_what_the_approval_commands_call() -> None:
    objects = render(values={"rbac": {"approver": {"subjects": [{"kind": "Group", "name": "oncall"}]}}})
    (role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-approver")]
    assert role["rules"] == [
        {"apiGroups": ["kafka-autopilot.io"], "resources": ["actionapprovals"], "verbs": ["get", "list", "patch"]}
    ]
    (binding,) = [b for b in of_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"].endswith("-approver")]
    assert binding["subjects"] == [{"kind": "Group", "name": "oncall"}]
    assert not [b for b in of_kind(render(), "ClusterRoleBinding") if b["metadata"]["name"].endswith("-approver")]
    off = render(values={"rbac": {"approver": {"create": False}}})
    assert not [r for r in of_kind(off, "ClusterRole") if r["metadata"]["name"].endswith("-approver")]


def test_sidecar_mode_has_no_deployment_and_no_cluster_wide_power() -> None:
    objects = render(values=SIDECAR)
    assert not of_kind(objects, "Deployment") and not of_kind(objects, "PodDisruptionBudget")
    granted = rbac_rules(objects)
    cluster_resources = {resource for scope, _, resource, _ in granted if scope == "cluster"}
    assert not cluster_resources & {"nodes", "pods", "persistentvolumeclaims", "volumeattachments"}
    assert ("kafka", "", "pods", "get") in granted
    assert ("kafka", "", "persistentvolumeclaims", "patch") in granted
    assert ("kafka", "kafka-autopilot.io", "actionapprovals", "create") in granted
    agent_cluster = {g for g in granted if g[0] == "cluster" and g[3] not in ("list", "patch")}
    assert ("cluster", "kafka-autopilot.io", "actionapprovals", "create") not in agent_cluster
    assert not [g for g in granted if g[3] == "delete"]
    assert not [g for g in granted if g[2] == "leases"], "a sidecar elects no leader"


def test_service_mode_may_grow_strimzi_storage_specs_and_nothing_else_of_strimzis() -> None:
    """What the resize executor reads and patches for a Strimzi-owned PVC (agent.core.strimzi names the
    group), granted cluster-wide in service mode; no other Strimzi resource or verb."""
    granted = rbac_rules(render(values={}))
    owners = {(scope, resource, verb) for scope, group, resource, verb in granted if group == strimzi.GROUP}
    assert owners == {
        ("cluster", resource, verb) for resource in ("kafkanodepools", "kafkas") for verb in ("get", "patch")
    }
    assert not [g for g in rbac_rules(render(values=SIDECAR)) if g[1] == strimzi.GROUP]


def test_crds_in_the_chart_are_the_agents_crds() -> None:
    shipped = sorted(path.name for path in (REPO / "agent" / "resources" / "crds").glob("*.yaml"))
    assert sorted(path.name for path in (CHART / "crds").glob("*.yaml")) == shipped
    for name in shipped:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "agent" / "resources" / "crds" / name).read_bytes(), (
            f"helm/kafka-autopilot/crds/{name} differs from agent/resources/crds/{name}: run scripts/sync-chart.sh"
        )


def test_rules_in_the_chart_are_the_shipped_rules() -> None:
    for folder in ("rules", "rules-kubelet"):
        shipped = sorted(path.name for path in (REPO / folder).glob("*.yaml"))
        assert sorted(path.name for path in (CHART / "files" / folder).glob("*.yaml")) == shipped
        for name in shipped:
            assert (CHART / "files" / folder / name).read_bytes() == (REPO / folder / name).read_bytes(), (
                f"helm/kafka-autopilot/files/{folder}/{name} differs from {folder}/{name}: run scripts/sync-chart.sh"
            )
    rules = {path.name for path in (REPO / "rules").glob("*.yaml")}
    kubelet = {path.name for path in (REPO / "rules-kubelet").glob("*.yaml")}
    assert set(one(render(), "ConfigMap")["data"]) == {*(rules - {"kafka-resize.yaml"}), *kubelet, "policy.yaml"}
    portworx = render(values={"rules": {"volumeMetrics": "portworx"}})
    assert set(one(portworx, "ConfigMap")["data"]) == {*rules, "policy.yaml"}
    chosen = render(values={"rules": {"shipped": ["kafka-resize.yaml", "kafka-inodes.yaml"]}})
    assert set(one(chosen, "ConfigMap")["data"]) == {"kafka-resize.yaml", "kafka-inodes.yaml", "policy.yaml"}


def readme_rbac_rows() -> set[tuple[str, str, str]]:
    readme = (CHART / "README.md").read_text()
    table = readme.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in table.splitlines():
        cells = [cell.strip(" `") for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and line.startswith("|") and cells[0] not in ("apiGroup", "---"):
            for verb in re.split(r"[,\s]+", cells[2]):
                rows.add((cells[0], cells[1], verb))
    return rows


def test_readme_rbac_table_matches_the_granted_verbs() -> None:
    """Each (resource, verb) the roles grant, in either mode and with every option on, has a row in
    the README's RBAC table, and each row is granted by some rendering."""
    values = {"rules": {"fromCluster": True}, "rbac": {"installCRDs": True}}
    granted = rbac_rules(render(values=values)) | rbac_rules(render(values={**values, **SIDECAR}))
    granted_rows = {(group or "core", resource, verb) for _, group, resource, verb in granted}
    rows = readme_rbac_rows()
    assert not granted_rows - rows, f"README.md's RBAC table lacks {sorted(granted_rows - rows)}"
    assert not rows - granted_rows, f"README.md's RBAC table has rows nothing grants: {sorted(rows - granted_rows)}"


def test_the_agent_calls_nothing_the_roles_do_not_grant() -> None:
    """The other way round, from the code: every Kubernetes API method the agent's adapters call
    maps to a granted (resource, verb); a new call without its RBAC row fails here."""
    calls = {
        "list_persistent_volume_claim_for_all_namespaces": ("", "persistentvolumeclaims", "list"),
        "list_namespaced_persistent_volume_claim": ("", "persistentvolumeclaims", "list"),
        "read_namespaced_persistent_volume_claim": ("", "persistentvolumeclaims", "get"),
        "patch_namespaced_persistent_volume_claim": ("", "persistentvolumeclaims", "patch"),
        "list_namespace": ("", "namespaces", "list"),
        "read_namespace": ("", "namespaces", "get"),
        "create_namespace": ("", "namespaces", "create"),
        "list_node": ("", "nodes", "list"),
        "read_node": ("", "nodes", "get"),
        "patch_node": ("", "nodes", "patch"),
        "list_namespaced_lease": ("coordination.k8s.io", "leases", "list"),
        "list_lease_for_all_namespaces": ("coordination.k8s.io", "leases", "list"),
        "read_namespaced_lease": ("coordination.k8s.io", "leases", "get"),
        "create_namespaced_lease": ("coordination.k8s.io", "leases", "create"),
        "replace_namespaced_lease": ("coordination.k8s.io", "leases", "update"),
        "list_pod_for_all_namespaces": ("", "pods", "list"),
        "list_namespaced_pod": ("", "pods", "list"),
        "read_namespaced_pod": ("", "pods", "get"),
        "delete_namespaced_pod": ("", "pods", "delete"),
        "read_storage_class": ("storage.k8s.io", "storageclasses", "get"),
        "list_storage_class": ("storage.k8s.io", "storageclasses", "list"),
        "list_volume_attachment": ("storage.k8s.io", "volumeattachments", "list"),
        "delete_volume_attachment": ("storage.k8s.io", "volumeattachments", "delete"),
        "create_namespaced_event": ("events.k8s.io", "events", "create"),
        # the one custom object the agent watches (list, then watch): the AutopilotRules
        "list_cluster_custom_object": ("kafka-autopilot.io", "autopilotrules", "list"),
    }
    source = "".join(path.read_text() for path in (REPO / "agent" / "adapters" / "kubernetes").glob("*.py"))
    called = set(re.findall(r"self\._(?:core|storage|coordination|events)\.(\w+)", source))
    watched = set(re.findall(r"(?:CoreV1|StorageV1|CoordinationV1)Api\(api\)\.(\w+)", source))
    called |= watched
    assert len(called) > 15
    assert not called - set(calls), (
        f"Kubernetes calls this test does not map to RBAC yet: {sorted(called - set(calls))}"
    )
    values = {"rules": {"fromCluster": True}, "rbac": {"installCRDs": True}}
    granted = {(g, r, v) for _, g, r, v in rbac_rules(render(values=values)) | rbac_rules(render(values=SIDECAR))}
    needed = {calls[name] for name in called}
    needed |= {(group, resource, "watch") for group, resource, _ in (calls[name] for name in watched)}
    # Never needed from the chart: all-namespace Lease lists (watch() can, the agent does not), and
    # create_namespace (--install-crds creates the agent's namespace only when missing; the release's exists).
    unused = {
        ("coordination.k8s.io", "leases", "list"),
        ("coordination.k8s.io", "leases", "watch"),
        ("", "namespaces", "create"),
    }
    # The resize reads the claim it grows (KubeClient.get_pvc), in both modes: the chart grants that get.
    assert ("", "persistentvolumeclaims", "get") in needed
    assert not needed - granted - unused, sorted(needed - granted - unused)
    assert ("", "namespaces", "create") not in granted


# --- monitoring ----------------------------------------------------------------------------------


FAILED_RESIZES = (
    'kafka_autopilot_actions_total{rule="kafka-resize",action="openstorage.io.action.volume/resize",outcome="failed"}'
)


def alert_groups() -> dict[str, Any]:
    return {"groups": one(render(values=MONITORING), "PrometheusRule")["spec"]["groups"]}


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(yaml.safe_dump(alert_groups(), sort_keys=False))
    done = subprocess.run(
        [str(binaries().promtool), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_every_alert_links_its_runbook_section_in_operations_md() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    runbooks = operations.split("## Runbooks", 1)[1]
    alerts = [rule for group in alert_groups()["groups"] for rule in group["rules"] if "alert" in rule]
    assert len(alerts) == 9
    for alert in alerts:
        name = alert["alert"]
        assert alert["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert f"\n### {name}\n" in runbooks, f"docs/operations.md has no runbook section for {name}"


def test_alerts_fire_on_an_unhealthy_rule_a_failed_action_no_leader_and_a_waiting_approval(tmp_path: Path) -> None:
    """promtool's rule unit test: the alerts fire on the agent's own series, and stay quiet when healthy."""
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(alert_groups(), sort_keys=False))
    tests = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'kafka_autopilot_rule_healthy{rule="kafka-resize"}', "values": "0x20"},
                    {"series": 'kafka_autopilot_rule_healthy{rule="kafka-node-failure"}', "values": "1x20"},
                    {
                        "series": FAILED_RESIZES,
                        "values": "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                    },
                    {"series": 'up{job="autopilot-kafka-autopilot"}', "values": "1x20"},
                    {"series": 'kafka_autopilot_leader{job="autopilot-kafka-autopilot",pod="a"}', "values": "0x20"},
                    {"series": 'kafka_autopilot_leader{job="autopilot-kafka-autopilot",pod="b"}', "values": "0x20"},
                    {"series": 'kafka_autopilot_approvals_pending{rule="kafka-resize"}', "values": "1x90"},
                    {"series": 'kafka_autopilot_approvals_pending{rule="kafka-node-failure"}', "values": "0x90"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "KafkaAutopilotRuleUnhealthy",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "rule": "kafka-resize"}}],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "KafkaAutopilotActionFailed",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "rule": "kafka-resize",
                                    "action": "openstorage.io.action.volume/resize",
                                }
                            }
                        ],
                    },
                    {"eval_time": "15m", "alertname": "KafkaAutopilotDown", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "KafkaAutopilotNoLeader",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    },
                    {"eval_time": "30m", "alertname": "KafkaAutopilotApprovalPending", "exp_alerts": []},
                    {
                        "eval_time": "75m",
                        "alertname": "KafkaAutopilotApprovalPending",
                        "exp_alerts": [{"exp_labels": {"severity": "info", "rule": "kafka-resize"}}],
                    },
                ],
            }
        ],
    }
    # The annotations are templated; promtool compares them too, so the expectations take the rendered text.
    for case in tests["tests"][0]["alert_rule_test"]:  # type: ignore[index]
        for expected in case["exp_alerts"]:
            expected["exp_annotations"] = annotations_of(case["alertname"], expected["exp_labels"])
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [str(binaries().promtool), "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def annotations_of(alert: str, labels: dict[str, str]) -> dict[str, str]:
    (rule,) = [r for g in alert_groups()["groups"] for r in g["rules"] if r.get("alert") == alert]
    return {
        key: text.replace("{{ $labels.rule }}", labels.get("rule", "")).replace(
            "{{ $labels.action }}", labels.get("action", "")
        )
        for key, text in rule["annotations"].items()
    }


def test_dashboard_is_valid_json_whose_queries_parse() -> None:
    objects = render(values=MONITORING)
    dashboard = json.loads(dashboard_text(objects))
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 10
    rejected = check_promql([q.replace("$__rate_interval", "5m") for q in queries], promtool=binaries().promtool)
    assert rejected == {}
    used = set(re.findall(r"kafka_autopilot_\w+", " ".join(queries)))
    telemetry = (REPO / "agent" / "runtime" / "telemetry.py").read_text()
    assert all(name.removesuffix("_sum").removesuffix("_count") in telemetry for name in used)


def dashboard_text(objects: list[dict[str, Any]]) -> str:
    (config,) = [c for c in of_kind(objects, "ConfigMap") if "kafka-autopilot.json" in c.get("data", {})]
    return str(config["data"]["kafka-autopilot.json"])
