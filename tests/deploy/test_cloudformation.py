"""What cfn-lint and checkov cannot know about config/cloudformation: the stacks' promises.

``.ci/check-cloudformation`` runs these after cfn-lint has parsed and linted the templates.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import CONFIG_FILE_VARIABLE, Settings, env_name

TEMPLATES = Path(__file__).resolve().parents[2] / "config" / "cloudformation"
Template = dict[str, Any]
FARGATE_MAX_STOP_TIMEOUT = 120
FARGATE_MEMORY = {  # MiB per CPU size
    "256": {"512", "1024", "2048"},
    **{
        cpu: {str(mib) for mib in range(low, high + 1, 1024)}
        for cpu, low, high in [
            ("512", 1024, 4096),
            ("1024", 2048, 8192),
            ("2048", 4096, 16384),
            ("4096", 8192, 30720),
        ]
    },
}


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms, read as their long forms (``!Ref X`` is
    ``{"Ref": "X"}``, ``!GetAtt A.B`` is ``{"Fn::GetAtt": ["A", "B"]}``), as cfn-lint reads them."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load(name: str) -> Template:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    template: Template = yaml.load(text, Loader=_TemplateLoader)  # noqa: S506 -- safe, plus !Ref...
    return template


@pytest.fixture(scope="module")
def infra() -> Template:
    return load("infrastructure.yaml")


@pytest.fixture(scope="module")
def ecs() -> Template:
    return load("ecs-service.yaml")


@pytest.fixture(scope="module")
def container(ecs: Template) -> dict[str, Any]:
    """The worker's container definition."""
    definition: dict[str, Any] = ecs["Resources"]["TaskDefinition"]["Properties"][
        "ContainerDefinitions"
    ][0]
    return definition


@pytest.fixture(scope="module")
def environment(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["Name"]: variable["Value"] for variable in container["Environment"]}


def long_poll_wait(ecs: Template) -> int:
    return int(ecs["Mappings"]["Worker"]["LongPoll"]["WaitTimeSeconds"])


def import_of(export: str) -> dict[str, Any]:
    return {"Fn::ImportValue": {"Fn::Sub": f"${{InfrastructureStackName}}-{export}"}}


def sqs_metric(query: dict[str, Any], queue_export: str) -> str | None:
    """The name of the AWS/SQS metric a metric query (or an alarm's properties) reads on the
    queue exported as ``queue_export``; None for any other metric."""
    metric = query.get("MetricStat", {}).get("Metric", query)
    dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
    if metric.get("Namespace") != "AWS/SQS" or dimensions != {"QueueName": import_of(queue_export)}:
        return None
    name: str = metric["MetricName"]
    return name


class TestShutdown:
    """ECS waits for the worker's shutdown: stopTimeout = shutdown timeout + long-poll wait +
    10 s, within Fargate's 120 s, for every shutdown timeout the parameter admits."""

    def test_the_long_poll_wait_is_one_the_worker_accepts(self, ecs: Template) -> None:
        assert 1 <= long_poll_wait(ecs) <= 20

    def test_stop_timeout_is_shutdown_timeout_plus_long_poll_plus_10_s(self, ecs: Template) -> None:
        stop, wait = ecs["Mappings"]["StopTimeout"], long_poll_wait(ecs)
        timeouts = ecs["Parameters"]["ShutdownTimeout"]["AllowedValues"]
        seconds = {int(value): stop.get(str(value), {}).get("Seconds") for value in timeouts}
        assert seconds == {timeout: timeout + wait + 10 for timeout in seconds}

    def test_stop_timeout_is_within_fargate_maximum(self, ecs: Template) -> None:
        seconds = [entry["Seconds"] for entry in ecs["Mappings"]["StopTimeout"].values()]
        assert max(seconds) <= FARGATE_MAX_STOP_TIMEOUT

    def test_the_container_stop_timeout_follows_the_shutdown_timeout(
        self, container: dict[str, Any]
    ) -> None:
        mapped = {"Fn::FindInMap": ["StopTimeout", {"Ref": "ShutdownTimeout"}, "Seconds"]}
        assert container.get("StopTimeout") == mapped

    def test_the_worker_shutdown_timeout_is_the_parameter(
        self, environment: dict[str, Any]
    ) -> None:
        assert environment.get("WORKER_SHUTDOWN_TIMEOUT") == {"Ref": "ShutdownTimeout"}

    def test_the_worker_long_poll_wait_is_the_mapping(self, environment: dict[str, Any]) -> None:
        mapped = {"Fn::FindInMap": ["Worker", "LongPoll", "WaitTimeSeconds"]}
        assert environment.get("WORKER_WAIT_TIME_SECONDS") == mapped


