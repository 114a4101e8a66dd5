"""Configuration: ``WORKER_*`` environment variables, an optional TOML file, and command-line flags.

Precedence, highest first: command-line flags, environment, the file named by ``--config`` or
``WORKER_CONFIG_FILE``, defaults. Problems are collected rather than raised one at a time, so an
operator fixing a deployment sees every mistake at once, one line each, and unknown ``WORKER_*``
variables (usually typos) are reported instead of silently ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from worker.errors import ConfigurationError

ENV_PREFIX = "WORKER_"
CONFIG_FILE_VARIABLE = "WORKER_CONFIG_FILE"
SQS_MAX_VISIBILITY_SECONDS = 43_200  # SQS caps a message's total visibility at 12 hours
_MODULE_PART = re.compile(r"^[A-Za-z_][\w-]*$")  # Lambda's runtime imports file names with "-"
_ATTRIBUTE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
HANDLER_FORMS = "'package.module:function', or Lambda's 'module.function'"
# Kubernetes hands every pod variables for each Service in its namespace ("service links"), named
# after the Service: one called `worker` brings WORKER_SERVICE_HOST, WORKER_PORT_8080_TCP_ADDR and
# the like. They are not settings, and reporting them would stop the worker for a Service's name.
_SERVICE_LINK = re.compile(
    r"^WORKER_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)$"
)


def split_handler(spec: str) -> tuple[str, str] | None:
    """The (module, attribute) a handler name names, or ``None`` if it names none.

    ``package.module:function`` is the worker's form. Lambda's own, ``module.function`` with
    ``/`` between directories (``src/app.handler``), is read as Lambda's runtime reads it, so
    that a function's Handler setting can be copied as it is.
    """
    if ":" in spec:
        module, _, attribute = spec.partition(":")
    else:
        module, _, attribute = spec.rpartition(".")
        module = module.replace("/", ".")
    if not module or not all(_MODULE_PART.match(part) for part in module.split(".")):
        return None
    if not _ATTRIBUTE.match(attribute):
        return None
    return module, attribute


class HandlerType(StrEnum):
    """How the user's function is called."""

    MESSAGE = "message"  # handler(message: worker.Message), once per message
    LAMBDA = "lambda"  # handler(event, context), an unmodified AWS Lambda handler


class LambdaRuntime(StrEnum):
    """What runs a ``lambda`` handler's execution environments."""

    PYTHON = "python"  # AWS's Python runtime interface client (awslambdaric)
    PROVIDED = "provided"  # an executable ``bootstrap``: Lambda's OS-only runtime contract


class BatchItemFailures(StrEnum):
    """How a Lambda handler's response is read (ReportBatchItemFailures)."""

    AUTO = "auto"  # a response with batchItemFailures is read by Lambda's rules; others: success
    TRUE = "true"  # Lambda with ReportBatchItemFailures: the response must follow its rules
    FALSE = "false"  # Lambda without it: the response is ignored

    @classmethod
    def _missing_(cls, value: object) -> BatchItemFailures | None:
        # Booleans, and the spellings pydantic accepts for them, keep working.
        spelled = str(value).strip().lower()
        if spelled in {"1", "yes", "on", "t", "y"}:
            return cls.TRUE
        if spelled in {"0", "no", "off", "f", "n"}:
            return cls.FALSE
        return next((member for member in cls if member.value == spelled), None)


class EnvelopeMode(StrEnum):
    """Whether message bodies are SNS notification envelopes."""

    AUTO = "auto"  # unwrap bodies that are SNS notifications, pass others through
    SNS = "sns"  # every body must be an SNS notification; anything else is malformed
    RAW = "raw"  # never unwrap (raw message delivery, or a queue fed directly)


class BackoffMode(StrEnum):
    """What a failed message's visibility becomes."""

    EXPONENTIAL = "exponential"  # from ApproximateReceiveCount, with jitter and a cap
    OFF = "off"  # the queue's own visibility timeout, as Lambda does


