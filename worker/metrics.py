"""Prometheus metrics: what operators alert and scale on, from the worker itself.

Every metric lives in a :class:`~prometheus_client.CollectorRegistry` passed in (a fresh one per
worker and per test: nothing is registered at import time). Labels stay low-cardinality — the
queue's name, an outcome, a reason, an SQS operation — and never carry message ids. Children for
the fixed label values are bound once here, so the per-message cost is an increment.
"""

from __future__ import annotations

import bisect
import math
import platform
import sys
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.registry import Collector

from worker._version import __version__
from worker.consume.outcome import FailureReason
from worker.logs import lines_dropped

# Handler durations: from a no-op to Lambda's 15 minutes and beyond.
_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)
# Message age at the start of processing: the lag users set SLOs on.
_AGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
_RECEIVE_COUNT_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20, 50, 100)
_SQS_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
QUEUE_STATES = ("visible", "in_flight", "delayed")


class _CountedElsewhere(Collector):
    """A counter kept outside the registry (by the log writer, which exists before it), read at
    each scrape."""

    def __init__(self, name: str, text: str, queue: str, read: Callable[[], float]) -> None:
        self._name = name
        self._text = text
        self._queue = queue
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """The counter's one sample."""
        family = CounterMetricFamily(self._name, self._text, labels=["queue"])
        family.add_metric([self._queue], self._read())
        yield family


class LoopHistogram:
    """One series of a :class:`_LoopHistograms` family: observed from the event loop only."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket (``le``: a value on a bound counts in that bucket)."""
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


