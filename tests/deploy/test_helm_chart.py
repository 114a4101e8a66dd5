"""The chart's promises, on the manifests it renders with each value set of ``helm/ci/``.

Tests taking ``rendering`` run once per value set; those about a kind only some value sets render
take ``renderings`` and fail when no value set renders that kind.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    BAD_VALUE_SETS,
    CHART,
    ROOT,
    Helm,
    Manifest,
    Rendering,
    renderings_with,
    value_sets,
)
from worker.config import CONFIG_FILE_VARIABLE, Settings, env_name

KNOWN_VARIABLES = {env_name(name) for name in Settings.model_fields} | {CONFIG_FILE_VARIABLE}
ALERTS = yaml.safe_load((ROOT / "config" / "alerts.yml").read_text(encoding="utf-8"))
PRESENCE_GROUP = "sqs-worker-presence"  # SqsWorkerAbsent: no pod is the idle state at zero


def pod_templates(rendering: Rendering) -> list[Manifest]:
    """The pods the chart runs: the Deployment's, and each CronJob's."""
    deployment = rendering.only("Deployment")["spec"]["template"]
    jobs = [c["spec"]["jobTemplate"]["spec"]["template"] for c in rendering.of_kind("CronJob")]
    return [deployment, *jobs]


def containers(rendering: Rendering) -> list[Manifest]:
    return [c for pod in pod_templates(rendering) for c in pod["spec"]["containers"]]


def environment(rendering: Rendering) -> dict[str, str]:
    """The worker's settings: the ConfigMap it loads with ``envFrom``."""
    data: dict[str, str] = rendering.only("ConfigMap")["data"]
    return data


def scales_to_zero(rendering: Rendering) -> bool:
    return any(so["spec"]["minReplicaCount"] == 0 for so in rendering.of_kind("ScaledObject"))


class TestSettings:
    """The worker refuses unknown ``WORKER_*`` variables: the chart sets none."""

    def test_every_worker_value_names_a_setting_of_the_worker(self) -> None:
        schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
        keys = set(schema["properties"]["worker"]["properties"]) - {"region"}  # AWS_REGION
        variables = {key: "WORKER_" + re.sub(r"([A-Z])", r"_\1", key).upper() for key in keys}
        unknown = {key: v for key, v in variables.items() if v not in KNOWN_VARIABLES}
        assert unknown == {}, "values.schema.json: worker.* values the worker does not know"

    def test_the_config_map_sets_only_settings_the_worker_knows(self, rendering: Rendering) -> None:
        assert set(environment(rendering)) - KNOWN_VARIABLES - {"AWS_REGION"} == set()


class TestReplicas:
    """An autoscaler owns the replica count when there is one, and there is at most one."""

    def test_replicas_are_set_exactly_when_no_autoscaler_is_rendered(
        self, rendering: Rendering
    ) -> None:
        autoscaled = rendering.has("ScaledObject") or rendering.has("HorizontalPodAutoscaler")
        assert ("replicas" in rendering.only("Deployment")["spec"]) is not autoscaled

    def test_at_most_one_autoscaler_is_rendered(self, rendering: Rendering) -> None:
        assert not (rendering.has("ScaledObject") and rendering.has("HorizontalPodAutoscaler"))


