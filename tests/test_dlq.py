"""DLQ operations against the broker: see what failed, bring it back, lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from aiobotocore.session import get_session
from aiobotocore.stub import AioStubber
from structlog.testing import capture_logs

from tests.faults import NO_MOVE_TASKS, Fault, FaultProxy, Rule, without_move_tasks
from tests.support import (
    REGION,
    ROOT,
    Queues,
    depth,
    drain,
    eventually,
    make_queues,
    publish,
    run_cli,
    running_worker,
)
from worker import Message
from worker.config import Settings
from worker.consume.sqs import QueueInfo, open_sqs
from worker.errors import ConfigurationError
from worker.handlers.filtering import FilterCriteria
from worker.ops import dlq
from worker.ops.dlq_cli import ProgressLine, _summary, figures
from worker.ops.provision import provision

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

STUBBED = {"aws_access_key_id": "stub", "aws_secret_access_key": "stub"}


def stubbed_sqs() -> Any:
    """An SQS client for botocore's Stubber: no endpoint is ever called."""
    return get_session().create_client(
        "sqs",
        region_name=REGION,
        aws_access_key_id="stub",
        aws_secret_access_key="stub",  # noqa: S106 -- never sent anywhere
    )


async def seed(queues: Queues, *bodies: str, **extra: Any) -> None:
    """Put messages straight into the DLQ, as if SQS had moved them there."""
    async with open_sqs(queues.settings()) as sqs:
        for body in bodies:
            await sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=body, **extra)


def bodies_of(messages: list[Any]) -> Counter[str]:
    return Counter(message["Body"] for message in messages)


