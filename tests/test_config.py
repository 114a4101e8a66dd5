"""Settings: defaults, environment, TOML file and flags, and one problem line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import (
    BackoffMode,
    BatchItemFailures,
    EnvelopeMode,
    HandlerType,
    LogFormat,
    LogLevel,
    Settings,
    load_settings,
)
from worker.errors import ConfigurationError
from worker.ops.cli import EXIT_CONFIGURATION, main

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"


def problems_of(
    *, config_file: Path | None = None, overrides: dict[str, object] | None = None
) -> list[str]:
    """The problem lines ``load_settings`` reports."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config_file=config_file, overrides=overrides)
    return caught.value.problems


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    """A configuration file path; the test writes its contents."""
    return tmp_path / "worker.toml"


class TestDefaults:
    """With nothing set, every setting has its documented default."""

    def test_defaults(self) -> None:
        settings = load_settings()
        assert settings.queue is None
        assert settings.queue_url is None
        assert settings.queue_name is None
        assert settings.endpoint_url is None
        assert settings.handler is None
        assert settings.handler_type is HandlerType.MESSAGE
        assert settings.sns_envelope is EnvelopeMode.AUTO
        assert settings.batch_size == 10
        assert settings.max_batching_window == 0
        assert settings.filter_criteria is None
        assert settings.report_batch_item_failures is BatchItemFailures.AUTO
        assert settings.memory_limit_in_mb is None  # the container's limit, read at start
        assert settings.concurrency == 10
        assert settings.pollers is None
        assert settings.wait_time_seconds == 20
        assert settings.visibility_timeout is None
        assert settings.max_processing_seconds == 900
        assert settings.shutdown_timeout == 30
        assert settings.exit_when_idle is None
        assert settings.backoff is BackoffMode.EXPONENTIAL
        assert settings.backoff_base_seconds == 2.0
        assert settings.backoff_max_seconds == 300
        assert settings.allow_no_dlq is False
        assert settings.max_receive_count == 5
        assert settings.raw_message_delivery is False
        assert settings.filter_policy is None
        assert settings.http_port == 8080
        assert settings.log_level is LogLevel.INFO
        assert settings.log_format is LogFormat.AUTO
        assert settings.log_message_bodies is False

    def test_region_from_the_test_session(self) -> None:
        assert load_settings().region == "us-east-1"

    def test_settings_are_frozen(self) -> None:
        settings = load_settings()
        with pytest.raises(ValueError, match="frozen"):
            settings.concurrency = 3


class TestEnvironment:
    """Each setting is read from ``WORKER_<NAME>``."""

    def test_values_are_read_and_converted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_QUEUE_NAME", "orders")
        monkeypatch.setenv("WORKER_HANDLER", "app.handlers:handle")
        monkeypatch.setenv("WORKER_HANDLER_TYPE", "lambda")
        monkeypatch.setenv("WORKER_CONCURRENCY", "25")
        monkeypatch.setenv("WORKER_REPORT_BATCH_ITEM_FAILURES", "false")
        monkeypatch.setenv("WORKER_EXIT_WHEN_IDLE", "1.5")
        monkeypatch.setenv("WORKER_BACKOFF", "off")
        monkeypatch.setenv("WORKER_SNS_ENVELOPE", "raw")
        monkeypatch.setenv("WORKER_LOG_LEVEL", "debug")
        settings = load_settings()
        assert settings.queue == "orders"
        assert settings.handler == "app.handlers:handle"
        assert settings.handler_type is HandlerType.LAMBDA
        assert settings.concurrency == 25
        assert settings.report_batch_item_failures is BatchItemFailures.FALSE
        assert settings.exit_when_idle == 1.5
        assert settings.backoff is BackoffMode.OFF
        assert settings.sns_envelope is EnvelopeMode.RAW
        assert settings.log_level is LogLevel.DEBUG

    def test_queue_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_QUEUE_URL", QUEUE_URL)
        assert load_settings().queue == QUEUE_URL

    def test_empty_variable_is_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_CONCURRENCY", "")
        assert load_settings().concurrency == 10