def reprocessing_input(ecs: Template) -> str:
    """The RunTask overrides of the scheduled DLQ reprocessing, placeholders replaced by ``x``."""
    text, _ = ecs["Resources"]["DlqReprocessing"]["Properties"]["Target"]["Input"]["Fn::Sub"]
    return re.sub(r"\$\{[^}]+\}", "x", text)


@pytest.fixture(scope="module")
def reprocessing(ecs: Template) -> dict[str, Any]:
    overrides: dict[str, Any] = json.loads(reprocessing_input(ecs))
    return overrides


def container_override(reprocessing: dict[str, Any]) -> dict[str, Any]:
    (override,) = reprocessing["containerOverrides"]
    return dict(override)


class TestDlqReprocessing:
    """The scheduled reprocessing runs the worker over the DLQ until it is idle."""

    def test_the_overrides_are_json(self, ecs: Template) -> None:
        json.loads(reprocessing_input(ecs))  # RunTask accepts nothing else

    def test_overrides_the_worker_container(
        self, reprocessing: dict[str, Any], container: dict[str, Any]
    ) -> None:
        assert container_override(reprocessing)["name"] == container["Name"]

    def test_runs_the_worker_on_the_dlq_until_idle(self, reprocessing: dict[str, Any]) -> None:
        command = container_override(reprocessing).get("command", [])
        assert command[:1] == ["run"]
        assert "--queue" in command
        assert "--exit-when-idle" in command

    def test_turns_task_protection_off(self, reprocessing: dict[str, Any]) -> None:
        """A task started by RunTask is in no service, and ECS refuses to protect it."""
        protection = {"name": "WORKER_ECS_TASK_PROTECTION", "value": "off"}
        assert protection in container_override(reprocessing).get("environment", [])


class TestSettings:
    """The worker refuses unknown ``WORKER_*`` variables: a typo would stop every task."""

    def test_every_worker_variable_is_a_setting_of_the_worker(
        self, environment: dict[str, Any], reprocessing: dict[str, Any]
    ) -> None:
        known = {env_name(name) for name in Settings.model_fields} | {CONFIG_FILE_VARIABLE}
        overridden = {v["name"] for v in container_override(reprocessing).get("environment", [])}
        names = {name for name in set(environment) | overridden if name.startswith("WORKER_")}
        assert names - known == set()


class TestFargate:
    """Only CPU and memory sizes that Fargate pairs can be deployed."""

    def test_each_cpu_size_has_a_rule_admitting_only_its_memory_sizes(self, ecs: Template) -> None:
        rules = {  # the CPU size a rule is about: the memory sizes it admits
            rule["RuleCondition"]["Fn::Equals"][1]: rule["Assertions"][0]["Assert"]["Fn::Contains"]
            for rule in ecs.get("Rules", {}).values()
        }
        for cpu in ecs["Parameters"]["Cpu"]["AllowedValues"]:
            assert cpu in rules, f"no rule on the memory sizes for {cpu} CPU units"
            admitted, _ = rules[cpu]
            assert set(admitted) <= FARGATE_MEMORY.get(cpu, set()), cpu

    def test_the_default_cpu_and_memory_are_a_fargate_pairing(self, ecs: Template) -> None:
        parameters = ecs["Parameters"]
        cpu, memory = parameters["Cpu"]["Default"], parameters["Memory"]["Default"]
        assert memory in FARGATE_MEMORY.get(cpu, set())


class TestPermissions:
    """Least privilege: the worker and its task get what they use and nothing more."""

    def test_the_worker_policy_grants_exactly_what_worker_run_needs(self, infra: Template) -> None:
        """No write to the DLQ."""
        document = infra["Resources"]["WorkerPolicy"]["Properties"]["PolicyDocument"]
        actions: dict[str, list[str]] = {}
        for statement in document["Statement"]:
            action = statement["Action"]
            actions[statement["Sid"]] = sorted([action] if isinstance(action, str) else action)
        assert actions == {
            "ConsumeTheQueue": [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ],
            "ReadTheDeadLetterQueue": [
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ListDeadLetterSourceQueues",
                "sqs:ReceiveMessage",
            ],
            "DecryptMessagesThroughSqs": ["kms:Decrypt"],
        }

    def test_the_task_role_may_only_protect_this_cluster_tasks(self, ecs: Template) -> None:
        """Task scale-in protection, for the tasks of this cluster."""
        policies = ecs["Resources"]["TaskRole"]["Properties"].get("Policies", [])
        granted = [
            (statement["Action"], statement["Resource"])
            for policy in policies
            for statement in policy["PolicyDocument"]["Statement"]
        ]
        tasks = "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/${ClusterName}/*"
        assert granted == [("ecs:UpdateTaskProtection", {"Fn::Sub": tasks})]


