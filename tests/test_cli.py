"""The command line's conventions: help, completion, NO_COLOR, --json, stdin, dry runs."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.support import REGION, ROOT, Queues, drain, make_queues, run_cli
from worker.config import LogFormat, Settings, env_name
from worker.consume.sqs import open_sns, open_sqs
from worker.errors import ConfigurationError
from worker.ops import completion
from worker.ops.batches import split_batches
from worker.ops.cli import _configure_logging, _events, build_parser, main
from worker.ops.local import embedded_broker
from worker.ops.publish import SNS_MAX_BATCH_BYTES, Event, event_bytes, publish_events

# Flags whose setting has another name than the flag's destination.
SETTING_OF = {"raw_delivery": "raw_message_delivery", "dlq": "dlq_name"}


def commands(
    parser: argparse.ArgumentParser, path: str = "worker"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command that does something: the leaves of the parser's tree."""
    under = completion.subcommands(parser)
    if not under:
        yield path, parser
    for name, sub in under.items():
        yield from commands(sub, f"{path} {name}")


class TestHelp:
    """Each command's --help: a description, each flag's variable and default, examples."""

    @pytest.mark.parametrize(("name", "parser"), list(commands(build_parser())))
    def test_description_flags_and_examples(
        self, name: str, parser: argparse.ArgumentParser
    ) -> None:
        assert parser.description, name
        assert parser.epilog
        assert parser.epilog.startswith("examples:\n  ")
        assert name in parser.epilog
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            shown = action.help or ""
            assert "default:" in shown, (name, action.option_strings)
            field = SETTING_OF.get(action.dest, action.dest)
            if field in Settings.model_fields:
                assert env_name(field) in shown, (name, action.option_strings)

    def test_help_renders_with_the_examples_as_written(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit):
            main(["run", "--help"])
        out = capsys.readouterr().out
        assert "(WORKER_CONCURRENCY; default: 10)" in " ".join(out.split())
        assert "examples:\n  worker run --queue orders --handler myhandlers:handle\n" in out


