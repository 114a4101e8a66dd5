"""`worker dlq` as operators run it when AWS says no: one line and exit 1, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.faults import NO_MOVE_TASKS, without_move_tasks
from tests.support import REGION, Queues, depth, moto_server_process, run_cli
from worker.ops import cli, dlq_cli


async def worker(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m worker ARGS`` logging warnings only; (exit code, stdout, stderr)."""
    return await run_cli(*args, env={"WORKER_LOG_LEVEL": "warning", **(env or {})})


def one_line(err: str) -> str:
    """The error the command printed, checked to be one line and no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def on(queues: Queues) -> tuple[str, ...]:
    return ("--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url)


class TestOneLine:
    """What SQS refuses comes back as one line naming the call, with exit code 1."""

    async def test_purge_twice_within_a_minute(self, queues: Queues) -> None:
        code, _, _ = await worker("dlq", "purge", "--yes", *on(queues))
        assert code == 0
        code, _, err = await worker("dlq", "purge", "--yes", *on(queues))
        assert code == 1
        line = one_line(err)
        assert line.startswith("worker: dlq purge: PurgeQueue: ")
        assert "PurgeQueueInProgress" in line
        assert line.endswith("(SQS purges a queue at most once every 60 seconds; try again later)")

    async def test_redrive_to_a_queue_url_that_does_not_exist(self, queues: Queues) -> None:
        await seed_dlq(queues, "a")
        missing = queues.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
        code, out, err = await worker("dlq", "redrive", "--to", missing, *on(queues))
        assert code == 1
        assert one_line(err) == f"worker: --to {missing}: the queue does not exist"
        assert out == ""
        assert await depth(queues, queues.dlq_url) == (1, 0)

    async def test_cancel_where_move_tasks_fail(self, queues: Queues) -> None:
        with without_move_tasks(queues.endpoint_url) as endpoint:
            code, _, err = await worker(
                "dlq",
                "moves",
                "--cancel",
                "no-such-task",
                "--queue",
                queues.queue_url,
                "--endpoint-url",
                endpoint,
            )
        assert code == 1
        assert one_line(err) == f"worker: {NO_MOVE_TASKS}"

    async def test_redrive_to_the_dlq_itself_is_a_usage_error(self, queues: Queues) -> None:
        await seed_dlq(queues, "a", "b")
        code, _, err = await worker("dlq", "redrive", "--to", queues.dlq_url, *on(queues))
        assert code == 2
        assert one_line(err) == (
            f"worker: configuration error: --to {queues.dlq_url}: that is the DLQ itself; "
            "name the queue to move its messages to"
        )
        assert await depth(queues, queues.dlq_url) == (2, 0)

    @pytest.mark.parametrize("rate", ["nan", "inf", "0"])
    @pytest.mark.parametrize("how", [(), ("--manual",)], ids=["native", "manual"])
    async def test_a_rate_that_is_not_a_positive_number_is_a_usage_error(
        self, queues: Queues, rate: str, how: tuple[str, ...]
    ) -> None:
        await seed_dlq(queues, "a")
        code, _, err = await worker("dlq", "redrive", f"--rate={rate}", *how, *on(queues))
        assert code == 2
        assert one_line(err) == (
            "worker: configuration error: --rate: must be a finite number more than 0"
        )
        assert await depth(queues, queues.dlq_url) == (1, 0)

    def test_explain_names_the_call_and_what_to_do(self) -> None:
        import botocore.exceptions  # noqa: PLC0415 -- only this test builds an error by hand

        # What AWS answers (moto, above, answers it as a bare HTTP 403).
        response: Any = {
            "Error": {"Code": "AccessDenied", "Message": "not authorized: sqs:PurgeQueue"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }
        refused = botocore.exceptions.ClientError(response, "PurgeQueue")
        assert dlq_cli.explain(refused) == (
            "PurgeQueue: AccessDenied: not authorized: sqs:PurgeQueue "
            "(the credentials in use lack this permission)"
        )


async def seed_dlq(queues: Queues, *bodies: str) -> None:
    async with _client(queues.endpoint_url, "testing", "testing") as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=body)


def _client(endpoint: str, key_id: str, secret: str, service: str = "sqs") -> Any:
    session: Any = get_session()  # typed per service; these tests need no more than Any
    return session.create_client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


# --- a moto server that checks IAM permissions ---------------------------------------------


@dataclass(frozen=True)
class Guarded:
    """A queue and its DLQ on a moto server that enforces IAM, and an operator who may not
    purge."""

    endpoint_url: str
    queue_url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def guarded_moto() -> Iterator[str]:
    """A moto server of its own that checks every request after the first three against IAM.

    The three are the administrator's: a user, its key, and its policy.
    """
    with moto_server_process({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as url:
        yield url


@pytest.fixture
async def guarded(guarded_moto: str) -> Guarded:
    """An operator allowed everything in SQS but PurgeQueue, and a queue with a DLQ it made."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "sqs:PurgeQueue", "Resource": "*"},
        ],
    }
    async with _client(guarded_moto, "admin", "admin", "iam") as iam:
        await iam.create_user(UserName="operator")
        key = (await iam.create_access_key(UserName="operator"))["AccessKey"]
        await iam.put_user_policy(
            UserName="operator", PolicyName="no-purge", PolicyDocument=json.dumps(policy)
        )
    key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]
    async with _client(guarded_moto, key_id, secret) as sqs:
        dlq_url = (await sqs.create_queue(QueueName="orders-dlq"))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
        queue_url = (
            await sqs.create_queue(QueueName="orders", Attributes={"RedrivePolicy": redrive})
        )["QueueUrl"]
        await sqs.send_message(QueueUrl=dlq_url, MessageBody="kept")
    return Guarded(
        guarded_moto,
        queue_url,
        {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret},
    )


class TestAccessDenied:
    """A call the credentials may not make is one line, exit 1, and changes nothing."""

    async def test_purge_without_permission(self, guarded: Guarded) -> None:
        code, out, err = await worker(
            "dlq",
            "purge",
            "--yes",
            "--queue",
            guarded.queue_url,
            "--endpoint-url",
            guarded.endpoint_url,
            env=guarded.env,
        )
        assert code == 1
        assert out == ""
        assert one_line(err) == (
            "worker: dlq purge: PurgeQueue: HTTP 403 (the credentials in use lack this permission)"
        )


class TestHealthcheckUrl:
    """`worker healthcheck --url` with a URL that cannot be asked: one line, exit 1."""

    @pytest.mark.parametrize(
        ("url", "said"),
        [
            ("foo", "--url foo: not an http:// or https:// URL"),
            ("file:///etc/hostname", "--url file:///etc/hostname: not an http:// or https:// URL"),
            ("http://[::1", "--url http://[::1: Invalid IPv6 URL"),
            ("http://127.0.0.1:port/", "cannot reach http://127.0.0.1:port/: nonnumeric port"),
        ],
    )
    def test_bad_url(self, url: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["healthcheck", "--url", url, "--timeout", "1"]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert one_line(captured.err).startswith(f"worker: healthcheck: {said}")