class TestScaling:
    """Scaling counts what a task works on, not only what waits, and can go to zero and back."""

    def test_target_tracking_on_visible_plus_in_flight_per_running_task(
        self, ecs: Template
    ) -> None:
        """Counting visible messages only would scale in tasks busy with long jobs."""
        policy = ecs["Resources"]["ScalingPolicy"]["Properties"]
        metrics = policy["TargetTrackingScalingPolicyConfiguration"][
            "CustomizedMetricSpecification"
        ]["Metrics"]
        ids = {
            sqs_metric(m, "QueueName") or m["MetricStat"]["Metric"]["MetricName"]: m["Id"]
            for m in metrics
            if "MetricStat" in m
        }
        (returned,) = [m for m in metrics if m.get("ReturnData")]
        visible, in_flight, tasks = (
            ids.get(name)
            for name in (
                "ApproximateNumberOfMessagesVisible",
                "ApproximateNumberOfMessagesNotVisible",
                "RunningTaskCount",
            )
        )
        assert returned.get("Expression") == f"({visible} + {in_flight}) / {tasks}"

    def test_min_tasks_admits_zero(self, ecs: Template) -> None:
        assert ecs["Parameters"]["MinTasks"].get("MinValue") == 0

    def test_the_scalable_target_minimum_is_min_tasks(self, ecs: Template) -> None:
        target = ecs["Resources"]["ScalableTarget"]["Properties"]
        assert target["MinCapacity"] == {"Ref": "MinTasks"}

    def test_scaling_to_zero_is_min_tasks_zero(self, ecs: Template) -> None:
        condition = ecs.get("Conditions", {}).get("ScaleToZero")
        assert condition == {"Fn::Equals": [{"Ref": "MinTasks"}, 0]}


class TestWakeFromZero:
    """With no task, target tracking has no ratio to track: a step policy on the queue's
    visible messages starts the first task, and only ever adds capacity."""

    def test_a_policy_and_an_alarm_exist_when_scaling_to_zero(self, ecs: Template) -> None:
        resources = ecs["Resources"]
        assert resources.get("WakeFromZeroPolicy", {}).get("Condition") == "ScaleToZero"
        assert resources.get("WakeFromZeroAlarm", {}).get("Condition") == "ScaleToZero"

    def test_the_policy_only_adds_tasks(self, ecs: Template) -> None:
        policy = ecs["Resources"]["WakeFromZeroPolicy"]["Properties"]
        steps = policy["StepScalingPolicyConfiguration"]
        assert steps["AdjustmentType"] == "ChangeInCapacity"
        assert steps["StepAdjustments"]
        assert all(step["ScalingAdjustment"] > 0 for step in steps["StepAdjustments"])

    def test_the_alarm_starts_the_policy(self, ecs: Template) -> None:
        alarm = ecs["Resources"]["WakeFromZeroAlarm"]["Properties"]
        assert alarm["AlarmActions"] == [{"Ref": "WakeFromZeroPolicy"}]

    def test_the_alarm_watches_the_queue_visible_messages(self, ecs: Template) -> None:
        alarm = ecs["Resources"]["WakeFromZeroAlarm"]["Properties"]
        watched = {sqs_metric(query, "QueueName") for query in alarm.get("Metrics", [])}
        assert "ApproximateNumberOfMessagesVisible" in watched


@pytest.fixture(scope="module")
def dlq_alarms(ecs: Template) -> dict[str, dict[str, Any]]:
    """CloudWatch's alarms on the DLQ's metrics, by metric name."""
    return {
        name: resource
        for resource in ecs["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and (name := sqs_metric(resource["Properties"], "DeadLetterQueueName"))
    }


class TestDlqAlarms:
    """CloudWatch watches the DLQ, so that alerting works with no task running."""

    @pytest.mark.parametrize(
        "metric", ["ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"]
    )
    def test_an_alarm_watches_the_dlq_whatever_the_parameters(
        self, dlq_alarms: dict[str, dict[str, Any]], metric: str
    ) -> None:
        assert metric in dlq_alarms
        assert "Condition" not in dlq_alarms[metric]

    def test_the_depth_alarm_fires_on_a_single_message(
        self, dlq_alarms: dict[str, dict[str, Any]]
    ) -> None:
        alarm = dlq_alarms["ApproximateNumberOfMessagesVisible"]["Properties"]
        assert alarm["Threshold"] == 0
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
