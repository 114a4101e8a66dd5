"""The SQS side: clients, what a queue is configured with, and the batched calls the worker makes.

Every call the worker makes to SQS goes through :class:`SqsQueue`, so that batching rules (ten
entries a call), partial failures and, later, metrics live in one place.
"""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from worker._version import __version__
from worker.config import Settings
from worker.endpoint_data import lean_loader
from worker.errors import StartupError

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from worker.metrics import Metrics

_Response = TypeVar("_Response", bound=Mapping[str, Any])
_Client = TypeVar("_Client")

MAX_BATCH = 10  # SQS takes at most ten entries per batch call and returns at most ten messages
DEFAULT_VISIBILITY_SECONDS = 30  # SQS's own default for a queue's visibility timeout
_REGION_IN_URL = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


@dataclass(frozen=True, slots=True)
class RedrivePolicy:
    """Where SQS moves a message after ``max_receive_count`` receives."""

    dead_letter_target_arn: str
    max_receive_count: int

    @property
    def dlq_name(self) -> str:
        """The DLQ's name, the last part of its ARN."""
        return self.dead_letter_target_arn.rsplit(":", 1)[-1]


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What the worker needs to know about its queue, read once at start-up."""

    url: str
    arn: str
    region: str
    visibility_timeout: int
    fifo: bool
    redrive: RedrivePolicy | None
    dlq_url: str | None
    # For a queue without a DLQ of its own: the queues whose DLQ it is (reprocessing a DLQ),
    # or, when ListDeadLetterSourceQueues failed, why (then the sources are unknown).
    dead_letter_sources: tuple[str, ...] = ()
    dead_letter_sources_error: str | None = None

    @property
    def name(self) -> str:
        """The queue's name, the last part of its ARN."""
        return self.arn.rsplit(":", 1)[-1]