class LogFormat(StrEnum):
    """How log lines are rendered."""

    AUTO = "auto"  # JSON, or readable columns when stderr is a terminal
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    """The least severe log level written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class TaskProtectionMode(StrEnum):
    """Whether the worker asks ECS to keep a busy task out of scale-ins (worker.task_protection)."""

    AUTO = "auto"  # in an ECS task (the agent sets ECS_AGENT_URI), and nowhere else
    ON = "on"  # always: a start-up error outside ECS
    OFF = "off"


Seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every setting of every command; each is ``WORKER_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        env_ignore_empty=True,
        populate_by_name=True,
        validate_default=True,
        # "inf" and "nan" parse as floats: no duration or rate here means either, and one that
        # got through failed later, as a traceback (int(inf)) or as a wait that never ends.
        allow_inf_nan=False,
    )

    # --- the queue and the AWS endpoint ---
    queue_url: str | None = None
    queue_name: str | None = None
    endpoint_url: str | None = None
    # Credentials for the worker's own SQS and SNS calls, for when they must differ from the
    # ones the handler's code finds in AWS_* (the standard chain is used when these are unset).
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    region: str | None = Field(
        default=None,
        # The field's own name still works in the file and in flags (populate_by_name).
        validation_alias=AliasChoices("WORKER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )

    # --- the handler ---
    handler: str | None = None
    handler_type: HandlerType = HandlerType.MESSAGE
    handler_path: Path | None = None
    sns_envelope: EnvelopeMode = EnvelopeMode.AUTO
    batch_size: int = Field(default=10, ge=1, le=10_000)
    max_batching_window: float = Field(default=0, ge=0, le=300)
    filter_criteria: str | None = None
    report_batch_item_failures: BatchItemFailures = BatchItemFailures.AUTO
    lambda_runtime: LambdaRuntime = LambdaRuntime.PYTHON
    function_name: str | None = None
    memory_limit_in_mb: int | None = Field(default=None, ge=128, le=10_240)

    # --- the pool ---
    concurrency: int = Field(default=10, ge=1, le=10_000)
    pollers: int | None = Field(default=None, ge=1, le=100)
    receive_fill_seconds: float = Field(default=0.02, ge=0, le=1)
    prefetch: int = Field(default=20, ge=0, le=1000)
    wait_time_seconds: int = Field(default=20, ge=1, le=20)
    visibility_timeout: int | None = Field(default=None, ge=1, le=SQS_MAX_VISIBILITY_SECONDS)
    max_processing_seconds: float = Field(default=900, gt=0, le=SQS_MAX_VISIBILITY_SECONDS)
    shutdown_timeout: float = Field(default=30, ge=0, le=3600)
    exit_when_idle: Seconds | None = None
    settle_flush_seconds: float = Field(default=0.05, ge=0, le=10)

    # --- failures ---
    backoff: BackoffMode = BackoffMode.EXPONENTIAL
    backoff_base_seconds: Seconds = 2.0
    backoff_max_seconds: float = Field(default=300, gt=0, le=SQS_MAX_VISIBILITY_SECONDS)
    allow_no_dlq: bool = False

    # --- provisioning and publishing ---
    topic_name: str | None = None
    topic_arn: str | None = None
    dlq_name: str | None = None
    max_receive_count: int = Field(default=5, ge=1, le=1000)
    raw_message_delivery: bool = False
    filter_policy: str | None = None
    fifo: bool = False
    content_based_deduplication: bool = False

    # --- observability ---
    http_host: str = "0.0.0.0"  # noqa: S104 -- a pod's probes and scrapes arrive on its pod IP
    http_port: int = Field(default=8080, ge=0, le=65_535)
    depth_interval_seconds: float = Field(default=30, ge=0, le=3600)
    # At least twice the one-second heartbeat: below it an idle, healthy loop fails probes.
    liveness_threshold_seconds: float = Field(default=60, ge=2, le=3600)
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.AUTO
    log_message_bodies: bool = False

    # --- ECS ---
    ecs_task_protection: TaskProtectionMode = TaskProtectionMode.AUTO

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then environment, then the TOML file (if :func:`load_settings` named one)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @field_validator("handler")
    @classmethod
    def _handler_names_a_function(cls, value: str | None) -> str | None:
        if value is not None and split_handler(value) is None:
            raise ValueError(f"must be {HANDLER_FORMS}")
        return value

    @field_validator("queue_url", "endpoint_url")
    @classmethod
    def _is_a_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        # What botocore and aiohttp would refuse later, with a traceback: refused here instead.
        from urllib.parse import urlsplit  # noqa: PLC0415 -- only when a URL is set

        from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url  # noqa: PLC0415

        try:
            urlsplit(value).port  # noqa: B018 -- parsing it is the check
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if not (is_valid_endpoint_url(value) or is_valid_ipv6_endpoint_url(value)):
            raise ValueError(
                "not a valid URL: its host must be a name (letters, digits, '-', '.') or an address"
            )
        return value

    @field_validator("filter_policy")
    @classmethod
    def _filter_policy_is_json_object(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import json  # noqa: PLC0415 -- only needed when a filter policy is set

        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be a JSON object ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object")  # noqa: TRY004 -- pydantic reports ValueError
        return value

    @field_validator("filter_criteria")
    @classmethod
    def _filter_criteria_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from worker.handlers.filtering import FilterCriteria, FilterError  # noqa: PLC0415

            try:
                FilterCriteria.parse(value)
            except FilterError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.queue_url and self.queue_name:
            raise ValueError("set WORKER_QUEUE_URL or WORKER_QUEUE_NAME, not both")
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "set both WORKER_AWS_ACCESS_KEY_ID and WORKER_AWS_SECRET_ACCESS_KEY, or neither"
            )
        lambda_batches = self.handler_type is HandlerType.LAMBDA
        if lambda_batches and self.batch_size > 10 and self.max_batching_window < 1:
            # Lambda's rule: one receive returns at most ten messages, so a larger batch can
            # only be gathered over time.
            raise ValueError(
                "WORKER_BATCH_SIZE above 10 needs WORKER_MAX_BATCHING_WINDOW of at least 1 second"
            )
        if self.backoff_base_seconds > self.backoff_max_seconds:
            raise ValueError(
                "WORKER_BACKOFF_BASE_SECONDS must not exceed WORKER_BACKOFF_MAX_SECONDS"
            )
        return self

    def client_credentials(self) -> tuple[str | None, str | None, str | None]:
        """(key id, secret key, session token) for AWS clients; all ``None``: the standard chain."""

        def reveal(secret: SecretStr | None) -> str | None:
            return None if secret is None else secret.get_secret_value()

        return (
            reveal(self.aws_access_key_id),
            reveal(self.aws_secret_access_key),
            reveal(self.aws_session_token),
        )

    @property
    def queue(self) -> str | None:
        """The queue as given: a URL, or a name to look up (with ``.fifo`` where
        ``WORKER_FIFO`` is set, as ``worker provision`` names it)."""
        return self.queue_url or self.fifo_named(self.queue_name)

    def fifo_named(self, name: str | None) -> str | None:
        """``name`` as a FIFO queue or topic is named (``.fifo``) where ``WORKER_FIFO`` is set."""
        if name and self.fifo and not name.endswith(".fifo"):
            return f"{name}.fifo"
        return name

    @property
    def poller_count(self) -> int:
        """Enough pollers that each asks for ten messages at a time when the pool is empty.

        Never more than the concurrency: each poller holds at least one slot while it receives.
        """
        if self.pollers is not None:
            return self.pollers
        messages_in_flight = self.concurrency * self.batch_size_for_type
        return max(1, min(10, self.concurrency, -(-messages_in_flight // 10)))

    @property
    def batch_size_for_type(self) -> int:
        """Messages per handler call: one for message handlers, the batch size for Lambda ones."""
        return self.batch_size if self.handler_type is HandlerType.LAMBDA else 1


_SECRET_FIELDS = frozenset({"aws_access_key_id", "aws_secret_access_key", "aws_session_token"})


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def _known_variables() -> set[str]:
    return {env_name(name) for name in Settings.model_fields} | {CONFIG_FILE_VARIABLE}


def _did_you_mean(name: str, known: Mapping[str, str]) -> str:
    """`` (did you mean X?)`` for the known name closest to ``name`` (a key of ``known``)."""
    import difflib  # noqa: PLC0415 -- only for a mistake: not in every worker's memory

    guess = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {known[guess[0]]}?)" if guess else ""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One problem line per ``WORKER_*`` variable that no setting reads, with a likely match."""
    known = _known_variables()
    # Compared without the prefix they all share, which would make any two names look alike.
    stems = {name.removeprefix(ENV_PREFIX): name for name in known}
    return [
        f"{name}: unknown setting{_did_you_mean(name.removeprefix(ENV_PREFIX), stems)}"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known and not _SERVICE_LINK.match(name)
    ]


