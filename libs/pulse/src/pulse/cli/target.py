"""Which Pulse stack an operator command acts on, and its clients.

Every ``pulse`` command that changes or reads a stack's AWS resources or Redis gets its
settings and clients here, so they all find the same stack the same way:

- the environment names the stack (any of :data:`STACK_VARIABLES` set, as in a service's
  pod or a test): its settings, the standard AWS credential chain;
- otherwise, the stack ``make run`` started, recorded in ``.run/stack.json`` of the working
  directory or one of its parents (:class:`LocalStack`; ignored once its launcher is dead):
  its endpoint, region, prefixes and the emulator's credentials;
- otherwise the standard AWS chain (profile, SSO, instance role) with its region.

Before the first AWS or Redis call the command prints on stderr, once, what it is about to
act on (endpoint or "AWS", account, region, resource prefix; or the Redis server and key
prefix), unless a script set the target explicitly and stderr is no terminal. A missing
credential, region or an unreachable endpoint or Redis is one line saying what to set
(:func:`explain`, called by the ``pulse`` group for every command), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import click

from pulse.errors import ConfigurationError, TopologyMissingError
from pulse.settings import PulseSettings, SettingsT, load_settings

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "STACK_FILE",
    "STACK_VARIABLES",
    "LocalStack",
    "Target",
    "aws",
    "explain",
    "find_local_stack",
    "local_stack",
    "settings",
    "settings_of",
    "sync_redis",
    "target",
]

# Where ``make run`` records the stack it started, relative to its working directory.
STACK_FILE: Final = Path(".run") / "stack.json"
# Variables by which the environment names a stack: with any of them set, no stack file.
STACK_VARIABLES: Final = (
    "AWS_ENDPOINT_URL",
    "PULSE_AWS_ENDPOINT_URL",
    "PULSE_RESOURCE_PREFIX",
    "REDIS_URL",
    "PULSE_REDIS_URL",
    "PULSE_REDIS_PREFIX",
)
_REGION_VARIABLES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION", "PULSE_AWS_REGION")
# The local AWS emulator takes any credentials; these are the ones ``make run`` gives it.
_EMULATOR_KEY: Final = "testing"
_META_KEY: Final = "pulse.target"


@dataclass(frozen=True)
class LocalStack:
    """What ``make run`` (``pulse dev``) writes to ``.run/stack.json`` while it runs."""

    pid: int
    aws_endpoint_url: str
    region: str
    resource_prefix: str
    redis_url: str
    redis_prefix: str
    ingest_url: str  # http://host:port of ingest
    gateway_url: str  # http://host:port of the ws-gateway (the console at /, WebSocket at /ws)
    started_at: str
    # Settings every service of the stack runs with that also govern what an operator
    # command may do (e.g. PULSE_WEBHOOK_ALLOW_HTTP for `pulse webhooks add` of a local
    # receiver), by environment variable name.
    env: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        """Write atomically: a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(path)

    @classmethod
    def read(cls, path: Path) -> LocalStack | None:
        """The stack recorded at ``path``, or None if it is absent or not a stack file."""
        try:
            data = json.loads(path.read_text())
            known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            return cls(**known)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def alive(self) -> bool:
        """Whether the launcher that wrote the file still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: alive
            return True
        return True

    @property
    def gateway_ws_url(self) -> str:
        """The gateway's WebSocket URL."""
        return self.gateway_url.replace("http", "ws", 1).rstrip("/") + "/ws"