# How SQS refuses a receipt handle that names no message in flight any more (deleted, or its
# visibility ran out and it went to another consumer): the message is gone for this consumer.
_RECEIPT_GONE_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidReceiptHandle",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """One entry of a batch call that SQS refused."""

    code: str
    message: str
    sender_fault: bool

    @property
    def receipt_gone(self) -> bool:
        """Whether SQS refused the entry's receipt handle: the message is no longer ours.

        Whatever ``SenderFault`` says: SQS sets it, LocalStack does not (it answers a deleted
        message's handle with ``InvalidParameterValueException``, ``SenderFault=false``).
        """
        if self.code in _RECEIPT_GONE_CODES:
            return True
        return self.code.startswith("InvalidParameterValue") and "ReceiptHandle" in self.message

    @property
    def permanent(self) -> bool:
        """Whether trying the entry again cannot help: the sender's fault, or a gone message."""
        return self.sender_fault or self.receipt_gone


def region_of(settings: Settings) -> str | None:
    """The configured region, or the one an AWS queue URL names."""
    if settings.region:
        return settings.region
    match = _REGION_IN_URL.match(settings.queue_url or "")
    return match.group(1) if match else None


# Fixed once: botocore otherwise rebuilds its default User-Agent (a dozen sanitised components)
# twice for every request, about a tenth of the client's CPU per SQS call. AWS reads it for
# telemetry only; this one names the worker and the versions that matter when reading it.
USER_AGENT = (
    f"sqs-event-worker/{__version__} botocore/{botocore.__version__} "
    f"Python/{platform.python_version()}"
)


def client_config(
    settings: Settings, *, pool: int = 10, max_attempts: int = 5, validate: bool = True
) -> AioConfig:
    """Client options: standard retries, and a read timeout longer than a long poll.

    ``validate=False`` skips botocore's check of each call's parameters against the service
    model, for the consume path: it builds every request itself from typed values, and the
    check of a ten-entry delete batch alone costs about 22 µs (2 µs a message). SQS still
    refuses what is wrong, by the same error codes.
    """
    return AioConfig(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=settings.wait_time_seconds + 15,
        max_pool_connections=pool,
        user_agent=USER_AGENT,
        parameter_validation=validate,
    )


async def _entered(stack: AsyncExitStack, creating: AsyncContextManager[_Client]) -> _Client:
    """Create a client; a region botocore refuses is a start-up error, not a traceback."""
    try:
        return await stack.enter_async_context(creating)
    except (botocore.exceptions.InvalidRegionError, botocore.exceptions.NoRegionError) as exc:
        raise StartupError(describe_failure(exc)) from None


def aws_session() -> AioSession:
    """A session for the worker's own clients, with the lean endpoint table (see endpoint_data)."""
    session = get_session()
    session.register_component("data_loader", lean_loader(session.get_config_variable("data_path")))
    return session


def _create_client(service: str, settings: Settings, config: AioConfig) -> Any:
    """The creating context of an SQS or SNS client for the configured region and endpoint."""
    key_id, secret_key, token = settings.client_credentials()
    session: Any = aws_session()  # typed per service by the callers
    return session.create_client(
        service,
        region_name=region_of(settings),
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        config=config,
    )


@asynccontextmanager
async def open_sqs(
    settings: Settings, *, pool: int = 10, max_attempts: int = 5, validate: bool = True
) -> AsyncIterator[SQSClient]:
    """An SQS client for the configured region and endpoint (``validate``: see client_config)."""
    config = client_config(settings, pool=pool, max_attempts=max_attempts, validate=validate)
    async with AsyncExitStack() as stack:
        client: SQSClient = await _entered(stack, _create_client("sqs", settings, config))
        yield client


@asynccontextmanager
async def open_sns(settings: Settings) -> AsyncIterator[SNSClient]:
    """An SNS client for the configured region and endpoint."""
    async with AsyncExitStack() as stack:
        client: SNSClient = await _entered(
            stack, _create_client("sns", settings, client_config(settings))
        )
        yield client


def error_code(exc: BaseException) -> str:
    """The AWS error code of a client error, or the exception's type name."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _describe_client_error(exc: botocore.exceptions.ClientError) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code", "ClientError")
    message = str(error.get("Message", exc)).strip()
    if message.startswith("<") or not message:  # an HTML error page, not an AWS error
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code)
        return f"HTTP {status}"
    return f"{code}: {message.splitlines()[0][:300]}"


_SETUP_PROBLEMS: dict[type[Exception], Callable[[Any], str]] = {
    botocore.exceptions.NoCredentialsError: lambda _: (
        "no AWS credentials found "
        "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role)"
    ),
    botocore.exceptions.InvalidRegionError: lambda exc: (
        f"invalid AWS region {exc.kwargs.get('region_name')!r}"
    ),
    botocore.exceptions.NoRegionError: lambda _: (
        "no AWS region configured (set AWS_REGION or WORKER_REGION)"
    ),
    botocore.exceptions.EndpointConnectionError: lambda exc: (
        f"cannot reach {exc.kwargs.get('endpoint_url', 'the endpoint')}"
    ),
}


def describe_failure(exc: BaseException) -> str:
    """One line that says what went wrong talking to AWS."""
    for kind, describe in _SETUP_PROBLEMS.items():
        if isinstance(exc, kind):
            return describe(exc)
    if isinstance(exc, botocore.exceptions.ClientError):
        return _describe_client_error(exc)
    return f"{type(exc).__name__}: {exc}"


async def queue_url_for(client: SQSClient, queue: str) -> str:
    """The URL of a queue given by URL or by name."""
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        response = await client.get_queue_url(QueueName=queue)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}:
            raise StartupError(f"queue {queue!r} does not exist") from None
        raise
    return response["QueueUrl"]


def parse_redrive_policy(text: str | None) -> RedrivePolicy | None:
    """The queue's RedrivePolicy attribute, or ``None`` if it has none."""
    if not text:
        return None
    document = json.loads(text)
    return RedrivePolicy(
        dead_letter_target_arn=str(document["deadLetterTargetArn"]),
        max_receive_count=int(document["maxReceiveCount"]),
    )


async def describe_queue(client: SQSClient, queue: str) -> QueueInfo:
    """Read the queue's configuration and find its DLQ; raises :class:`StartupError`."""
    url = await queue_url_for(client, queue)
    try:
        response = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}:
            raise StartupError(f"queue {url} does not exist") from None
        raise
    attributes = response.get("Attributes", {})
    arn = attributes["QueueArn"]
    redrive = parse_redrive_policy(attributes.get("RedrivePolicy"))
    dlq_url = None
    if redrive is not None:
        try:
            dlq_url = await queue_url_for(client, redrive.dlq_name)
        except StartupError:
            raise StartupError(
                f"the DLQ {redrive.dead_letter_target_arn} named by the RedrivePolicy of {url} "
                "does not exist"
            ) from None
    sources: tuple[str, ...] = ()
    sources_error = None
    if redrive is None:
        sources, sources_error = await _dead_letter_sources(client, url)
    return QueueInfo(
        url=url,
        arn=arn,
        region=arn.split(":")[3],
        visibility_timeout=int(attributes.get("VisibilityTimeout", "30")),
        fifo=attributes.get("FifoQueue") == "true",
        redrive=redrive,
        dlq_url=dlq_url,
        dead_letter_sources=sources,
        dead_letter_sources_error=sources_error,
    )