class _Sources:
    """Where each setting was given: flags, the environment, the TOML file.

    For the lines of a configuration error: a bad value is named where it was written (the
    variable, or the file's key), and a setting a command needs is said to be missing in the
    same breath as every other problem, even where the others stopped the settings from loading.
    """

    def __init__(
        self,
        given: Mapping[str, Any],
        environ: Mapping[str, str],
        file_keys: set[str],
        cleared: set[str] | None = None,
    ) -> None:
        unset = {env_name(field) for field in cleared or ()}
        self.given = given
        self.environ = {
            name.upper()
            for name, value in environ.items()
            if value != "" and name.upper() not in unset
        }
        self.file_keys = file_keys - (cleared or set())

    def has(self, field: str) -> bool:
        """Whether any source sets ``field``."""
        return field in self.given or env_name(field) in self.environ or field in self.file_keys

    def only_in_file(self, field: str) -> bool:
        """Whether the TOML file is where ``field`` comes from (flags and variables win)."""
        return field in self.file_keys and not (
            field in self.given or env_name(field) in self.environ
        )


# A setting a command cannot do without: any of the fields, or the problem line.
Requirement = tuple[tuple[str, ...], str]


class _Cleared(Enum):
    """A type of its own for :data:`CLEARED`: no value a flag can take is mistaken for it."""

    CLEARED = "cleared"