class TestPrecedence:
    """Flags win over the environment, which wins over the TOML file, which wins over defaults."""

    def test_file_over_defaults(self, toml_file: Path) -> None:
        toml_file.write_text('concurrency = 3\nqueue_name = "orders"\n', encoding="utf-8")
        settings = load_settings(config_file=toml_file)
        assert settings.concurrency == 3
        assert settings.queue_name == "orders"

    def test_environment_over_file(self, toml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        toml_file.write_text("concurrency = 3\nbatch_size = 4\n", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONCURRENCY", "5")
        settings = load_settings(config_file=toml_file)
        assert settings.concurrency == 5
        assert settings.batch_size == 4

    @pytest.mark.parametrize(
        ("in_file", "environment"),
        [
            ('queue_name = "shared"', ("queue_url", "http://sqs.test/1/mine")),
            ('queue_url = "http://sqs.test/1/shared"', ("queue_name", "mine")),
            ('topic_name = "shared"', ("topic_arn", "arn:aws:sns:us-east-1:1:t")),
        ],
    )
    def test_the_environment_over_the_file_naming_the_same_thing_another_way(
        self,
        toml_file: Path,
        monkeypatch: pytest.MonkeyPatch,
        in_file: str,
        environment: tuple[str, str],
    ) -> None:
        # Was refused: "set WORKER_QUEUE_URL or WORKER_QUEUE_NAME, not both".
        field, value = environment
        toml_file.write_text(in_file + "\n", encoding="utf-8")
        monkeypatch.setenv(f"WORKER_{field.upper()}", value)
        settings = load_settings(config_file=toml_file)
        assert getattr(settings, field) == value
        file_field = in_file.split(" ", 1)[0]
        assert getattr(settings, file_field) is None

    def test_flags_over_environment(self, toml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        toml_file.write_text("concurrency = 3\n", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONCURRENCY", "5")
        settings = load_settings(config_file=toml_file, overrides={"concurrency": 7})
        assert settings.concurrency == 7

    def test_unset_flag_does_not_override(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_CONCURRENCY", "5")
        assert load_settings(overrides={"concurrency": None}).concurrency == 5

    def test_file_named_by_environment(
        self, toml_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        toml_file.write_text("concurrency = 3\n", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONFIG_FILE", str(toml_file))
        assert load_settings().concurrency == 3

    def test_explicit_file_over_the_environment_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from_env, explicit = tmp_path / "env.toml", tmp_path / "explicit.toml"
        from_env.write_text("concurrency = 3\n", encoding="utf-8")
        explicit.write_text("concurrency = 4\n", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONFIG_FILE", str(from_env))
        assert load_settings(config_file=explicit).concurrency == 4

    def test_no_file_is_read_unless_named(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "worker.toml").write_text("concurrency = 3\n", encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        assert load_settings().concurrency == 10


class TestRegion:
    """The region: ``WORKER_REGION``, then ``AWS_REGION``, then ``AWS_DEFAULT_REGION``."""

    def test_aws_default_region(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
        assert load_settings().region == "eu-west-3"

    def test_aws_region_over_aws_default_region(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_REGION", "eu-west-2")
        assert load_settings().region == "eu-west-2"

    def test_worker_region_over_aws_region(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_REGION", "eu-west-2")
        monkeypatch.setenv("WORKER_REGION", "ap-south-1")
        assert load_settings().region == "ap-south-1"

    def test_flag_over_every_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_REGION", "eu-west-2")
        monkeypatch.setenv("WORKER_REGION", "ap-south-1")
        assert load_settings(overrides={"region": "sa-east-1"}).region == "sa-east-1"

    def test_none_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AWS_DEFAULT_REGION")
        assert load_settings().region is None

    def test_from_the_file_when_no_variable_is_set(
        self, toml_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("AWS_DEFAULT_REGION")
        toml_file.write_text('region = "eu-north-1"\n', encoding="utf-8")
        assert load_settings(config_file=toml_file).region == "eu-north-1"

    def test_variable_over_the_file(self, toml_file: Path) -> None:
        toml_file.write_text('region = "eu-north-1"\n', encoding="utf-8")
        assert load_settings(config_file=toml_file).region == "us-east-1"

    def test_unprefixed_region_variable_is_not_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGION", "xx-nowhere-1")
        monkeypatch.setenv("WORKER_REGION", "ap-south-1")
        assert load_settings().region == "ap-south-1"


class TestProblems:
    """Every mistake is reported at once, one line each, naming the variable."""

    def test_one_line_per_bad_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_CONCURRENCY", "0")
        monkeypatch.setenv("WORKER_HANDLER_TYPE", "nope")
        problems = problems_of()
        assert len(problems) == 2
        assert sorted(problem.split(":")[0] for problem in problems) == [
            "WORKER_CONCURRENCY",
            "WORKER_HANDLER_TYPE",
        ]
        assert all("\n" not in problem for problem in problems)
        assert (
            "WORKER_CONCURRENCY: Input should be greater than or equal to 1 (got '0')" in problems
        )
        assert any("'message' or 'lambda'" in p and "(got 'nope')" in p for p in problems)

    def test_error_message_joins_problems(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_CONCURRENCY", "0")
        monkeypatch.setenv("WORKER_BATCH_SIZE", "10001")
        with pytest.raises(ConfigurationError) as caught:
            load_settings()
        assert str(caught.value) == "; ".join(caught.value.problems)
        assert len(caught.value.problems) == 2

    @pytest.mark.parametrize(
        ("variable", "value", "match"),
        [
            pytest.param("WORKER_CONCURRENCY", "many", "valid integer", id="not-a-number"),
            pytest.param(
                "WORKER_BATCH_SIZE", "10001", "less than or equal to 10000", id="batch-size"
            ),
            pytest.param("WORKER_WAIT_TIME_SECONDS", "21", "less than or equal to 20", id="wait"),
            pytest.param(
                "WORKER_MEMORY_LIMIT_IN_MB", "64", "greater than or equal to 128", id="mem"
            ),
            pytest.param("WORKER_BACKOFF_BASE_SECONDS", "0", "greater than 0", id="base-zero"),
            pytest.param("WORKER_EXIT_WHEN_IDLE", "-1", "greater than 0", id="idle-negative"),
            pytest.param("WORKER_EXIT_WHEN_IDLE", "inf", "finite number", id="idle-inf"),
            pytest.param("WORKER_BACKOFF_BASE_SECONDS", "nan", "finite number", id="base-nan"),
            pytest.param("WORKER_MAX_BATCHING_WINDOW", "nan", "finite number", id="window-nan"),
            pytest.param("WORKER_SNS_ENVELOPE", "json", "'auto', 'sns' or 'raw'", id="envelope"),
            pytest.param("WORKER_ALLOW_NO_DLQ", "maybe", "valid boolean", id="boolean"),
            pytest.param("WORKER_ENDPOINT_URL", "localhost:4566", "http:// or https://", id="url"),
        ],
    )
    def test_bad_value_names_the_variable(
        self, variable: str, value: str, match: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(variable, value)
        (problem,) = problems_of()
        assert problem.startswith(f"{variable}: ")
        assert match in problem

    @pytest.mark.parametrize("threshold", ["0.5", "1", "1.99"])
    def test_liveness_threshold_below_twice_the_heartbeat(
        self, monkeypatch: pytest.MonkeyPatch, threshold: str
    ) -> None:
        # The loop beats once a second: at 0.5, 9 of 20 probes of an idle worker failed.
        monkeypatch.setenv("WORKER_LIVENESS_THRESHOLD_SECONDS", threshold)
        assert problems_of() == [
            "WORKER_LIVENESS_THRESHOLD_SECONDS: Input should be greater than or equal to 2 "
            f"(got {threshold!r})"
        ]

    def test_unknown_variable_with_suggestion(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_CONCURENCY", "5")
        assert problems_of() == [
            "WORKER_CONCURENCY: unknown setting (did you mean WORKER_CONCURRENCY?)"
        ]

    def test_unknown_variable_without_suggestion(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_XYZZY", "1")
        assert problems_of() == ["WORKER_XYZZY: unknown setting"]

    def test_unknown_variables_and_bad_values_together(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("WORKER_QUEUE_NMAE", "orders")
        monkeypatch.setenv("WORKER_CONCURRENCY", "0")
        problems = problems_of()
        assert len(problems) == 2
        assert "WORKER_QUEUE_NMAE: unknown setting (did you mean WORKER_QUEUE_NAME?)" in problems
        assert any(problem.startswith("WORKER_CONCURRENCY: ") for problem in problems)

    def test_config_file_variable_is_known(
        self, toml_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        toml_file.write_text("", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONFIG_FILE", str(toml_file))
        assert load_settings().concurrency == 10

    def test_unknown_key_in_file(self, toml_file: Path) -> None:
        toml_file.write_text("concurency = 3\n", encoding="utf-8")
        assert problems_of(config_file=toml_file) == [
            f"{toml_file}: concurency: unknown setting (did you mean concurrency?)"
        ]

    def test_unknown_key_in_file_without_suggestion(self, toml_file: Path) -> None:
        toml_file.write_text("colour = 3\n", encoding="utf-8")
        assert problems_of(config_file=toml_file) == [f"{toml_file}: colour: unknown setting"]

    def test_bad_value_in_file_is_named_by_the_file_and_its_key(self, toml_file: Path) -> None:
        toml_file.write_text("concurrency = 0\n", encoding="utf-8")
        (problem,) = problems_of(config_file=toml_file)
        assert problem.startswith(f"{toml_file}: concurrency: ")
        assert "(got 0)" in problem

    def test_a_bad_variable_over_the_file_is_named_as_the_variable(
        self, toml_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        toml_file.write_text("concurrency = 4\n", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONCURRENCY", "zero")  # the environment wins over the file
        (problem,) = problems_of(config_file=toml_file)
        assert problem.startswith("WORKER_CONCURRENCY: ")

    def test_what_a_command_requires_is_said_with_every_other_problem(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("WORKER_CONCURRENCY", "zero")
        monkeypatch.setenv("WORKER_QUEUE_NAME", "orders")
        required = [
            (("handler",), "WORKER_HANDLER: required"),
            (("queue_url", "queue_name"), "a queue: required"),
        ]
        with pytest.raises(ConfigurationError) as error:
            load_settings(required=required)
        assert error.value.problems[0].startswith("WORKER_CONCURRENCY: ")
        assert error.value.problems[1:] == ["WORKER_HANDLER: required"]  # the queue is set
        monkeypatch.delenv("WORKER_CONCURRENCY")
        monkeypatch.delenv("WORKER_QUEUE_NAME")
        with pytest.raises(ConfigurationError) as error:  # nothing else wrong: both missing
            load_settings(required=required)
        assert error.value.problems == ["WORKER_HANDLER: required", "a queue: required"]
        monkeypatch.setenv("WORKER_HANDLER", "app:handle")
        monkeypatch.setenv("WORKER_QUEUE_URL", "http://localhost:4566/000000000000/orders")
        assert load_settings(required=required).handler == "app:handle"

    def test_missing_file(self, tmp_path: Path) -> None:
        missing = tmp_path / "absent.toml"
        assert problems_of(config_file=missing) == [f"WORKER_CONFIG_FILE={missing}: no such file"]

    def test_missing_file_named_by_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        missing = tmp_path / "absent.toml"
        monkeypatch.setenv("WORKER_CONFIG_FILE", str(missing))
        assert problems_of() == [f"WORKER_CONFIG_FILE={missing}: no such file"]

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        assert problems_of(config_file=tmp_path) == [f"WORKER_CONFIG_FILE={tmp_path}: no such file"]

    def test_invalid_toml(self, toml_file: Path) -> None:
        toml_file.write_text("concurrency = \n", encoding="utf-8")
        (problem,) = problems_of(config_file=toml_file)
        assert problem.startswith(f"WORKER_CONFIG_FILE={toml_file}: not valid TOML (")

    def test_file_problems_and_variable_problems_together(
        self, toml_file: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        toml_file.write_text("[broken\n", encoding="utf-8")
        monkeypatch.setenv("WORKER_CONCURRENCY", "0")
        problems = problems_of(config_file=toml_file)
        assert len(problems) == 2
        assert problems[0].startswith("WORKER_CONFIG_FILE=")
        assert problems[1].startswith("WORKER_CONCURRENCY: ")


# What Kubernetes puts in every pod of a namespace that has a Service named `worker` with a TCP
# port 8080 named `http`, a UDP port 53 named `dns-udp` and an SCTP port 9000 (no name).
SERVICE_LINKS = {
    "WORKER_SERVICE_HOST": "10.96.0.12",
    "WORKER_SERVICE_PORT": "8080",
    "WORKER_SERVICE_PORT_HTTP": "8080",
    "WORKER_SERVICE_PORT_DNS_UDP": "53",
    "WORKER_PORT": "tcp://10.96.0.12:8080",
    "WORKER_PORT_8080_TCP": "tcp://10.96.0.12:8080",
    "WORKER_PORT_8080_TCP_PROTO": "tcp",
    "WORKER_PORT_8080_TCP_PORT": "8080",
    "WORKER_PORT_8080_TCP_ADDR": "10.96.0.12",
    "WORKER_PORT_53_UDP": "udp://10.96.0.12:53",
    "WORKER_PORT_53_UDP_PROTO": "udp",
    "WORKER_PORT_53_UDP_PORT": "53",
    "WORKER_PORT_53_UDP_ADDR": "10.96.0.12",
    "WORKER_PORT_9000_SCTP": "sctp://10.96.0.12:9000",
    "WORKER_PORT_9000_SCTP_ADDR": "10.96.0.12",
}


class TestKubernetesServiceLinks:
    """A Service named `worker` in the namespace is no crash loop; a misspelt setting still is."""

    @pytest.fixture
    def service_links(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in SERVICE_LINKS.items():
            monkeypatch.setenv(name, value)

    @pytest.mark.usefixtures("service_links")
    def test_service_link_variables_are_not_settings(self) -> None:
        settings = load_settings()
        assert settings.http_port == 8080
        assert settings.concurrency == 10

    @pytest.mark.usefixtures("service_links")
    def test_a_typo_among_them_is_still_reported(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_CONCURENCY", "8")
        assert problems_of() == [
            "WORKER_CONCURENCY: unknown setting (did you mean WORKER_CONCURRENCY?)"
        ]

    @pytest.mark.parametrize(
        "name",
        [
            "WORKER_PORT_8080",  # no protocol
            "WORKER_PORT_8080_HTTP",  # not a protocol
            "WORKER_PORT_HTTP_TCP",  # not a port number
            "WORKER_PORT_8080_TCP_HOST",  # not one of Kubernetes' suffixes
            "WORKER_SERVICE_HOSTS",
            "WORKER_SERVICE_ADDR",
            "WORKER_PORTS",
        ],
    )
    def test_only_the_exact_patterns_are_ignored(
        self, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(name, "1")
        (problem,) = problems_of()
        assert problem.startswith(f"{name}: unknown setting")

    @pytest.mark.usefixtures("service_links")
    def test_worker_run_reports_none_of_them(self, capsys: pytest.CaptureFixture[str]) -> None:
        # No queue is given, so that is the one problem left to report.
        assert main(["run", "--handler", "worker.examples.orders:handle"]) == EXIT_CONFIGURATION
        assert capsys.readouterr().err == (
            "worker: configuration error: WORKER_QUEUE_URL or WORKER_QUEUE_NAME (--queue): "
            "required\n"
        )


class TestConsistency:
    """Settings that are each valid but do not go together, and values with a shape to respect."""

    def test_queue_url_and_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_QUEUE_URL", QUEUE_URL)
        monkeypatch.setenv("WORKER_QUEUE_NAME", "orders")
        assert problems_of() == ["set WORKER_QUEUE_URL or WORKER_QUEUE_NAME, not both"]

    def test_queue_url_flag_and_name_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_QUEUE_NAME", "orders")
        assert problems_of(overrides={"queue_url": QUEUE_URL}) == [
            "set WORKER_QUEUE_URL or WORKER_QUEUE_NAME, not both"
        ]

    def test_backoff_base_above_max(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_BACKOFF_BASE_SECONDS", "10")
        monkeypatch.setenv("WORKER_BACKOFF_MAX_SECONDS", "5")
        assert problems_of() == [
            "WORKER_BACKOFF_BASE_SECONDS must not exceed WORKER_BACKOFF_MAX_SECONDS"
        ]

    def test_backoff_base_equal_to_max(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_BACKOFF_BASE_SECONDS", "5")
        monkeypatch.setenv("WORKER_BACKOFF_MAX_SECONDS", "5")
        assert load_settings().backoff_max_seconds == 5

    @pytest.mark.parametrize(
        "handler",
        [
            "app.handlers:handle",
            "a:b",
            "app:Handler.handle",
            "_private._mod:_fn",
            "app2:fn_3",
            # Lambda's own form, as a function's Handler setting is copied:
            "lambda_function.lambda_handler",
            "my-function.handler",
            "src/app.handler",
        ],
    )
    def test_valid_handler(self, handler: str) -> None:
        assert load_settings(overrides={"handler": handler}).handler == handler

    @pytest.mark.parametrize(
        "handler",
        [
            pytest.param("handlers", id="no-function"),
            pytest.param("app.", id="empty-lambda-function"),
            pytest.param("app.handlers:", id="empty-function"),
            pytest.param(":handle", id="empty-module"),
            pytest.param("app/handlers.py:handle", id="file-path"),
            pytest.param("1app:handle", id="leading-digit"),
            pytest.param("app:handle()", id="call"),
            pytest.param("app:a:b", id="two-colons"),
        ],
    )
    def test_invalid_handler(self, handler: str) -> None:
        (problem,) = problems_of(overrides={"handler": handler})
        assert problem == (
            "WORKER_HANDLER: must be 'package.module:function', or Lambda's 'module.function'"
            f" (got {handler!r})"
        )

    def test_filter_policy_object(self) -> None:
        policy = '{"kind": ["created", "updated"]}'
        assert load_settings(overrides={"filter_policy": policy}).filter_policy == policy

    @pytest.mark.parametrize(
        ("policy", "match"),
        [
            pytest.param('["created"]', "must be a JSON object (got", id="list"),
            pytest.param('"created"', "must be a JSON object (got", id="string"),
            pytest.param("null", "must be a JSON object (got", id="null"),
            pytest.param("kind=created", "must be a JSON object (Expecting value)", id="not-json"),
            pytest.param('{"kind": [', "must be a JSON object (Expecting value)", id="truncated"),
        ],
    )
    def test_filter_policy_not_an_object(self, policy: str, match: str) -> None:
        (problem,) = problems_of(overrides={"filter_policy": policy})
        assert problem.startswith("WORKER_FILTER_POLICY: ")
        assert match in problem


class TestDerived:
    """Values computed from the settings: pollers and messages per handler call."""

    @pytest.mark.parametrize(
        ("values", "pollers"),
        [
            pytest.param({"concurrency": 1}, 1, id="message-1"),
            pytest.param({"concurrency": 10}, 1, id="message-10"),
            pytest.param({"concurrency": 11}, 2, id="message-11"),
            pytest.param({"concurrency": 25}, 3, id="message-25"),
            pytest.param({"concurrency": 100}, 10, id="message-100"),
            pytest.param({"concurrency": 10_000}, 10, id="message-capped"),
            pytest.param({"handler_type": "lambda", "concurrency": 1}, 1, id="lambda-1x10"),
            pytest.param({"handler_type": "lambda", "concurrency": 3}, 3, id="lambda-3x10"),
            pytest.param(
                {"handler_type": "lambda", "concurrency": 3, "batch_size": 4}, 2, id="lambda-3x4"
            ),
            pytest.param({"handler_type": "lambda", "concurrency": 50}, 10, id="lambda-capped"),
            pytest.param({"concurrency": 100, "pollers": 2}, 2, id="explicit"),
            pytest.param({"concurrency": 1, "pollers": 40}, 40, id="explicit-above-derived"),
        ],
    )
    def test_poller_count(self, values: dict[str, object], pollers: int) -> None:
        assert load_settings(overrides=values).poller_count == pollers

    @pytest.mark.parametrize(
        ("handler_type", "batch_size", "expected"),
        [
            pytest.param(HandlerType.MESSAGE, 10, 1, id="message"),
            pytest.param(HandlerType.MESSAGE, 4, 1, id="message-ignores-batch-size"),
            pytest.param(HandlerType.LAMBDA, 10, 10, id="lambda"),
            pytest.param(HandlerType.LAMBDA, 4, 4, id="lambda-batch-size"),
        ],
    )
    def test_batch_size_for_type(
        self, handler_type: HandlerType, batch_size: int, expected: int
    ) -> None:
        settings = Settings(handler_type=handler_type, batch_size=batch_size)
        assert settings.batch_size_for_type == expected


class TestCommandLine:
    """``worker`` exits 2 with one line per problem and no traceback."""

    def test_one_problem(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["run", "--concurrency", "0", "--queue", "q", "--handler", "a:b"])
        assert code == EXIT_CONFIGURATION == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.splitlines() == [
            "worker: configuration error: "
            "WORKER_CONCURRENCY: Input should be greater than or equal to 1 (got 0)"
        ]

    def test_each_problem_on_its_own_line(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("WORKER_HANDLER_TYPE", "nope")
        monkeypatch.setenv("WORKER_CONCURENCY", "3")
        code = main(["run", "--concurrency", "0", "--queue", "q", "--handler", "a:b"])
        assert code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 3
        assert all(line.startswith("worker: configuration error: ") for line in lines)
        assert "Traceback" not in "\n".join(lines)
        named = sorted(
            line.removeprefix("worker: configuration error: ").split(":")[0] for line in lines
        )
        assert named == ["WORKER_CONCURENCY", "WORKER_CONCURRENCY", "WORKER_HANDLER_TYPE"]

    def test_missing_config_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "absent.toml"
        assert main(["run", "--config", str(missing), "--queue", "q", "--handler", "a:b"]) == 2
        assert capsys.readouterr().err == (
            f"worker: configuration error: WORKER_CONFIG_FILE={missing}: no such file\n"
        )

    def test_bad_handler_flag(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["run", "--queue", "q", "--handler", "handlers"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "WORKER_HANDLER: must be 'package.module:function'" in err

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            pytest.param(
                "http://",
                "not a valid URL: its host must be a name (letters, digits, '-', '.') "
                "or an address",
                id="no-host",
            ),
            pytest.param("http://[::1", "not a valid URL (Invalid IPv6 URL)", id="open-bracket"),
            pytest.param(
                "http://localhost:port",
                "not a valid URL (Port could not be cast to integer value as 'port')",
                id="port-not-a-number",
            ),
        ],
    )
    def test_an_endpoint_that_is_no_url(
        self,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        url: str,
        problem: str,
    ) -> None:
        # These passed validation, and botocore's ValueError reached the operator as a traceback.
        monkeypatch.setenv("WORKER_ENDPOINT_URL", url)
        assert main(["run", "--queue", "q", "--handler", "a:b"]) == 2
        assert capsys.readouterr().err == (
            f"worker: configuration error: WORKER_ENDPOINT_URL: {problem} (got {url!r})\n"
        )

    @pytest.mark.parametrize(
        "url", ["http://localhost:4566", "http://[::1]:4566", "https://sqs.eu-west-1.amazonaws.com"]
    )
    def test_endpoints_that_are_urls(self, url: str) -> None:
        assert Settings(endpoint_url=url).endpoint_url == url


class TestLambdaBatching:
    """Lambda's rule: a batch above ten records can only be gathered over a window."""

    def test_large_batch_without_window(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_HANDLER_TYPE", "lambda")
        monkeypatch.setenv("WORKER_BATCH_SIZE", "100")
        assert problems_of() == [
            "WORKER_BATCH_SIZE above 10 needs WORKER_MAX_BATCHING_WINDOW of at least 1 second"
        ]

    def test_message_handlers_take_no_batches(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A message handler is called once per message: the batch size does not apply to it.
        monkeypatch.setenv("WORKER_BATCH_SIZE", "100")
        settings = load_settings()
        assert settings.batch_size == 100
        assert settings.batch_size_for_type == 1

    def test_large_batch_with_window(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_BATCH_SIZE", "100")
        monkeypatch.setenv("WORKER_MAX_BATCHING_WINDOW", "2.5")
        settings = load_settings()
        assert (settings.batch_size, settings.max_batching_window) == (100, 2.5)

    def test_window_above_five_minutes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_MAX_BATCHING_WINDOW", "301")
        (problem,) = problems_of()
        assert problem.startswith("WORKER_MAX_BATCHING_WINDOW: ")