class _LoopHistograms(Collector):
    """A histogram family observed only from the event loop's thread: no lock per observation.

    prometheus-client's Histogram takes a lock for each observation (two with its sum): with
    four histograms observed per message, a fifth of the CPU the worker's metrics cost per
    message, for threads that never observe them. A scrape reads each series' buckets in one
    step; its sum may be one observation apart from them, which Prometheus's rates absorb.
    """

    def __init__(
        self, name: str, text: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self._name = name
        self._text = text
        self._labels = list(labels)
        self._bounds = tuple(float(bound) for bound in buckets if not math.isinf(bound))
        self._series: dict[tuple[str, ...], LoopHistogram] = {}

    def labels(self, *values: str) -> LoopHistogram:
        """The series of these label values, made on first use."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = LoopHistogram(self._bounds)
        return series

    def describe(self) -> Iterator[Metric]:
        """The family's name, for the registry's duplicate check."""
        yield HistogramMetricFamily(self._name, self._text, labels=self._labels)

    def collect(self) -> Iterator[Metric]:
        """Every series, with cumulative buckets as the exposition format wants them."""
        family = HistogramMetricFamily(self._name, self._text, labels=self._labels)
        for values, series in list(self._series.items()):
            counts = list(series.counts)
            cumulative, buckets = 0, []
            for bound, count in zip([*self._bounds, math.inf], counts, strict=True):
                cumulative += count
                # As prometheus-client writes ``le``: "+Inf", else the float's repr ("1.0").
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            family.add_metric(list(values), buckets, series.sum)
        yield family


class Metrics:
    """The worker's metrics, bound to one queue."""

    def __init__(self, registry: CollectorRegistry, *, queue: str) -> None:
        self.registry = registry
        self.queue = queue
        q = [queue]

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, ["queue", *labels], registry=registry)

        def loop_histogram(
            name: str, text: str, buckets: Sequence[float], *labels: str
        ) -> _LoopHistograms:
            family = _LoopHistograms(name, text, ["queue", *labels], buckets)
            registry.register(family)
            return family

        received = counter("worker_messages_received_total", "Messages received from SQS.")
        self.received = received.labels(*q)
        self.succeeded = counter(
            "worker_messages_succeeded_total", "Messages whose handler succeeded."
        ).labels(*q)
        failed = counter(
            "worker_messages_failed_total", "Messages whose handler failed, by reason.", "reason"
        )
        self.failed = {reason: failed.labels(queue, reason.value) for reason in FailureReason}
        self.deleted = counter("worker_messages_deleted_total", "Messages deleted.").labels(*q)
        self.retried = counter(
            "worker_messages_retried_total",
            "Failed messages given a retry delay (their visibility set from the backoff).",
        ).labels(*q)
        released = counter(
            "worker_messages_released_total",
            "Messages given back at once (visibility 0): on shutdown, or non-retryable.",
            "reason",
        )
        self.released = {
            reason: released.labels(queue, reason)
            for reason in ("shutdown", "non_retryable", "fifo_order")
        }
        self.filtered = counter(
            "worker_messages_filtered_total",
            "Messages that matched no pattern of WORKER_FILTER_CRITERIA: deleted unhandled.",
        ).labels(*q)
        self.batch_size = loop_histogram(
            "worker_handler_batch_size",
            "Messages per handler call (Lambda handlers get batches).",
            (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
        ).labels(*q)
        self.settle_failures = counter(
            "worker_settle_failures_total",
            "Deletes or visibility changes that could not be made (the message comes back).",
            "operation",
        )
        # Every label value known up front is a series from the start: a dashboard or a rate()
        # then shows 0 on a healthy worker instead of nothing at all.
        for operation in ("delete", "retry", "release"):
            self.settle_failures.labels(queue, operation)
        self.handler_duration = loop_histogram(
            "worker_handler_duration_seconds",
            "Time from handler start to its outcome, per call, by outcome.",
            _DURATION_BUCKETS,
            "outcome",
        )
        self._durations: dict[str, LoopHistogram] = {}
        self._sqs: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.message_age = loop_histogram(
            "worker_message_age_seconds",
            "Age of a message (now minus SentTimestamp) when its handler starts.",
            _AGE_BUCKETS,
        ).labels(*q)
        self.receive_count = loop_histogram(
            "worker_message_receive_count",
            "ApproximateReceiveCount of messages when their handler starts: retries show here.",
            _RECEIVE_COUNT_BUCKETS,
        ).labels(*q)
        self._gauges: dict[str, Gauge] = {}
        for name, text in {
            "worker_messages_in_flight": "Messages received and not yet settled.",
            "worker_handlers_running": "Handler calls running (utilisation = this / limit).",
            "worker_messages_waiting": "Messages received ahead, waiting for a handler slot.",
            "worker_concurrency_limit": "WORKER_CONCURRENCY: handler calls allowed at once.",
            "worker_handlers_abandoned": "Plain-function handlers past budget, still running.",
            "worker_pollers_running": "Long-polling loops alive.",
        }.items():
            self._gauges[name] = Gauge(name, text, ["queue"], registry=registry)
        self.sqs_requests = counter(
            "worker_sqs_requests_total",
            "SQS API calls by operation and result ('success' or the error code).",
            "operation",
            "result",
        )
        self.sqs_retries = counter(
            "worker_sqs_request_retries_total",
            "Retries botocore made inside SQS API calls.",
            "operation",
        )
        self.sqs_latency = Histogram(
            "worker_sqs_request_duration_seconds",
            "SQS API call latency, retries included.",
            ["queue", "operation"],
            buckets=_SQS_LATENCY_BUCKETS,
            registry=registry,
        )
        self.empty_receives = counter(
            "worker_sqs_empty_receives_total", "Receives that returned no message."
        ).labels(*q)
        self.batch_entry_failures = counter(
            "worker_sqs_batch_entry_failures_total",
            "Entries of batch calls that SQS refused, by operation and error code.",
            "operation",
            "code",
        )
        self.extensions = counter(
            "worker_visibility_extensions_total", "Visibility timeouts extended."
        ).labels(*q)
        self.extension_failures = counter(
            "worker_visibility_extension_failures_total",
            "Visibility extensions that failed (call errors, or the message was gone).",
        ).labels(*q)
        self.queue_messages = Gauge(
            "worker_queue_messages",
            "Messages in the source queue and its DLQ, by state, from GetQueueAttributes.",
            ["queue", "role", "state"],
            registry=registry,
        )
        # The gauges above keep their last values while SQS cannot be read: this says how old
        # they are, so that alerts on depth can tell a DLQ that is still full from one that was.
        self.depth_read_at = Gauge(
            "worker_queue_depth_last_read_timestamp_seconds",
            "When the depth gauges of a queue were last read successfully (Unix time).",
            ["queue", "role"],
            registry=registry,
        )
        self.loop_lag = Gauge(
            "worker_event_loop_lag_seconds",
            "How far behind the event loop is at this scrape: time since its last one-second "
            "heartbeat, beyond the second. A blocked loop shows here while it is blocked.",
            ["queue"],
            registry=registry,
        ).labels(*q)
        self.task_protected = Gauge(
            "worker_task_protected",
            "1 while ECS task scale-in protection is on, as the agent last confirmed; 0 otherwise.",
            ["queue"],
            registry=registry,
        ).labels(*q)
        self.task_protection_failures = counter(
            "worker_task_protection_failures_total",
            "Calls to the ECS agent's task-protection endpoint that failed (the worker goes on).",
        ).labels(*q)
        Info("worker_build", "The worker's version and runtime.", registry=registry).info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "implementation": sys.implementation.name,
            }
        )
        registry.register(
            _CountedElsewhere(
                "worker_log_lines_dropped_total",
                "Log lines that could not be written (a closed pipe, a full disk): dropped.",
                queue,
                lines_dropped,
            )
        )
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def watch(self, name: str, read: Callable[[], float]) -> None:
        """Make the gauge ``name`` read its value from ``read`` at each scrape."""
        self._gauges[name].labels(self.queue).set_function(read)

    def duration_for(self, outcome: str) -> LoopHistogram:
        """The handler duration histogram of one outcome label."""
        child = self._durations.get(outcome)
        if child is None:
            child = self._durations[outcome] = self.handler_duration.labels(self.queue, outcome)
        return child

    def sqs_call(self, operation: str, result: str, seconds: float, retries: int) -> None:
        """Record one SQS API call."""
        children = self._sqs.get((operation, result))
        if children is None:
            children = self._sqs[operation, result] = (
                self.sqs_requests.labels(self.queue, operation, result),
                self.sqs_latency.labels(self.queue, operation),
            )
        requests, latency = children
        requests.inc()
        latency.observe(seconds)
        if retries:
            self.sqs_retries.labels(self.queue, operation).inc(retries)

    def entry_failure(self, operation: str, code: str) -> None:
        """Record one entry of a batch call that SQS refused."""
        self.batch_entry_failures.labels(self.queue, operation, code or "unknown").inc()

    def set_depth(self, queue: str, role: str, counts: dict[str, int]) -> None:
        """Record a queue's depth by state, just read."""
        for state in QUEUE_STATES:
            self.queue_messages.labels(queue, role, state).set(counts.get(state, 0))
        self.depth_read_at.labels(queue, role).set_to_current_time()