# An override that unsets a setting whatever the environment or the file says: a flag that
# names the queue by URL must not meet a WORKER_QUEUE_NAME and be refused as "both".
CLEARED: Final = _Cleared.CLEARED


# Settings that name one thing two ways; a file's one gives way to the environment's other one,
# as every setting of the file gives way to the environment.
_ALTERNATIVES = (("queue_url", "queue_name"), ("topic_arn", "topic_name"))


def _given_way_in_file(
    given: Mapping[str, Any], environ: Mapping[str, str], file_keys: set[str]
) -> dict[str, Any]:
    """The file's settings that an environment variable naming the same thing otherwise unsets
    (a ``queue_name`` in the file, ``WORKER_QUEUE_URL`` in the environment)."""
    unset: dict[str, Any] = {}
    for pair in _ALTERNATIVES:
        for field, other in (pair, pair[::-1]):
            from_environment = environ.get(env_name(field)) and field not in given
            if from_environment and other in file_keys and other not in given:
                unset[other] = CLEARED
    return unset


def _describe(
    error: Mapping[str, Any], config_file: Path | None = None, sources: _Sources | None = None
) -> str:
    location = error.get("loc") or ()
    message = str(error["msg"]).removeprefix("Value error, ")
    if not location:
        return message
    field = str(location[0])
    where = env_name(field) if field in Settings.model_fields else field
    if error["type"] == "extra_forbidden":
        # As for an unknown variable: a likely match, and where the key was found.
        fields = {name: name for name in Settings.model_fields}
        return f"{config_file}: {field}: unknown setting{_did_you_mean(field, fields)}"
    if sources is not None and sources.only_in_file(field):
        where = f"{config_file}: {field}"
    shown = error.get("input")
    secret = field in _SECRET_FIELDS
    got = f" (got {shown!r})" if isinstance(shown, str | int | float | bool) and not secret else ""
    return f"{where}: {message}{got}"


def _read_config_file(path: Path) -> tuple[list[str], set[str]]:
    """The file's problems, and the keys it sets."""
    import tomllib  # noqa: PLC0415 -- only with a file: not in every worker's memory

    if not path.is_file():
        return [f"{CONFIG_FILE_VARIABLE}={path}: no such file"], set()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        return [f"{CONFIG_FILE_VARIABLE}={path}: not valid TOML ({exc})"], set()
    return [], set(document)


def load_settings(
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    required: Sequence[Requirement] = (),
) -> Settings:
    """Read the settings, or raise :class:`ConfigurationError` listing every problem.

    ``overrides``: the flags; ``None`` is a flag not given, :data:`CLEARED` a setting a flag
    unsets. ``required``: settings the command needs; one missing is one more problem, reported
    with the others (bad values, unknown variables) rather than after they are fixed.
    """
    problems = unknown_variables(os.environ)
    if config_file is None and os.environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(os.environ[CONFIG_FILE_VARIABLE])
    settings_cls: type[Settings] = Settings
    file_keys: set[str] = set()
    if config_file is not None:
        file_problems, file_keys = _read_config_file(config_file)
        problems.extend(file_problems)
        if not file_problems:
            config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
            settings_cls = type("FileSettings", (Settings,), {"model_config": config})
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    given |= _given_way_in_file(given, os.environ, file_keys)
    cleared = {key for key, value in given.items() if value is CLEARED}
    given = {key: value for key, value in given.items() if key not in cleared}
    sources = _Sources(given, os.environ, file_keys, cleared)
    # An explicit None is an init argument, which wins over the environment and the file.
    arguments: dict[str, Any] = {**given, **dict.fromkeys(cleared)}
    try:
        settings = settings_cls(**arguments)
    except ValidationError as exc:
        problems.extend(
            _describe(error, config_file, sources) for error in exc.errors(include_url=False)
        )
        problems.extend(
            missing for fields, missing in required if not any(map(sources.has, fields))
        )
        raise ConfigurationError(problems) from None
    problems.extend(
        missing
        for fields, missing in required
        if all(getattr(settings, field) is None for field in fields)
    )
    if problems:
        raise ConfigurationError(problems)
    return settings