@contextlib.contextmanager
def slow_receives(queues: Queues, seconds: float) -> Iterator[Settings]:
    """Settings whose receives reach the broker ``seconds`` late, through the fault proxy.

    With a hold shorter than that, a pass over the DLQ outlasts its hold as a long one on AWS
    does: the messages it received first are visible again when it receives next.
    """
    with FaultProxy(queues.endpoint_url) as proxy:
        proxy.add(Rule.on(Fault.LATENCY, "ReceiveMessage", seconds=seconds))
        yield queues.settings(endpoint_url=proxy.url)


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m worker ARGS``; (exit code, stdout, stderr)."""
    return await run_cli(*args, env=env)


class TestInspect:
    """Poison messages reach the DLQ; stats and peek show them and leave them in place."""

    async def test_poison_messages_in_stats_and_peek(self, queues: Queues) -> None:
        async def rejects(message: Message) -> None:
            raise ValueError("cannot process")

        await publish(
            queues,
            *(json.dumps({"order_id": f"o-{n}", "amount": "bad"}) for n in range(4)),
            MessageAttributes={"source": {"DataType": "String", "StringValue": "shop"}},
        )
        await publish(queues, "not json at all")

        async def five_in_dlq() -> bool:
            return (await depth(queues, queues.dlq_url))[0] == 5

        async with running_worker(queues.settings(), rejects):
            await eventually(five_in_dlq, timeout=30)

        code, out, _ = await cli(
            "dlq",
            "stats",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--json",
        )
        assert code == 0
        document = json.loads(out)
        assert document["max_receive_count"] == 3
        source, dead = document["queues"]
        assert (source["role"], source["visible"]) == ("source", 0)
        assert (dead["role"], dead["visible"]) == ("dlq", 5)
        assert dead["oldest_age_seconds"] > 0

        code, out, _ = await cli(
            "dlq",
            "peek",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--json",
        )
        assert code == 0
        peeked = json.loads(out)
        shapes = {g["shape"]: g["count"] for g in peeked["groups"]}
        assert shapes == {"{amount: str, order_id: str}": 4, "text": 1}
        order = next(g for g in peeked["groups"] if g["count"] == 4)["messages"][0]
        assert order["attributes"] == {"source": "shop"}
        assert order["topic_arn"] == queues.topic_arn
        assert json.loads(order["body"])["amount"] == "bad"  # the payload, envelope unwrapped

        code, out, _ = await cli(
            "dlq", "peek", "--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url
        )
        assert code == 0
        assert "    4 x {amount: str, order_id: str}" in out
        assert "    1 x text" in out
        assert await depth(queues, queues.dlq_url) == (5, 0)  # nothing consumed


class TestRedrive:
    """Message by message: sent first, deleted after; filters, limits, rates and dry runs."""

    async def test_redrive_returns_each_once_with_attributes_and_the_worker_processes_them(
        self, queues: Queues
    ) -> None:
        attributes = {
            "kind": {"DataType": "String", "StringValue": "order"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        }
        sent = [f"m{n}" for n in range(12)]
        await seed(queues, *sent, MessageAttributes=attributes)
        plan = dlq.RedrivePlan(manual=True)
        result = await dlq.run_redrive(queues.settings(), plan)
        assert (result.moved, result.failed, result.delete_failed) == (12, 0, 0)
        assert await depth(queues, queues.dlq_url) == (0, 0)

        handled: list[Message] = []

        async def handler(message: Message) -> None:
            handled.append(message)

        async with running_worker(queues.settings(sns_envelope="raw"), handler):
            await eventually(lambda: len(handled) == 12)
            await asyncio.sleep(0.5)
        assert Counter(m.body for m in handled) == Counter(sent)  # each exactly once
        for message in handled:
            assert message.message_attributes["kind"].value == "order"
            assert message.message_attributes["blob"].value == b"\x00\x01"

    async def test_native_fallback_when_the_endpoint_lacks_move_tasks(self, queues: Queues) -> None:
        await seed(queues, "a", "b")
        no_move_tasks = Rule.on(Fault.HTTP_500, "StartMessageMoveTask")
        with FaultProxy(queues.endpoint_url) as proxy, proxy.inject(no_move_tasks):
            result = await dlq.run_redrive(
                queues.settings(endpoint_url=proxy.url), dlq.RedrivePlan()
            )
        assert result.native_task is None  # HTTP 500: moved message by message
        assert result.moved == 2
        # Asked once, not again after the SDK's backoffs (ten seconds on moto).
        assert no_move_tasks.injected == 1

    async def test_filter_moves_only_what_matches(self, queues: Queues) -> None:
        await seed(queues, *(json.dumps({"type": "order", "n": n}) for n in range(3)))
        await seed(queues, *(json.dumps({"type": "refund", "n": n}) for n in range(2)))
        criteria = FilterCriteria.from_pattern('{"body": {"type": ["order"]}}')
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(criteria=criteria, hold_seconds=30)
        )
        assert (result.moved, result.skipped) == (3, 2)
        moved = await drain(queues, queues.queue_url, expect=3)
        assert sorted(json.loads(m["Body"])["type"] for m in moved) == ["order"] * 3
        assert await depth(queues, queues.dlq_url) == (2, 0)  # given back at once

    async def test_filter_on_a_number_beyond_decimal_range(self, queues: Queues) -> None:
        # Valid JSON that once raised decimal.InvalidOperation in the numeric matcher: the
        # command ended with a traceback, the message neither moved nor reported.
        huge = '{"amount": 1e99999999999999999999}'
        await seed(queues, huge, '{"amount": -1}')
        where = ("--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url)
        pattern = '{"body": {"amount": [{"numeric": [">", 0]}]}}'
        code, out, err = await cli("dlq", "redrive", *where, "--filter", pattern, "--hold", "30")
        assert (code, "Traceback" in err) == (0, False), err
        assert "1 did not match the filter and stay in the DLQ" in out
        moved = await drain(queues, queues.queue_url, expect=1)
        assert [message["Body"] for message in moved] == [huge]

    async def test_a_body_the_filter_cannot_read_stays_in_the_dlq(
        self, queues: Queues, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        matches = FilterCriteria.matches

        def defective(criteria: FilterCriteria, record: Mapping[str, Any]) -> bool:
            if record["body"] == "defect":
                raise ArithmeticError("a defect in the filter")
            return matches(criteria, record)

        monkeypatch.setattr(FilterCriteria, "matches", defective)
        await seed(queues, "defect", "plain")
        criteria = FilterCriteria.from_pattern('{"body": ["plain", "defect"]}')
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(criteria=criteria, hold_seconds=30)
        )
        assert (result.moved, result.skipped) == (1, 1)
        assert await depth(queues, queues.dlq_url) == (1, 0)

    async def test_max_and_rate(self, queues: Queues) -> None:
        await seed(queues, *(f"m{n}" for n in range(8)))
        started = time.monotonic()
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(max_messages=5, rate=4.0, manual=True)
        )
        elapsed = time.monotonic() - started
        assert result.moved == 5
        assert elapsed >= 0.9  # five at four a second: the last waits a second after the first
        assert await depth(queues, queues.dlq_url) == (3, 0)
        assert await depth(queues, queues.queue_url) == (5, 0)

    async def test_dry_run_moves_nothing(self, queues: Queues) -> None:
        await seed(queues, *(json.dumps({"n": n}) for n in range(4)), "plain")
        result = await dlq.run_redrive(queues.settings(), dlq.RedrivePlan(dry_run=True))
        assert (result.matched, result.moved) == (5, 0)
        assert result.shapes == Counter({"{n: number}": 4, "text": 1})
        assert await depth(queues, queues.dlq_url) == (5, 0)
        assert await depth(queues, queues.queue_url) == (0, 0)

    async def test_redrive_to_another_queue(self, queues: Queues) -> None:
        other = await make_queues(queues.endpoint_url)
        await seed(queues, "x")
        result = await dlq.run_redrive(
            queues.settings(), dlq.RedrivePlan(destination=other.queue_url, manual=True)
        )
        assert result.moved == 1
        assert bodies_of(await drain(other, other.queue_url, expect=1)) == Counter({"x": 1})

    async def test_interrupted_redrive_loses_nothing(self, queues: Queues, tmp_path: Path) -> None:
        sent = [f"m{n:02d}" for n in range(12)]
        await seed(queues, *sent)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "dlq",
            "redrive",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--rate",
            "3",
            "--hold",
            "2",
            "--manual",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "AWS_REGION": REGION},
        )

        async def some_moved() -> bool:
            return (await depth(queues, queues.queue_url))[0] >= 3

        await eventually(some_moved, timeout=30)
        process.send_signal(signal.SIGKILL)  # no chance to clean up
        await process.wait()
        await asyncio.sleep(2.5)  # what it held comes back when its hold runs out
        in_source = bodies_of(await drain(queues, queues.queue_url, expect=len(sent), timeout=5))
        in_dlq = bodies_of(await drain(queues, queues.dlq_url, expect=len(sent), timeout=5))
        everywhere = in_source + in_dlq
        assert set(everywhere) == set(sent)  # nothing lost
        duplicated = [body for body, n in everywhere.items() if n > 1]
        assert len(duplicated) <= 3  # only a batch in hand between send and delete

    async def test_interrupt_with_sigint_stops_cleanly(self, queues: Queues) -> None:
        await seed(queues, *(f"m{n:02d}" for n in range(10)))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "dlq",
            "redrive",
            "--queue",
            queues.queue_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--rate",
            "2",
            "--manual",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "AWS_REGION": REGION},
        )

        async def some_moved() -> bool:
            return (await depth(queues, queues.queue_url))[0] >= 2

        await eventually(some_moved, timeout=30)
        process.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 130
        assert "stopped before the end; nothing in hand was lost" in out.decode()
        source, dead = await depth(queues, queues.queue_url), await depth(queues, queues.dlq_url)
        assert source[0] + dead[0] == 10  # every message is visible in exactly one queue
        assert source[1] == dead[1] == 0  # and none is left held


class TestProgress:
    """A redrive's progress figures add up: moved + failed + skipped = seen."""

    async def test_every_report_adds_up(self, queues: Queues) -> None:
        await seed(queues, *(json.dumps({"type": t}) for t in ("order", "refund") * 4))
        criteria = FilterCriteria.from_pattern('{"body": {"type": ["order"]}}')
        reports: list[tuple[int, int, int, int]] = []

        def progress(result: dlq.RedriveResult, _: int | None) -> None:
            reports.append((result.seen, result.moved, result.failed, result.skipped))

        result = await dlq.run_redrive(
            queues.settings(),
            dlq.RedrivePlan(criteria=criteria, hold_seconds=30),
            progress=progress,
        )
        assert reports
        assert all(seen == moved + failed + skipped for seen, moved, failed, skipped in reports)
        assert (result.seen, result.moved, result.failed, result.skipped) == (8, 4, 0, 4)
        assert _summary(result, dlq.RedrivePlan(criteria=criteria)).startswith(
            "moved 4 of 8 messages in"
        )

    def test_a_dry_run_says_how_many_shapes_it_does_not_list(self) -> None:
        shapes = Counter({f"{{k{n}: str}}": 10 - n for n in range(7)})  # 7 shapes, 49 messages
        result = dlq.RedriveResult(seen=49, matched=49, shapes=shapes)
        lines = _summary(result, dlq.RedrivePlan(dry_run=True)).splitlines()
        assert lines[0] == "dry run: 49 of 49 messages would be moved"
        assert lines[1:6] == [f"  {10 - n:>5} x {{k{n}: str}}" for n in range(5)]
        assert lines[6:] == ["  and 2 more shapes (9 messages): --json lists every one"]

    def test_a_summary_of_five_shapes_or_fewer_lists_them_all(self) -> None:
        result = dlq.RedriveResult(seen=3, matched=3, shapes=Counter({"text": 2, "{n: number}": 1}))
        assert _summary(result, dlq.RedrivePlan(dry_run=True)).splitlines()[1:] == [
            "      2 x text",
            "      1 x {n: number}",
        ]

    def test_the_line_shows_every_figure(self) -> None:
        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        terminal = Terminal()
        ProgressLine(terminal)(dlq.RedriveResult(seen=10, moved=6, failed=1, skipped=3), None)
        assert terminal.getvalue().startswith("\r10 seen: 6 moved, 1 failed, 3 skipped; ")
        dry = dlq.RedriveResult(seen=5, matched=4, skipped=1)
        assert figures(dry, dry_run=True) == "5 seen: 4 would move, 1 skipped"
        assert figures(dlq.RedriveResult(moved=7, native_task="t")) == "7 moved"