class TestPods:
    """The Deployment's and the CronJob's pods: shut down in time, hardened, rolled on change."""

    def test_grace_period_exceeds_shutdown_timeout_plus_long_poll_plus_5_s(
        self, rendering: Rendering
    ) -> None:
        env = environment(rendering)
        floor = float(env["WORKER_SHUTDOWN_TIMEOUT"]) + float(env["WORKER_WAIT_TIME_SECONDS"]) + 5
        for pod in pod_templates(rendering):
            assert pod["spec"]["terminationGracePeriodSeconds"] > floor

    def test_pods_roll_when_the_config_changes(self, rendering: Rendering) -> None:
        for pod in pod_templates(rendering):
            assert "checksum/config" in pod["metadata"].get("annotations", {})

    def test_the_service_account_token_is_not_mounted(self, rendering: Rendering) -> None:
        for pod in pod_templates(rendering):
            assert pod["spec"].get("automountServiceAccountToken") is False

    def test_service_links_are_off(self, rendering: Rendering) -> None:
        """Else a Service named ``worker`` (``nameOverride=worker``) would inject
        ``WORKER_SERVICE_HOST``, ``WORKER_PORT_8080_TCP``, ..., which the worker refuses."""
        for pod in pod_templates(rendering):
            assert pod["spec"].get("enableServiceLinks") is False

    def test_containers_are_hardened(self, rendering: Rendering) -> None:
        """Non-root as the image's uid, read-only root filesystem, no capabilities, seccomp."""
        for container in containers(rendering):
            context = container["securityContext"]
            assert context.get("readOnlyRootFilesystem") is True, container["name"]
            assert context.get("runAsNonRoot") is True, container["name"]
            assert context.get("runAsUser") == 10001, container["name"]
            assert context.get("allowPrivilegeEscalation") is False, container["name"]
            assert context.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault"

    def test_containers_have_a_writable_tmp(self, rendering: Rendering) -> None:
        for container in containers(rendering):
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, container["name"]  # noqa: S108 -- the container's own /tmp


class TestMonitoring:
    """The PrometheusRule is the project's alerts; the ServiceMonitor sets the job they match."""

    def test_the_alerts_have_the_presence_group_the_chart_leaves_out(self) -> None:
        assert PRESENCE_GROUP in {group["name"] for group in ALERTS["groups"]}

    def test_the_prometheus_rule_carries_config_alerts(
        self, renderings: dict[str, Rendering]
    ) -> None:
        chosen = [r for r in renderings_with("PrometheusRule", renderings) if not scales_to_zero(r)]
        assert chosen, "no value set renders a PrometheusRule without scaling to zero"
        for rendering in chosen:
            groups = rendering.only("PrometheusRule")["spec"]["groups"]
            assert groups[: len(ALERTS["groups"])] == ALERTS["groups"], rendering.name

    def test_scaled_to_zero_the_prometheus_rule_leaves_out_the_presence_group(
        self, renderings: dict[str, Rendering]
    ) -> None:
        chosen = [r for r in renderings_with("PrometheusRule", renderings) if scales_to_zero(r)]
        assert chosen, "no value set renders a PrometheusRule while scaling to zero"
        shipped = [g for g in ALERTS["groups"] if g["name"] != PRESENCE_GROUP]
        for rendering in chosen:
            groups = rendering.only("PrometheusRule")["spec"]["groups"]
            assert groups[: len(shipped)] == shipped, rendering.name
            assert PRESENCE_GROUP not in {group["name"] for group in groups}, rendering.name

    def test_the_service_monitor_sets_the_job_the_alerts_match(
        self, renderings: dict[str, Rendering]
    ) -> None:
        for rendering in renderings_with("ServiceMonitor", renderings):
            relabel = rendering.only("ServiceMonitor")["spec"]["endpoints"][0]["relabelings"][0]
            assert relabel.get("targetLabel") == "job", rendering.name
            assert relabel.get("replacement") == "sqs-worker", rendering.name


class TestKeda:
    """KEDA scales the Deployment on the queue the worker consumes."""

    def test_the_scaled_object_watches_the_queue_the_worker_consumes(
        self, renderings: dict[str, Rendering]
    ) -> None:
        for rendering in renderings_with("ScaledObject", renderings):
            (trigger,) = rendering.only("ScaledObject")["spec"]["triggers"]
            queue = environment(rendering)["WORKER_QUEUE_URL"]
            assert trigger["metadata"]["queueURL"] == queue, rendering.name


POD_IDENTITY = {"169.254.170.23/32", "fd00:ec2::23/128"}
INSTANCE_METADATA = {"169.254.169.254/32", "fd00:ec2::254/128"}
EGRESS_SWITCHES = {  # the switch of each case, and where TCP 80 may then go
    "default": ([], POD_IDENTITY),
    "instance-metadata": (
        ["networkPolicy.egress.allowInstanceMetadata=true"],
        POD_IDENTITY | INSTANCE_METADATA,
    ),
    "no-pod-identity": (["networkPolicy.egress.allowPodIdentity=false"], set()),
}
Ports = dict[tuple[int, str], set[str]]