@pytest.mark.parametrize("timeout", ["inf", "nan", "0", "-1", "soon", "1e10", "86401"])
def test_a_healthcheck_timeout_that_is_no_duration_is_a_usage_error(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # "inf" and 1e10 ended in a traceback from the socket, "nan" and "-1" as "cannot reach".
    with pytest.raises(SystemExit) as raised:
        main(["healthcheck", "--timeout", timeout, "--url", "http://127.0.0.1:9/healthz"])
    assert raised.value.code == 2
    assert f"'{timeout}' is not a number of seconds above 0 and at most 86400" in (
        capsys.readouterr().err
    )


class TestOneCommandBuilt:
    """main builds the parser of the command its first argument names, and nothing else."""

    OTHER_COMMANDS = (
        "worker.ops.completion",
        "worker.ops.demo",
        "worker.ops.dlq_args",
        "worker.ops.dlq_cli",
        "worker.ops.invoke_cli",
        "worker.ops.local",
        "worker.ops.provision",
        "worker.ops.publish",
    )

    def test_worker_run_imports_no_other_command(self, tmp_path: Path) -> None:
        script = (
            "import json, sys\n"
            "from worker.ops import cli\n"
            "code = cli.main(['run'])\n"
            "print(json.dumps([code, sorted(sys.modules)]))\n"
        )
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
        done = subprocess.run(  # noqa: S603 -- this interpreter
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,  # exits 0: the code is what main returned, printed
        )
        code, modules = json.loads(done.stdout)
        assert code == 2  # no handler, no queue: the configuration errors, after parsing
        assert "WORKER_HANDLER: required" in done.stderr
        assert not set(self.OTHER_COMMANDS) & set(modules)

    @pytest.mark.parametrize("name", sorted(completion.subcommands(build_parser())))
    def test_a_command_alone_parses_as_in_the_whole_parser(self, name: str) -> None:
        def flags(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
            return [(*action.option_strings, action.dest) for action in parser._actions]

        alone = build_parser(name)
        assert list(completion.subcommands(alone)) == [name]
        whole = dict(commands(build_parser()))
        for path, parser in commands(alone):
            assert flags(parser) == flags(whole[path]), path

    def test_a_first_argument_that_names_no_command_lists_them_all(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as raised:
            main(["rnu"])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        for name in completion.subcommands(build_parser()):
            assert repr(name) in error, name


def _complete(words: str, script: str) -> list[str]:
    """What bash completes for the command line ``words`` (a trailing space: a new word)."""
    line = words.split(" ")
    array = " ".join(f"'{word}'" for word in line)
    driver = (
        f"{script}\nCOMP_WORDS=({array}); COMP_CWORD={len(line) - 1}; _worker_complete; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(  # noqa: S603 -- bash, and our own script
        ["bash", "-c", driver],  # noqa: S607 -- bash from PATH, as a user's shell
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return sorted(line for line in done.stdout.splitlines() if line)


class TestCompletion:
    """``worker completion bash`` completes commands, flags and flag values; zsh reuses it."""

    SCRIPT = completion.script(build_parser(), "bash")

    @pytest.mark.parametrize(
        ("words", "expected"),
        [
            ("worker d", ["demo", "dlq"]),
            ("worker dlq re", ["redrive"]),
            ("worker run --conc", ["--concurrency"]),
            ("worker run --handler-type ", ["lambda", "message"]),
            ("worker --version", ["--version"]),
            ("worker completion ", ["bash", "zsh"]),
            # An option's value is not taken for a command: "dlq" here is a queue's name.
            ("worker run --queue dlq --exit", ["--exit-when-idle"]),
            ("worker dlq redrive --dry", ["--dry-run"]),
        ],
    )
    def test_bash(self, words: str, expected: list[str]) -> None:
        assert _complete(words, self.SCRIPT) == expected

    def test_zsh_runs_the_same_script_through_bashcompinit(self) -> None:
        script = completion.script(build_parser(), "zsh")
        assert "bashcompinit" in script
        assert script.endswith(self.SCRIPT)

    def test_the_command_prints_it(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["completion", "bash"]) == 0
        assert capsys.readouterr().out == self.SCRIPT


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestNoColor:
    """NO_COLOR (set and not empty) takes the colours out of console logs on a terminal."""

    @pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("", True), ("1", False)])
    def test_console_logs(
        self, monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
    ) -> None:
        terminal = _Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        if no_color is not None:
            monkeypatch.setenv("NO_COLOR", no_color)
        _configure_logging(Settings(log_format=LogFormat.CONSOLE))
        structlog.get_logger("test").warning("something.happened", n=1)
        assert "something.happened" in terminal.getvalue()
        assert ("\x1b[" in terminal.getvalue()) is coloured


class TestProvision:
    """``provision --dry-run --json``: what would be done, for scripts, and nothing done."""

    def test_dry_run_as_json(self, moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
        name = f"cli-{uuid.uuid4().hex[:10]}"
        args = ["provision", "--queue", name, "--endpoint-url", moto_endpoint, "--region", REGION]
        assert main([*args, "--dry-run", "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["changed"] is True
        assert document["dry_run"] is True
        assert {step["verdict"] for step in document["steps"]} == {"would create", "would set"}
        assert main([*args, "--json"]) == 0
        made = json.loads(capsys.readouterr().out)
        assert made["queue_url"].endswith(f"/{name}")
        assert main(args) == 0
        assert capsys.readouterr().out.splitlines()[-1] == (
            "unchanged: everything was already as asked"
        )

    async def test_a_topic_by_arn(self, queues: Queues) -> None:
        name = f"cli-{uuid.uuid4().hex[:10]}"
        code, out, err = await run_cli(
            *("provision", "--queue", name, "--topic", queues.topic_arn, "--json"),
            env={"WORKER_ENDPOINT_URL": queues.endpoint_url},
        )
        assert code == 0, err
        assert json.loads(out)["topic_arn"] == queues.topic_arn


class TestPublish:
    """``publish`` reads stdin when it is not a terminal and prints the message ids."""

    @pytest.mark.slow
    async def test_piped_lines_and_their_ids(self, queues: Queues) -> None:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "worker", "publish", "--topic", queues.topic_arn),
            *("--endpoint-url", queues.endpoint_url, "--region", REGION),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(b'{"n": 1}\n{"n": 2}\n'), 60)
        assert process.returncode == 0, err.decode()
        ids = out.decode().split()
        assert len(ids) == 2
        assert "published 2 messages" in err.decode()
        received = await drain(queues, queues.queue_url, expect=2)
        assert sorted(json.loads(m["Body"])["MessageId"] for m in received) == sorted(ids)

    @pytest.mark.slow
    async def test_json(self, queues: Queues) -> None:
        code, out, _ = await run_cli(
            *("publish", "--topic", queues.topic_arn, "--endpoint-url", queues.endpoint_url),
            *("--json", "one"),
        )
        assert code == 0
        assert len(json.loads(out)["message_ids"]) == 1


class TestPublishDash:
    """A BODY of ``-`` stands for the lines of stdin, in its place, as ``--file -`` does."""

    @staticmethod
    def bodies(monkeypatch: pytest.MonkeyPatch, stdin: str, *argv: str) -> list[str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return [event.body for event in _events(build_parser().parse_args(["publish", *argv]))]

    def test_a_lone_dash_reads_stdin(self, monkeypatch: pytest.MonkeyPatch) -> None:
        lines = '{"n": 1}\n{"n": 2}\n'
        assert self.bodies(monkeypatch, lines, "-") == ['{"n": 1}', '{"n": 2}']

    def test_a_dash_among_bodies_reads_stdin_in_its_place(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert self.bodies(monkeypatch, "b\nc\n", "a", "-", "d") == ["a", "b", "c", "d"]

    @pytest.mark.parametrize("argv", [("-",), ("--file", "-")])
    def test_a_closed_stdin_is_a_configuration_error(
        self, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
    ) -> None:
        # Python sets sys.stdin to None when the process starts with it closed (<&-).
        monkeypatch.setattr("sys.stdin", None)
        with pytest.raises(ConfigurationError, match="no stdin"):
            _events(build_parser().parse_args(["publish", *argv]))

    @pytest.mark.parametrize("argv", [("-", "-"), ("-", "--file", "-")])
    def test_stdin_named_twice_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
    ) -> None:
        # The second would read nothing: stdin is used up by the first.
        with pytest.raises(ConfigurationError, match="stdin"):
            self.bodies(monkeypatch, "a\n", *argv)


class TestFlagsWinOverTheEnvironment:
    """``--queue`` and ``--topic`` win over a variable that names the queue or topic the other
    way (a URL over a name, a name over an ARN): the flag is what the operator just typed."""

    def test_a_queue_url_flag_over_a_queue_name_variable(
        self, queues: Queues, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("WORKER_QUEUE_NAME", "something-else")
        where = ["--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url]
        assert main(["dlq", "stats", *where, "--json"]) == 0

    def test_a_queue_name_flag_over_a_queue_url_variable(
        self, queues: Queues, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("WORKER_QUEUE_URL", f"{queues.endpoint_url}/123456789012/elsewhere")
        where = ["--queue", queues.queue_name, "--endpoint-url", queues.endpoint_url]
        assert main(["provision", *where, "--region", REGION, "--dry-run", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["queue_url"] == queues.queue_url

    async def test_a_topic_name_flag_over_a_topic_arn_variable(
        self, queues: Queues, broker_endpoint: str
    ) -> None:
        other = await make_queues(broker_endpoint)
        code, _, err = await run_cli(
            *("publish", "--topic", queues.topic_arn.rsplit(":", 1)[-1], '{"to": "this one"}'),
            env={"WORKER_ENDPOINT_URL": broker_endpoint, "WORKER_TOPIC_ARN": other.topic_arn},
        )
        assert code == 0, err
        assert len(await drain(queues, queues.queue_url, expect=1)) == 1
        assert await drain(other, other.queue_url, expect=1, timeout=1) == []


class TestPublishedInPart:
    """A publish that partly fails prints the ids of what was published, names the events that
    were not (by position), and exits 1: only those need publishing again."""

    # The fifth is over SNS's 256 KiB.
    LINES = (*(json.dumps({"i": i}) for i in range(1, 5)), "x" * 300_000)
    LINES += tuple(json.dumps({"i": i}) for i in range(6, 13))

    async def publish(self, queues: Queues, tmp_path: Path, *flags: str) -> tuple[int, str, str]:
        events = tmp_path / "events.jsonl"
        events.write_text("\n".join(self.LINES) + "\n", encoding="utf-8")
        return await run_cli(
            *("publish", "--topic", queues.topic_arn, "--file", str(events), *flags),
            env={"WORKER_ENDPOINT_URL": queues.endpoint_url},
        )

    async def test_as_json(self, queues: Queues, tmp_path: Path) -> None:
        code, out, _ = await self.publish(queues, tmp_path, "--json")
        assert code == 1
        document = json.loads(out)
        assert len(document["message_ids"]) == 11
        assert [failure["event"] for failure in document["failed"]] == [5]
        received = await drain(queues, queues.queue_url, expect=11)
        assert sorted(json.loads(m["Body"])["MessageId"] for m in received) == sorted(
            document["message_ids"]
        )

    async def test_as_text(self, queues: Queues, tmp_path: Path) -> None:
        code, out, err = await self.publish(queues, tmp_path)
        assert code == 1
        assert len(out.split()) == 11
        lines = err.strip().splitlines()
        assert lines[-2] == "published 11 of 12 messages; not published:"
        assert lines[-1].startswith("  event 5: ")


class TestPublishBatches:
    """Publish batches hold at most ten events and 256 KiB, the most SNS's PublishBatch takes."""

    def test_batches_are_cut_by_size_as_well_as_by_count(self) -> None:
        events = [Event(body="x" * 40_000) for _ in range(13)] + [Event(body="small")] * 12
        batches = split_batches(events, event_bytes, SNS_MAX_BATCH_BYTES)
        assert [len(batch) for batch in batches] == [6, 6, 10, 3]
        assert all(sum(map(event_bytes, b)) <= SNS_MAX_BATCH_BYTES for b in batches)

    def test_attributes_count_towards_the_size(self) -> None:
        attributes = {"blob": {"DataType": "Binary", "BinaryValue": b"\0" * 100_000}}
        events = [Event(body="x", attributes=attributes)] * 3
        assert [len(b) for b in split_batches(events, event_bytes, SNS_MAX_BATCH_BYTES)] == [2, 1]

    async def test_forty_kilobyte_events_go_six_to_a_request(self, queues: Queues) -> None:
        requests: list[int] = []

        def count(params: dict[str, Any], **_: Any) -> None:
            requests.append(len(params["PublishBatchRequestEntries"]))

        events = [Event(body=json.dumps({"i": i, "pad": "x" * 40_000})) for i in range(12)]
        async with open_sns(queues.settings()) as sns:
            sns.meta.events.register("provide-client-params.sns.PublishBatch", count)
            published = await publish_events(sns, queues.topic_arn, events)
        assert (len(published.message_ids), published.failed) == (12, [])
        assert requests == [6, 6]
        assert len(await drain(queues, queues.queue_url, expect=12)) == 12

    async def test_a_request_refused_whole_stops_the_publish(self, queues: Queues) -> None:
        # A topic that is gone fails every request alike: one, not one per batch.
        requests: list[int] = []

        def count(params: dict[str, Any], **_: Any) -> None:
            requests.append(len(params["PublishBatchRequestEntries"]))

        gone = queues.topic_arn + "-gone"
        events = [Event(body=json.dumps({"i": i})) for i in range(25)]
        async with open_sns(queues.settings()) as sns:
            sns.meta.events.register("provide-client-params.sns.PublishBatch", count)
            published = await publish_events(sns, gone, events)
        assert requests == [10]
        assert published.message_ids == []
        assert [position for position, _ in published.failed] == list(range(1, 26))
        first, rest = published.failed[0][1], {why for _, why in published.failed[10:]}
        assert "NotFound" in first
        assert "may have been published" not in first  # refused: nothing of it went out
        assert rest == {"not sent: an earlier request failed"}


class TestDlqJson:
    """The DLQ commands that print a result print it as JSON with --json."""

    def test_redrive_and_purge(self, queues: Queues, capsys: pytest.CaptureFixture[str]) -> None:
        async def seed() -> None:
            async with open_sqs(queues.settings()) as sqs:
                for body in ("a", "b", "c"):
                    await sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=body)

        asyncio.run(seed())
        where = ["--queue", queues.queue_url, "--endpoint-url", queues.endpoint_url]
        assert main(["dlq", "redrive", *where, "--dry-run", "--json"]) == 0
        redrive = json.loads(capsys.readouterr().out)
        assert (redrive["seen"], redrive["matched"], redrive["moved"]) == (3, 3, 0)
        assert redrive["dry_run"] is True
        assert main(["dlq", "purge", *where, "--yes", "--json"]) == 0
        purged = json.loads(capsys.readouterr().out)
        assert purged["purged"] == 3
        assert purged["dlq"] == queues.dlq_url.rsplit("/", 1)[-1]


class TestLocal:
    """``worker local`` on a port that is taken, or is no port, says so in one line."""

    def test_not_a_port(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["local", "--port", "99999"])
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            "worker local: error: argument --port: '99999' is not a port (0-65535)"
        )

    def test_a_port_just_left_is_not_taken(self) -> None:
        # `worker local` stopped a moment ago: its port's closed connections are in TIME_WAIT,
        # which the server's own bind (SO_REUSEADDR) accepts, and so must the check before it.
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as moto's server does
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port)) as client:
                accepted, _ = server.accept()
                accepted.close()  # the server side closes first: its end enters TIME_WAIT
                client.recv(1)
        with embedded_broker(port=port) as url:
            assert url == f"http://127.0.0.1:{port}"

    def test_a_taken_port(self, capsys: pytest.CaptureFixture[str]) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            assert main(["local", "--port", str(port)]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"worker: cannot listen on 127.0.0.1:{port} (")
        assert line.endswith("); choose another with --port")