def find_local_stack(start: Path | None = None) -> tuple[LocalStack, Path] | None:
    """The live stack recorded in ``.run/stack.json`` of ``start`` (default: the working
    directory) or its nearest parent that has one, with the file's path; stale files (their
    launcher is dead) are skipped."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        path = directory / STACK_FILE
        stack = LocalStack.read(path)
        if stack is not None and stack.alive():
            return stack, path
    return None


def _names_a_stack(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in STACK_VARIABLES)


def local_stack() -> LocalStack | None:
    """The stack ``make run`` started, when the environment names no other (for commands
    that talk to its services: ``pulse tail``, ``pulse load``)."""
    if _names_a_stack(os.environ):
        return None
    found = find_local_stack()
    return found[0] if found is not None else None


@dataclass
class Target:
    """The stack a command acts on: its settings and where they came from."""

    settings: PulseSettings
    local: LocalStack | None = None  # found through its stack file
    local_path: Path | None = None
    named_by_environment: bool = True
    region_known: bool = True
    announced: set[str] = field(default_factory=set)

    def origin(self) -> str | None:
        """The stack file the settings come from, in words; None when not from one."""
        if self.local is None:
            return None
        return f"the local stack of {_shown(self.local_path)} (pid {self.local.pid})"

    def where(self) -> str:
        """Which AWS the commands act on, in words (the start of the announcement)."""
        endpoint = self.settings.aws_endpoint_url
        origin = self.origin()
        if origin is not None:
            return f"{origin}, endpoint {endpoint}"
        return f"endpoint {endpoint}" if endpoint else "AWS"

    def _should_announce(self, kind: str) -> bool:
        """Whether to say what ``kind`` ("aws", "redis") acts on: once, and not when a
        script named the stack in the environment (its output stays its own)."""
        if kind in self.announced:
            return False
        self.announced.add(kind)
        return not self.named_by_environment or _stderr_is_terminal()

    def session(self) -> Any:
        """A boto3 session: the emulator's credentials for a local stack, else the chain."""
        import boto3  # noqa: PLC0415 - boto3 only for the AWS commands

        if self.local is not None:
            return boto3.session.Session(
                aws_access_key_id=_EMULATOR_KEY, aws_secret_access_key=_EMULATOR_KEY
            )
        return boto3.session.Session()

    def aws(self, service: str) -> Any:
        from pulse.clients import aws_client  # noqa: PLC0415 - boto3 only for these commands

        if not self.region_known:
            raise click.ClickException(
                "no AWS region: set AWS_REGION (or a region in your AWS profile), "
                "or start a local stack with `make run`"
            )
        if "aws" not in self.announced:
            # Before the first client: whose account this is. It also proves the credentials
            # and the endpoint, so their failures come here, before any command's own handling.
            account = _account(self)
            if self._should_announce("aws"):
                click.echo(
                    f"pulse: {self.where()}: account {account}, "
                    f"region {self.settings.aws_region}, "
                    f"resource prefix {self.settings.resource_prefix!r}",
                    err=True,
                )
        return aws_client(service, self.settings, session=self.session())

    def sync_redis(self) -> tuple[Any, str]:
        from pulse.clients import blocking_redis_client  # noqa: PLC0415

        if self._should_announce("redis"):
            url = urlsplit(self.settings.redis_url)
            server = url.hostname or url.path  # a host or a socket's path; never a password
            port = f":{url.port}" if url.port else ""
            origin = self.origin()
            where = f"{origin}: " if origin is not None else ""
            click.echo(
                f"pulse: {where}Redis {server}{port} ({self.settings.redis_mode}), "
                f"key prefix {self.settings.redis_prefix!r}",
                err=True,
            )
        return blocking_redis_client(self.settings), self.settings.redis_prefix


def _shown(path: Path | None) -> str:
    if path is None:
        return str(STACK_FILE)
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd().resolve()))
    return str(path)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _account(target: Target) -> str:
    """The AWS account of the target's credentials (STS GetCallerIdentity)."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    from pulse.clients import aws_client  # noqa: PLC0415

    sts = aws_client("sts", target.settings, session=target.session(), max_attempts=2)
    try:
        return str(sts.get_caller_identity()["Account"])
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise click.ClickException(
            f"AWS refused the credentials ({error.get('Code', '?')}: {error.get('Message', '')}); "
            "sign in again (aws sso login) or set AWS_PROFILE"
        ) from None


def _build(environ: Mapping[str, str]) -> Target:
    found = None if _names_a_stack(environ) else find_local_stack()
    overrides: dict[str, Any] = {}
    region_known = True
    if found is not None:
        stack, _ = found
        overrides = {
            "aws_endpoint_url": stack.aws_endpoint_url,
            "aws_region": stack.region,
            "resource_prefix": stack.resource_prefix,
            "redis_url": stack.redis_url,
            "redis_prefix": stack.redis_prefix,
        }
    elif not any(environ.get(name) for name in _REGION_VARIABLES):
        # The standard chain's region (the profile's), as the AWS CLI would take it.
        import boto3  # noqa: PLC0415 - only when no region variable is set

        region = boto3.session.Session().region_name
        if region is not None:
            overrides["aws_region"] = region
        # An emulator takes any region (the settings' default); AWS itself needs one named.
        region_known = region is not None or bool(
            environ.get("AWS_ENDPOINT_URL") or environ.get("PULSE_AWS_ENDPOINT_URL")
        )
    try:
        loaded = load_settings(PulseSettings, **overrides)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    return Target(
        loaded,
        local=found[0] if found else None,
        local_path=found[1] if found else None,
        named_by_environment=_names_a_stack(environ),
        region_known=region_known,
    )


def target() -> Target:
    """The target of the running command, found once per invocation."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return _build(os.environ)
    root = ctx.find_root()
    found = root.meta.get(_META_KEY)
    if not isinstance(found, Target):
        found = root.meta[_META_KEY] = _build(os.environ)
    return found