def network_policy(helm: Helm, *switches: str) -> Manifest:
    """The NetworkPolicy of the default value set, enabled, with ``switches`` set."""
    sets = [arg for value in ("networkPolicy.enabled=true", *switches) for arg in ("--set", value)]
    rendering = helm.render(
        CHART / "ci" / "default-values.yaml", *sets, "--show-only", "templates/networkpolicy.yaml"
    )
    return rendering.only("NetworkPolicy")


def egress(policy: Manifest) -> Ports:
    """``{(port, protocol): destinations}``: CIDRs, ``any`` for a rule with no ``to``, ``peer``
    for a selector."""
    ports: Ports = {}
    for rule in policy["spec"].get("egress", []):
        peers: list[dict[str, Any]] = rule.get("to") or []
        destinations = {
            str(ipaddress.ip_network(peer["ipBlock"]["cidr"])) if "ipBlock" in peer else "peer"
            for peer in peers
        } or {"any"}
        for port in rule["ports"]:
            ports.setdefault((port["port"], port["protocol"]), set()).update(destinations)
    return ports


class TestNetworkPolicyEgress:
    """Where the pods may connect, per switch: IRSA needs DNS and HTTPS (STS); EKS Pod Identity
    the agent on the node (TCP 80), on by default; an instance role IMDS (TCP 80), only when
    asked."""

    @pytest.fixture(params=sorted(EGRESS_SWITCHES))
    def case(self, request: pytest.FixtureRequest, helm: Helm) -> tuple[Manifest, set[str]]:
        switches, on_port_80 = EGRESS_SWITCHES[request.param]
        return network_policy(helm, *switches), on_port_80

    def test_egress_is_restricted(self, case: tuple[Manifest, set[str]]) -> None:
        policy, _ = case
        assert "Egress" in policy["spec"]["policyTypes"]

    def test_tcp_80_reaches_only_the_credential_endpoints_switched_on(
        self, case: tuple[Manifest, set[str]]
    ) -> None:
        policy, on_port_80 = case
        assert egress(policy).get((80, "TCP"), set()) == on_port_80

    def test_https_reaches_aws_apis_over_ipv4_and_ipv6(
        self, case: tuple[Manifest, set[str]]
    ) -> None:
        policy, _ = case
        assert {"0.0.0.0/0", "::/0"} <= egress(policy).get((443, "TCP"), set())

    def test_dns_is_allowed_over_udp_and_tcp(self, case: tuple[Manifest, set[str]]) -> None:
        policy, _ = case
        assert {(53, "UDP"), (53, "TCP")} <= set(egress(policy))

    def test_no_other_port_is_open(self, case: tuple[Manifest, set[str]]) -> None:
        policy, _ = case
        assert set(egress(policy)) <= {(80, "TCP"), (443, "TCP"), (53, "UDP"), (53, "TCP")}

    def test_egress_is_open_when_not_restricted(self, helm: Helm) -> None:
        policy = network_policy(helm, "networkPolicy.egress.restrict=false")
        assert "Egress" not in policy["spec"]["policyTypes"]


def expected_error(values: Path) -> str:
    """The ``# expect: <part of the error>`` line of a bad value set."""
    found = re.search(r"^# expect: (.+)$", values.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, f"{values.name} has no '# expect: <part of the error>' line"
    return found[1]


class TestBadValueSets:
    """Each value set in ``.ci/helm-bad-values/`` is refused, with the message it expects."""

    @pytest.mark.parametrize("values", value_sets(BAD_VALUE_SETS), ids=lambda path: path.stem)
    def test_is_rejected_with_its_message(self, helm: Helm, values: Path) -> None:
        expect = expected_error(values)
        done = helm.template("-f", str(values))
        assert done.returncode != 0, f"accepted; it must be rejected with: {expect}"
        assert expect in done.stdout + done.stderr
