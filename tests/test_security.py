"""What the worker keeps to itself: bodies and secrets out of logs, a narrow status server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.error
import urllib.request

import pytest
import structlog

from tests.support import POLLER_BUG, Queues, break_pollers, eventually, running_worker, send
from tests.test_lambda_parity import send_batched
from worker import Message
from worker.config import LogFormat, LogLevel, Settings, load_settings
from worker.errors import ConfigurationError
from worker.handlers.adapters import Handler
from worker.logs import configure_logging
from worker.ops.queue_policy import topic_only_policy

BODY_MARKER = "card-4111-1111-1111-1111"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"  # noqa: S105 -- a made-up key to look for
LOCAL_CARD = "card-5500-0000-0000-0004"  # held in a handler's local variable, never in a body


async def failing(message: Message) -> None:
    """Fails every message, so that failure lines (the ones that may carry a body) are logged."""
    raise ValueError("declined")


async def logs_of_a_failing_run(
    queues: Queues,
    body: str = json.dumps({"payment": BODY_MARKER}),
    handler: Handler = failing,
    **overrides: object,
) -> str:
    """The JSON logs of a worker that fails ``body`` once with ``handler``."""
    stream = io.StringIO()
    configure_logging(LogLevel.DEBUG, LogFormat.JSON, stream=stream)
    await send(queues, body)
    async with running_worker(queues.settings(**overrides), handler) as running:
        await eventually(lambda: running.worker.runner.counts["failed"] >= 1)
    return stream.getvalue()


class TestLogs:
    """Message bodies are not logged unless asked for; secrets never are."""

    async def test_no_body_in_logs_by_default(self, queues: Queues) -> None:
        logs = await logs_of_a_failing_run(queues)
        assert '"event": "message.failed"' in logs
        assert BODY_MARKER not in logs

    async def test_bodies_only_when_enabled(self, queues: Queues) -> None:
        logs = await logs_of_a_failing_run(queues, log_message_bodies=True)
        failed = [json.loads(line) for line in logs.splitlines() if "message.failed" in line]
        assert BODY_MARKER in failed[0]["body"]

    async def test_credentials_given_to_the_worker_stay_out_of_logs(self, queues: Queues) -> None:
        logs = await logs_of_a_failing_run(
            queues, aws_access_key_id="AKIAEXAMPLEWORKER", aws_secret_access_key=SECRET
        )
        assert '"event": "worker.started"' in logs
        assert SECRET not in logs


class TestTracebacks:
    """Logged tracebacks show frames, never their locals, which hold bodies and receipt handles."""

    async def test_a_handlers_logged_exception_shows_no_body_and_no_locals(
        self, queues: Queues
    ) -> None:
        async def logs_and_fails(message: Message) -> None:
            order = message.json()
            card = LOCAL_CARD  # what a handler computes from the body: in its locals only
            try:
                order["customer"]["id"]
            except KeyError:
                structlog.get_logger("orders").exception("order.unreadable", card_kind=len(card))
                logging.getLogger("orders").exception("order unreadable")
                raise

        logs = await logs_of_a_failing_run(queues, handler=logs_and_fails)
        assert '"event": "order.unreadable"' in logs
        assert '"event": "order unreadable"' in logs
        assert '"frames": [{' in logs  # the traceback is there, frame by frame
        assert BODY_MARKER not in logs
        assert LOCAL_CARD not in logs

    async def test_a_dead_pollers_traceback_shows_no_message(
        self, queues: Queues, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        break_pollers(monkeypatch)
        stream = io.StringIO()
        configure_logging(LogLevel.DEBUG, LogFormat.JSON, stream=stream)
        await send(queues, json.dumps({"payment": BODY_MARKER}))
        async with running_worker(queues.settings(pollers=1), failing) as running:
            await eventually(lambda: not running.worker.health.liveness().ok)
        died = [line for line in stream.getvalue().splitlines() if "worker.poller_died" in line]
        assert len(died) == 1
        assert POLLER_BUG in died[0]
        assert "ReceiptHandle" not in died[0]
        assert BODY_MARKER not in died[0]

    async def test_a_bad_envelope_is_described_without_its_content(self, queues: Queues) -> None:
        envelope = {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:orders",
            "Message": "{}",
            "Timestamp": BODY_MARKER,
            "MessageAttributes": {},
        }
        logs = await logs_of_a_failing_run(queues, json.dumps(envelope))
        failed = [json.loads(line) for line in logs.splitlines() if "message.failed" in line]
        assert failed[0]["error"] == "SNS envelope Timestamp is not an ISO 8601 date"
        assert BODY_MARKER not in logs


class TestSecrets:
    """Configuration secrets are SecretStr: masked when shown, revealed only to the client."""

    def test_masked_in_repr_and_dumps(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_AWS_ACCESS_KEY_ID", "AKIAEXAMPLEWORKER")
        monkeypatch.setenv("WORKER_AWS_SECRET_ACCESS_KEY", SECRET)
        settings = load_settings()
        for shown in (repr(settings), str(settings), settings.model_dump_json()):
            assert SECRET not in shown
        assert settings.client_credentials() == ("AKIAEXAMPLEWORKER", SECRET, None)

    def test_errors_do_not_echo_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WORKER_AWS_SECRET_ACCESS_KEY", SECRET)
        with pytest.raises(ConfigurationError) as raised:
            load_settings()
        assert raised.value.problems == [
            "set both WORKER_AWS_ACCESS_KEY_ID and WORKER_AWS_SECRET_ACCESS_KEY, or neither"
        ]
        assert SECRET not in str(raised.value)

    def test_standard_chain_when_unset(self) -> None:
        assert Settings().client_credentials() == (None, None, None)


class TestStatusServer:
    """The status server listens where it is told, and answers nothing but its three paths."""

    async def test_binds_the_configured_address(self, queues: Queues) -> None:
        async with running_worker(queues.settings(http_host="127.0.0.1"), failing) as running:
            port = running.worker.http_port
            assert port is not None

            def get(host: str) -> int:
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as r:
                        return int(r.status)
                except urllib.error.URLError:
                    return -1

            assert await asyncio.to_thread(get, "127.0.0.1") == 200
            # Another loopback address of this machine: nothing listens there.
            assert await asyncio.to_thread(get, "127.0.0.2") == -1

    async def test_only_metrics_and_health(self, queues: Queues) -> None:
        async with running_worker(queues.settings(), failing) as running:
            port = running.worker.http_port

            def status(path: str, method: str = "GET") -> int:
                request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
                try:
                    with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                        return int(response.status)
                except urllib.error.HTTPError as exc:
                    return exc.code

            for path in ("/", "/debug", "/metrics.json", "/../etc/passwd", "/healthz/x"):
                assert await asyncio.to_thread(status, path) == 404, path
            assert await asyncio.to_thread(status, "/metrics", "POST") == 501
            assert await asyncio.to_thread(status, "/healthz", "DELETE") == 501


class TestQueuePolicy:
    """``worker provision`` lets only the subscribed topic send to the queue.

    moto does not enforce queue policies (nor does LocalStack without IAM enforcement), so the
    refusal of another principal cannot be shown against the emulator; the policy document is
    checked instead, and docs/deployment.md says so.
    """

    def test_only_the_topic_may_send(self) -> None:
        queue = "arn:aws:sqs:eu-west-1:123456789012:orders"
        topic = "arn:aws:sns:eu-west-1:123456789012:orders"
        (statement,) = json.loads(topic_only_policy(queue, topic))["Statement"]
        assert statement == {
            "Sid": "AllowOnlyTheTopic",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
        }


class TestFailureStacks:
    """A failure is logged with where it happened (frames, bounded), once per failed call."""

    async def test_a_failure_names_the_handlers_line_without_locals(self, queues: Queues) -> None:
        async def fails_deep(message: Message) -> None:
            card = LOCAL_CARD  # in the handler's locals only

            def charge(amount: int) -> None:
                raise ValueError(f"declined {amount} on {len(card)}")

            charge(3)

        logs = await logs_of_a_failing_run(queues, handler=fails_deep)
        (failed, *_) = [
            json.loads(line) for line in logs.splitlines() if '"message.failed"' in line
        ]
        stack = failed["stack"]
        assert stack[-1].endswith(
            'in charge: raise ValueError(f"declined {amount} on {len(card)}")'
        )
        assert any("in fails_deep: charge(3)" in frame for frame in stack)
        assert all(__file__ in frame for frame in stack[-2:])
        assert len(stack) <= 20
        assert LOCAL_CARD not in logs
        assert BODY_MARKER not in logs

    async def test_a_batch_failure_logs_its_stack_once(self, queues: Queues) -> None:
        def raises(event: dict[str, object], context: object) -> None:
            raise RuntimeError("the whole batch")

        stream = io.StringIO()
        configure_logging(LogLevel.DEBUG, LogFormat.JSON, stream=stream)
        await send_batched(queues, ["a", "b"])
        settings = queues.settings(handler_type="lambda", sns_envelope="raw", batch_size=10)
        async with running_worker(settings, raises) as running:
            await eventually(lambda: running.worker.runner.counts["failed"] >= 2)
            calls = running.worker.metrics.registry.get_sample_value(
                "worker_handler_duration_seconds_count",
                {"queue": queues.queue_name, "outcome": "handler_error"},
            )
        failed = [
            json.loads(line)
            for line in stream.getvalue().splitlines()
            if '"message.failed"' in line
        ]
        with_stack = [entry for entry in failed if "stack" in entry]
        assert any(entry.get("batch_size") == 2 for entry in failed)  # one call, two messages
        assert len(with_stack) == calls
        assert len(with_stack) < len(failed)
        assert with_stack[0]["stack"][-1].endswith('raise RuntimeError("the whole batch")')


class TestHandlerLogging:
    """A handler's own ``logging`` follows WORKER_LOG_LEVEL, with its message's context."""

    def test_handler_loggers_follow_the_level_libraries_stay_quiet(self) -> None:
        stream = io.StringIO()
        configure_logging(LogLevel.DEBUG, LogFormat.JSON, stream=stream)
        with structlog.contextvars.bound_contextvars(message_id="m-1", queue="orders"):
            logging.getLogger("myhandlers").debug("looked up %s", "the customer")
            logging.getLogger("botocore.endpoint").debug("a chatty library line")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(e["event"], e["message_id"], e["logger"]) for e in lines] == [
            ("looked up the customer", "m-1", "myhandlers")
        ]

    def test_at_info_a_handlers_debug_lines_are_dropped(self) -> None:
        stream = io.StringIO()
        configure_logging(LogLevel.INFO, LogFormat.JSON, stream=stream)
        logging.getLogger("myhandlers").debug("hidden")
        logging.getLogger("myhandlers").info("shown")
        assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["shown"]