async def _dead_letter_sources(client: SQSClient, url: str) -> tuple[tuple[str, ...], str | None]:
    """The queues whose DLQ this queue is, or why that cannot be read (no permission, say)."""
    try:
        response = await client.list_dead_letter_source_queues(QueueUrl=url)
    except botocore.exceptions.ClientError as exc:
        return (), describe_failure(exc)
    return tuple(response.get("queueUrls", [])), None


class Queue(Protocol):
    """The calls the consume path makes on its queue: the seam between the core and SQS.

    :class:`SqsQueue` makes them over the wire; :class:`worker.consume.memory_sqs.MemoryQueue` in
    memory,
    for tests of the core's logic.
    """

    url: str

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> Sequence[MessageTypeDef]:
        """Long-poll for up to ``max_messages`` messages, with all their attributes."""
        ...

    async def delete_batch(self, receipts: Mapping[str, str]) -> dict[str, EntryFailure]:
        """Delete messages by receipt handle (at most ten, keyed by entry id)."""
        ...

    async def change_visibility_batch(
        self, changes: Mapping[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        """Set the visibility timeout of messages (at most ten, keyed by entry id)."""
        ...

    async def attributes(self, names: Sequence[QueueAttributeNameType]) -> dict[str, str]:
        """Some of the queue's attributes."""
        ...


class SqsQueue:
    """The calls the worker makes on one queue, each timed and counted in the metrics."""

    def __init__(self, client: SQSClient, url: str, metrics: Metrics | None = None) -> None:
        self._client = client
        self.url = url
        self._metrics = metrics

    async def _call(self, operation: str, call: Awaitable[_Response]) -> _Response:
        started = time.monotonic()
        try:
            response = await call
        except Exception as exc:
            if self._metrics is not None:
                retries = 0
                if isinstance(exc, botocore.exceptions.ClientError):
                    retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                self._metrics.sqs_call(
                    operation, error_code(exc), time.monotonic() - started, retries
                )
            raise
        if self._metrics is not None:
            retries = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            self._metrics.sqs_call(operation, "success", time.monotonic() - started, retries)
        return response

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> Sequence[MessageTypeDef]:
        """Long-poll for up to ``max_messages`` messages, with all their attributes."""
        extra: dict[str, Any] = {}
        if visibility_timeout is not None:
            extra["VisibilityTimeout"] = visibility_timeout
        response = await self._call(
            "ReceiveMessage",
            self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                **extra,
            ),
        )
        messages = response.get("Messages", [])
        if not messages and self._metrics is not None:
            self._metrics.empty_receives.inc()
        return messages

    async def delete_batch(self, receipts: Mapping[str, str]) -> dict[str, EntryFailure]:
        """Delete messages by receipt handle (at most ten, keyed by entry id)."""
        response = await self._call(
            "DeleteMessageBatch",
            self._client.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": key, "ReceiptHandle": handle} for key, handle in receipts.items()],
            ),
        )
        return self._failures("DeleteMessageBatch", response.get("Failed", []))

    async def change_visibility_batch(
        self, changes: Mapping[str, tuple[str, int]]
    ) -> dict[str, EntryFailure]:
        """Set the visibility timeout of messages (at most ten, keyed by entry id)."""
        response = await self._call(
            "ChangeMessageVisibilityBatch",
            self._client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": key, "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                    for key, (handle, seconds) in changes.items()
                ],
            ),
        )
        return self._failures("ChangeMessageVisibilityBatch", response.get("Failed", []))

    async def attributes(self, names: Sequence[QueueAttributeNameType]) -> dict[str, str]:
        """Some of the queue's attributes."""
        response = await self._call(
            "GetQueueAttributes",
            self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=list(names)),
        )
        return {str(key): value for key, value in response.get("Attributes", {}).items()}

    def _failures(
        self, operation: str, failed: Sequence[Mapping[str, Any]]
    ) -> dict[str, EntryFailure]:
        failures = {
            str(entry["Id"]): EntryFailure(
                code=str(entry.get("Code", "")),
                message=str(entry.get("Message", "")),
                sender_fault=bool(entry.get("SenderFault", False)),
            )
            for entry in failed
        }
        if self._metrics is not None:
            for failure in failures.values():
                self._metrics.entry_failure(operation, failure.code)
        return failures