class TestPassesLongerThanTheHold:
    """A pass that outlasts its hold gets its first messages back: each counts once, and it ends."""

    async def test_dry_run_counts_each_message_once_and_ends(self, queues: Queues) -> None:
        await seed(queues, "a", "b", json.dumps({"n": 1}))
        with slow_receives(queues, 1.5) as settings:
            plan = dlq.RedrivePlan(dry_run=True, hold_seconds=1)
            result = await asyncio.wait_for(dlq.run_redrive(settings, plan), 20)
        assert result.matched == 3
        assert result.shapes == Counter({"text": 2, "{n: number}": 1})
        assert await depth(queues, queues.dlq_url) == (3, 0)
        assert await depth(queues, queues.queue_url) == (0, 0)
        # Said, since a receive answers with a sample: some might not have been received at all.
        assert result.outlasted_hold
        assert "the run outlasted --hold (1 s)" in _summary(result, plan)

    async def test_filter_ends_when_only_skipped_messages_come_back(self, queues: Queues) -> None:
        await seed(queues, *(json.dumps({"type": t}) for t in ("order", "refund") * 2))
        criteria = FilterCriteria.from_pattern('{"body": {"type": ["order"]}}')
        with slow_receives(queues, 1.5) as settings:
            plan = dlq.RedrivePlan(criteria=criteria, hold_seconds=1)
            result = await asyncio.wait_for(dlq.run_redrive(settings, plan), 20)
        assert (result.moved, result.skipped, result.matched) == (2, 2, 2)
        moved = await drain(queues, queues.queue_url, expect=2)
        assert [json.loads(m["Body"])["type"] for m in moved] == ["order", "order"]
        assert await depth(queues, queues.dlq_url) == (2, 0)

    async def test_large_peek_shows_each_message_once(self, queues: Queues) -> None:
        await seed(queues, "a", "b", "c")
        with slow_receives(queues, 1.5) as settings:
            _, peeked, _ = await asyncio.wait_for(dlq.peek(settings, limit=50, hold=1), 20)
        assert sorted(p.body for p in peeked) == ["a", "b", "c"]
        assert await depth(queues, queues.dlq_url) == (3, 0)  # released, nothing consumed