def settings() -> PulseSettings:
    """The target stack's settings; a bad setting is one line naming it, not a traceback."""
    return target().settings


def settings_of(cls: type[SettingsT]) -> SettingsT:
    """Settings of another kind (``cls``) for the target stack: from the environment, or
    where the command acts on the stack ``make run`` started, from the settings that stack's
    services run with (:attr:`LocalStack.env`); a bad setting is one line naming it."""
    local = target().local
    overrides: dict[str, Any] = {}
    if local is not None:
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        for name in cls.model_fields:
            value = local.env.get(f"{prefix}{name}".upper())
            if value is not None:
                overrides[name] = value
    try:
        return load_settings(cls, **overrides)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def aws(service: str) -> Any:
    """A boto3 client for ``service`` of the target stack."""
    return target().aws(service)


def sync_redis() -> tuple[Any, str]:
    """A blocking Redis client for the target stack, and its key prefix."""
    return target().sync_redis()


def explain(exc: BaseException) -> str | None:
    """One line saying what to set, for the failures an operator fixes in the environment
    (no credentials, no region, an endpoint or Redis that does not answer); None for others.

    Follows the chain of causes, so a failure wrapped in a :class:`~pulse.errors.PulseError`
    is found too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        line = _explain_one(current)
        if line is not None:
            return line
        current = current.__cause__ or current.__context__
    return None


def _explain_one(exc: BaseException) -> str | None:
    if isinstance(exc, TopologyMissingError):
        return str(exc)
    module = type(exc).__module__
    if module.startswith("botocore"):
        return _explain_aws(exc) or _explain_missing(exc)
    if module.startswith("redis"):
        return _explain_redis(exc)
    return None


def _explain_aws(exc: BaseException) -> str | None:
    from botocore import exceptions as aws_errors  # noqa: PLC0415 - only on a failure

    if isinstance(exc, aws_errors.NoCredentialsError | aws_errors.PartialCredentialsError):
        return (
            "no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY), or start a local stack with `make run` in this checkout"
        )
    if isinstance(exc, aws_errors.ProfileNotFound):
        return f"{exc}: set AWS_PROFILE to a profile of ~/.aws/config"
    if isinstance(exc, aws_errors.TokenRetrievalError | aws_errors.SSOError):
        return f"AWS sign-in expired ({exc}): run `aws sso login` or set AWS_PROFILE"
    if isinstance(exc, aws_errors.NoRegionError):
        return "no AWS region: set AWS_REGION (or a region in your AWS profile)"
    if isinstance(exc, aws_errors.EndpointConnectionError):
        endpoint = exc.kwargs.get("endpoint_url", "the AWS endpoint")
        return (
            f"cannot connect to {endpoint}: start the stack (`make run`), "
            "or set AWS_ENDPOINT_URL to a running emulator (unset it for AWS)"
        )
    return None


def _explain_missing(exc: BaseException) -> str | None:
    """A table, index or queue that does not exist: the topology was never applied (or the
    prefix names another one)."""
    from pulse.aws_errors import AwsErrorKind, classify_aws_error  # noqa: PLC0415 - as above

    if classify_aws_error(exc) is not AwsErrorKind.NOT_FOUND:
        return None
    operation = getattr(exc, "operation_name", "") or "the call"
    return (
        f"{operation}: {_aws_message(exc)}: apply the topology (make run does; on "
        "Kubernetes, the chart's topology job or the operator), or set "
        "PULSE_RESOURCE_PREFIX to the prefix of the tables and queues in use"
    )


def _aws_message(exc: BaseException) -> str:
    """The message AWS gave with an error response (what is missing, in its words)."""
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Message") or error.get("Code") or exc)


def _explain_redis(exc: BaseException) -> str | None:
    from redis import exceptions as redis_errors  # noqa: PLC0415 - only on a failure

    if isinstance(exc, redis_errors.AuthenticationError):  # a kind of ConnectionError
        return f"Redis refused the login ({exc}): set the user and password in REDIS_URL"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        detail = str(exc).rstrip(".") or type(exc).__name__
        return (
            f"cannot connect to Redis ({detail}): start the stack (`make run`), "
            "or set REDIS_URL (and PULSE_REDIS_MODE) to a running Redis"
        )
    return None