class TestLargeMessages:
    """Send batches are cut by size: SQS refuses one whose messages add up to more than 1 MiB."""

    BODIES: ClassVar[list[str]] = [f"{n:02d}" + "x" * 200_000 for n in range(10)]

    async def test_ten_messages_of_200_kb_are_moved(self, queues: Queues) -> None:
        await seed(queues, *self.BODIES)
        result = await dlq.run_redrive(queues.settings(), dlq.RedrivePlan(manual=True))
        assert (result.moved, result.failed, result.delete_failed) == (10, 0, 0)
        assert not result.outlasted_hold
        assert await depth(queues, queues.dlq_url) == (0, 0)
        moved = await drain(queues, queues.queue_url, expect=10)
        assert sorted(m["Body"] for m in moved) == self.BODIES

    # The oversized batch this test makes on purpose is over aiohttp's 1 MiB advisory, too.
    @pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
    async def test_a_batch_sqs_still_finds_too_long_goes_one_at_a_time(
        self, queues: Queues
    ) -> None:
        # SQS may measure a batch otherwise than we do: here we let through what it refuses.
        await seed(queues, *self.BODIES)
        settings, plan = queues.settings(), dlq.RedrivePlan(manual=True)
        async with open_sqs(settings) as client:
            pair = await dlq.find_pair(client, settings)
            url, _, fifo = await dlq.destination_of(client, pair, plan)
            redrive = dlq.Redrive(
                client,
                pair,
                plan,
                destination_url=url,
                destination_fifo=fifo,
                max_batch_bytes=16 * dlq.MAX_REQUEST_BYTES,
            )
            with capture_logs() as logs:
                result = await redrive.run()
        assert any(event["event"] == "dlq.batch_too_long" for event in logs)
        assert (result.moved, result.failed) == (10, 0)
        assert await depth(queues, queues.dlq_url) == (0, 0)
        moved = await drain(queues, queues.queue_url, expect=10)
        assert sorted(m["Body"] for m in moved) == self.BODIES

    def test_batches_count_bytes_and_attributes_and_keep_order(self) -> None:
        def entry(index: int, body: str, attribute: bytes = b"") -> dict[str, Any]:
            made: dict[str, Any] = {"Id": str(index), "MessageBody": body}
            if attribute:
                made["MessageAttributes"] = {"a": {"DataType": "Binary", "BinaryValue": attribute}}
            return made

        mib = dlq.MAX_REQUEST_BYTES
        entries = [
            entry(0, "é" * (mib // 4)),  # half a MiB in UTF-8, a quarter in characters
            entry(1, "é" * (mib // 4)),  # with the first: 1 MiB of bodies, room for no more
            entry(2, "x", b"\x00" * (mib - 100)),  # small body, large attribute: alone
            entry(3, "x" * (mib + 5)),  # over the limit by itself: alone, for SQS to judge
            *(entry(4 + n, "small") for n in range(12)),
        ]
        batches = dlq.send_batches(entries)
        assert [[e["Id"] for e in batch] for batch in batches] == [
            ["0", "1"],
            ["2"],
            ["3"],
            [str(4 + n) for n in range(10)],
            ["14", "15"],
        ]
        assert all(sum(map(dlq.entry_bytes, b)) <= mib for b in batches if len(b) > 1)


class TestRedriveTarget:
    """The destination is checked before anything moves."""

    async def test_redrive_to_the_dlq_itself_is_refused(self, queues: Queues) -> None:
        await seed(queues, "a", "b")
        for target in (queues.dlq_url, f"{queues.queue_name}-dlq"):
            with pytest.raises(ConfigurationError, match="that is the DLQ itself"):
                await asyncio.wait_for(
                    dlq.run_redrive(
                        queues.settings(), dlq.RedrivePlan(destination=target, manual=True)
                    ),
                    20,
                )
        assert await depth(queues, queues.dlq_url) == (2, 0)


class TestFifo:
    """A FIFO DLQ's messages go back in order, with their group, under a new dedup id."""

    async def test_fifo_redrive_keeps_group_order(self, broker_endpoint: str) -> None:
        base = Settings(endpoint_url=broker_endpoint, region=REGION)
        name = f"f-{uuid.uuid4().hex[:10]}"
        made = await provision(base.model_copy(update={"queue_name": f"{name}.fifo"}))
        async with open_sqs(base) as sqs:
            for group, items in {"g1": ["a1", "a2", "a3"], "g2": ["b1", "b2"]}.items():
                for item in items:
                    await sqs.send_message(
                        QueueUrl=made.dlq_url,
                        MessageBody=item,
                        MessageGroupId=group,
                        MessageDeduplicationId=item,
                    )
        settings = base.model_copy(update={"queue_url": made.queue_url})
        result = await dlq.run_redrive(settings, dlq.RedrivePlan(manual=True))
        assert result.moved == 5
        received: dict[str, list[str]] = {}
        async with open_sqs(settings) as sqs:
            for _ in range(10):
                response = await sqs.receive_message(
                    QueueUrl=made.queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                )
                for message in response.get("Messages", []):
                    group = message["Attributes"]["MessageGroupId"]
                    received.setdefault(group, []).append(message["Body"])
                    await sqs.delete_message(
                        QueueUrl=made.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                if sum(map(len, received.values())) == 5:
                    break
        assert received == {"g1": ["a1", "a2", "a3"], "g2": ["b1", "b2"]}

    @pytest.mark.parametrize("how", [(), ("--manual",)], ids=["native", "manual"])
    async def test_to_a_name_gets_fifo_as_the_queue_does(
        self, broker_endpoint: str, how: tuple[str, ...]
    ) -> None:
        # WORKER_FIFO: names are given without .fifo, --queue's and --to's alike.
        base = Settings(endpoint_url=broker_endpoint, region=REGION)
        name = f"f-{uuid.uuid4().hex[:10]}"
        made = await provision(base.model_copy(update={"queue_name": f"{name}.fifo"}))
        async with open_sqs(base) as sqs:
            other = await sqs.create_queue(
                QueueName=f"{name}-other.fifo", Attributes={"FifoQueue": "true"}
            )
            await sqs.send_message(
                QueueUrl=made.dlq_url,
                MessageBody="a",
                MessageGroupId="g",
                MessageDeduplicationId="a",
            )
        code, _, err = await cli(
            *("dlq", "redrive", "--queue", name, "--to", f"{name}-other", *how),
            env={"WORKER_FIFO": "true", "WORKER_ENDPOINT_URL": broker_endpoint},
        )
        assert code == 0, err
        async with open_sqs(base) as sqs:
            response = await sqs.receive_message(QueueUrl=other["QueueUrl"], WaitTimeSeconds=5)
        assert [message["Body"] for message in response.get("Messages", [])] == ["a"]


async def fifo_dlq(broker_endpoint: str, groups: Mapping[str, list[bool]]) -> Settings:
    """A provisioned FIFO pair whose DLQ holds, per group, messages ``{"n": i, "keep": k}``."""
    base = Settings(endpoint_url=broker_endpoint, region=REGION)
    name = f"f-{uuid.uuid4().hex[:10]}"
    made = await provision(base.model_copy(update={"queue_name": f"{name}.fifo"}))
    async with open_sqs(base) as sqs:
        for group, keeps in groups.items():
            for index, keep in enumerate(keeps):
                await sqs.send_message(
                    QueueUrl=made.dlq_url,
                    MessageBody=json.dumps({"group": group, "n": index, "keep": keep}),
                    MessageGroupId=group,
                    MessageDeduplicationId=f"{group}-{index}",
                )
    return base.model_copy(update={"queue_url": made.queue_url})


KEEP = FilterCriteria.from_pattern('{"body": {"keep": [true]}}')


class TestFifoPasses:
    """FIFO order does not let a receive pass a message held in its group: a filter's skipped
    messages go back at once, and what a pass cannot reach is counted and said."""

    async def test_a_filter_moves_every_match_past_the_messages_it_skips(
        self, broker_endpoint: str
    ) -> None:
        keeps = [index != 2 for index in range(12)]  # the third of each group does not match
        settings = await fifo_dlq(broker_endpoint, {"g1": keeps, "g2": keeps})
        result = await dlq.run_redrive(settings, dlq.RedrivePlan(criteria=KEEP, manual=True))
        assert (result.moved, result.skipped, result.unreached) == (22, 2, 0)
        assert not result.outlasted_hold  # the skipped ones came back because they were let go
        _, stats = await dlq.stats(settings, sample=0)
        assert [(s.role, s.visible) for s in stats] == [("source", 22), ("dlq", 2)]
        moved: list[dict[str, Any]] = []
        async with open_sqs(settings) as sqs:
            while len(moved) < 22:
                response = await sqs.receive_message(
                    QueueUrl=settings.queue_url or "", MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                for message in response.get("Messages", []):
                    moved.append(json.loads(message["Body"]))
                    await sqs.delete_message(
                        QueueUrl=settings.queue_url or "", ReceiptHandle=message["ReceiptHandle"]
                    )
        order = {g: [m["n"] for m in moved if m["group"] == g] for g in ("g1", "g2")}
        expected = [index for index in range(12) if index != 2]
        assert order == {"g1": expected, "g2": expected}

    async def test_ten_skipped_in_a_row_leave_the_rest_of_the_group_unreached(
        self, broker_endpoint: str
    ) -> None:
        settings = await fifo_dlq(
            broker_endpoint, {"blocked": [False] * 10 + [True] * 3, "open": [True] * 4}
        )
        result = await dlq.run_redrive(settings, dlq.RedrivePlan(criteria=KEEP, manual=True))
        assert (result.moved, result.skipped, result.unreached) == (4, 10, 3)
        summary = _summary(result, dlq.RedrivePlan(criteria=KEEP, manual=True))
        assert "about 3 messages were not reached" in summary

    async def test_a_dry_run_says_what_it_could_not_count(self, broker_endpoint: str) -> None:
        settings = await fifo_dlq(broker_endpoint, {"g1": [True] * 12})
        code, out, err = await cli(
            "dlq",
            "redrive",
            "--dry-run",
            env={
                "WORKER_QUEUE_URL": settings.queue_url or "",
                "WORKER_ENDPOINT_URL": broker_endpoint,
            },
        )
        assert code == 0, err  # it moved nothing, and says what it could not see
        assert "dry run: 10 of 10 messages would be moved" in out
        assert "about 2 messages were not reached" in out


class TestFifoGroupRefused:
    """A group with a message the destination refused is held, so that nothing of it overtakes
    that message. Entry-level refusals cannot be made on moto, so botocore's Stubber answers."""

    async def test_its_messages_stay_held_while_the_other_groups_flow(self) -> None:
        pair = dataclasses.replace(
            TestNativeStopAndSummary.PAIR,
            dlq_url="https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq.fifo",
            dlq_fifo=True,
        )

        def raw(group: str, n: int) -> MessageTypeDef:
            return {
                "MessageId": f"{group}-{n}",
                "ReceiptHandle": f"rh-{group}-{n}",
                "Body": "{}",
                "Attributes": {"MessageGroupId": group},
            }

        refused, other = raw("g1", 0), raw("g2", 0)
        async with stubbed_sqs() as client:
            mover = dlq.Redrive(
                client,
                pair,
                dlq.RedrivePlan(manual=True),
                destination_url="dest",
                destination_fifo=True,
            )
            mover._pass.fresh([refused, other])
            mover._send_failed(refused, "Refused", "no")
            with AioStubber(client) as stubber:
                stubber.add_response(
                    "change_message_visibility_batch",
                    {"Successful": [{"Id": "0"}], "Failed": []},
                    {
                        "QueueUrl": pair.dlq_url,
                        "Entries": [
                            {"Id": "0", "ReceiptHandle": "rh-g2-0", "VisibilityTimeout": 0}
                        ],
                    },
                )
                await mover._let_groups_flow([refused, other], [refused, other])
                stubber.assert_no_pending_responses()
        assert mover._pass.held == {"g1-0": "rh-g1-0"}  # given back at the end of the run


class TestNativeMoveTasks:
    """On AWS, an unfiltered redrive is SQS's own move task (checked with botocore's Stubber)."""

    async def test_start_list_and_cancel(self) -> None:
        async with stubbed_sqs() as client:
            dlq_arn = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
            destination = "arn:aws:sqs:us-east-1:123456789012:orders-replay"
            with AioStubber(client) as stubber:
                stubber.add_response(
                    "start_message_move_task",
                    {"TaskHandle": "task-1"},
                    {
                        "SourceArn": dlq_arn,
                        "DestinationArn": destination,
                        "MaxNumberOfMessagesPerSecond": 50,
                    },
                )
                stubber.add_response(
                    "list_message_move_tasks",
                    {
                        "Results": [
                            {
                                "TaskHandle": "task-1",
                                "Status": "COMPLETED",
                                "SourceArn": dlq_arn,
                                "ApproximateNumberOfMessagesMoved": 7,
                                "ApproximateNumberOfMessagesToMove": 7,
                            }
                        ]
                    },
                    {"SourceArn": dlq_arn, "MaxResults": 10},
                )
                stubber.add_response(
                    "cancel_message_move_task",
                    {"ApproximateNumberOfMessagesMoved": 3},
                    {"TaskHandle": "task-2"},
                )
                handle = await dlq.start_move_task(
                    client, dlq_arn=dlq_arn, destination_arn=destination, rate=50.0
                )
                seen: list[tuple[int, int | None]] = []
                task = await dlq.wait_for_move_task(
                    client,
                    dlq_arn,
                    handle,
                    progress=lambda result, left: seen.append((result.moved, left)),
                )
                moved = await dlq.cancel_move_task(client, "task-2")
                stubber.assert_no_pending_responses()
        assert handle == "task-1"
        assert task["Status"] == "COMPLETED"
        assert seen == [(7, 0)]
        assert moved == 3

    @pytest.mark.parametrize(("rate", "asked"), [(1000.0, 500), (0.5, 1), (120.7, 120)])
    async def test_the_rate_asked_of_sqs_is_one_it_takes(self, rate: float, asked: int) -> None:
        # SQS documents 500 messages a second as a move task's most, in whole messages.
        dlq_arn = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
        async with stubbed_sqs() as client:
            with AioStubber(client) as stubber:
                stubber.add_response(
                    "start_message_move_task",
                    {"TaskHandle": "task-1"},
                    {"SourceArn": dlq_arn, "MaxNumberOfMessagesPerSecond": asked},
                )
                await dlq.start_move_task(client, dlq_arn=dlq_arn, destination_arn=None, rate=rate)
                stubber.assert_no_pending_responses()

    async def test_unsupported_endpoint_is_recognised(self) -> None:
        async with stubbed_sqs() as client:
            with AioStubber(client) as stubber:
                stubber.add_client_error(
                    "start_message_move_task",
                    service_error_code="InternalFailure",
                    http_status_code=500,
                )
                with pytest.raises(dlq.MoveTasksUnsupportedError):
                    await dlq.start_move_task(
                        client, dlq_arn="arn:aws:sqs:us-east-1:1:d", destination_arn=None, rate=None
                    )


class TestNativeStopAndSummary:
    """Ctrl-C stops following SQS's move task at once and names it; the summary says how it ended.

    moto has no move tasks, so botocore's Stubber answers for SQS here.
    """

    DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
    PAIR = dlq.QueuePair(
        source=QueueInfo(
            url="https://sqs.us-east-1.amazonaws.com/123456789012/orders",
            arn="arn:aws:sqs:us-east-1:123456789012:orders",
            region="us-east-1",
            visibility_timeout=30,
            fifo=False,
            redrive=None,
            dlq_url="https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq",
        ),
        dlq_url="https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq",
        dlq_arn=DLQ_ARN,
        dlq_fifo=False,
    )

    def expect_task(self, stubber: AioStubber, handle: str, status: str, moved: int) -> None:
        stubber.add_response("start_message_move_task", {"TaskHandle": handle})
        task = {
            "TaskHandle": handle,
            "Status": status,
            "SourceArn": self.DLQ_ARN,
            "ApproximateNumberOfMessagesMoved": moved,
            "ApproximateNumberOfMessagesToMove": 10,
        }
        stubber.add_response("list_message_move_tasks", {"Results": [task]})

    async def test_stop_returns_at_once_with_the_handle(self) -> None:
        stop = asyncio.Event()
        plan = dlq.RedrivePlan()
        async with stubbed_sqs() as client:
            with AioStubber(client) as stubber:
                self.expect_task(stubber, "task-1", "RUNNING", 3)
                started = time.monotonic()
                result = await asyncio.wait_for(
                    dlq.native_redrive(
                        client,
                        self.PAIR,
                        plan,
                        self.DLQ_ARN,
                        progress=lambda *_: stop.set(),  # Ctrl-C while the task runs
                        stop=stop,
                    ),
                    3,  # well before the next look at the task, five seconds on
                )
                stubber.assert_no_pending_responses()
        assert time.monotonic() - started < 2
        assert result is not None
        assert (result.interrupted, result.native_task, result.moved) == (True, "task-1", 3)
        summary = _summary(result, plan)
        assert "stopped following SQS move task task-1 (3 messages moved so far)" in summary
        assert "the task goes on in SQS" in summary
        assert "`worker dlq moves --cancel task-1`" in summary

    async def test_a_task_that_moved_nothing_is_not_reported_as_started(self) -> None:
        plan = dlq.RedrivePlan()
        async with stubbed_sqs() as client:
            with AioStubber(client) as stubber:
                self.expect_task(stubber, "task-2", "COMPLETED", 0)
                result = await dlq.native_redrive(client, self.PAIR, plan, self.DLQ_ARN)
        assert result is not None
        assert not result.interrupted
        assert _summary(result, plan) == "SQS move task task-2 completed: moved 0 messages"

    def test_no_wait_says_started(self) -> None:
        result = dlq.RedriveResult(native_task="task-3")
        assert _summary(result, dlq.RedrivePlan()) == (
            "started SQS move task task-3; follow it with `worker dlq moves`"
        )


class TestPurgeAndReprocess:
    """Purge asks for --yes; a worker runs against a DLQ to reprocess it."""

    async def test_purge_needs_yes(self, queues: Queues) -> None:
        await seed(queues, "a", "b")
        common = ("--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url)
        code, _, err = await cli("dlq", "purge", *common)
        assert code == 2
        assert err.strip().endswith(
            f"refusing to delete the 2 messages of {queues.queue_name}-dlq without --yes"
        )
        assert await depth(queues, queues.dlq_url) == (2, 0)
        code, out, _ = await cli("dlq", "purge", "--yes", *common)
        assert code == 0
        assert out.strip() == f"purged {queues.queue_name}-dlq (2 messages)"
        assert await depth(queues, queues.dlq_url) == (0, 0)

    async def test_worker_reprocesses_a_dlq_and_exits_when_idle(
        self, queues: Queues, tmp_path: Path
    ) -> None:
        await seed(queues, "r1", "r2", "r3")
        code, _, err = await cli(
            "run",
            "--queue",
            queues.dlq_url,
            "--endpoint-url",
            queues.endpoint_url,
            "--handler",
            "tests.handlers:slow",
            "--exit-when-idle",
            "1",
            env={
                "TEST_SLEEP": "0",
                "TEST_MARKERS": str(tmp_path),
                "WORKER_WAIT_TIME_SECONDS": "1",
                "WORKER_HTTP_PORT": "0",
                "WORKER_LOG_FORMAT": "json",
            },
        )
        assert code == 0, err
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        reprocessing = next(e for e in events if e["event"] == "worker.reprocessing_dlq")
        assert reprocessing["dlq_of"] == [queues.queue_name]
        stopped = next(e for e in events if e["event"] == "worker.stopped")
        assert stopped["deleted"] == 3
        assert await depth(queues, queues.dlq_url) == (0, 0)

    async def test_moves_on_an_endpoint_without_them(self, queues: Queues) -> None:
        with without_move_tasks(queues.endpoint_url) as endpoint:
            code, _, err = await cli(
                "dlq", "moves", "--queue", queues.queue_url, "--endpoint-url", endpoint
            )
        assert code == 1
        assert err.strip() == f"worker: {NO_MOVE_TASKS}"
