"""Least privilege: the restricted pod security every workload runs with, and the IAM
policies in ``k8s/iam/`` granting exactly the AWS calls each service's code makes.

A service's code is its own package and the library code it runs (:data:`SHARED_CODE`):
whole modules, or only some of their functions when the service runs a part of a module
(ingest reads and stamps API keys; creating, listing and revoking them is ``pulse keys``'s
part). Library calls declared with a resource must be granted on that resource, not merely
somewhere in the policy. The policies for people running commands
(:data:`COMMAND_POLICIES`) are held to the commands' calls the same way.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from pulse_dev.k8s_check.repository import Repository

# boto3 method -> IAM action (only the calls Pulse makes; an unknown one is not recognised)
ACTIONS = {
    "put_item": "dynamodb:PutItem",
    "get_item": "dynamodb:GetItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "describe_table": "dynamodb:DescribeTable",
    "create_table": "dynamodb:CreateTable",
    "update_table": "dynamodb:UpdateTable",
    "delete_table": "dynamodb:DeleteTable",
    "describe_time_to_live": "dynamodb:DescribeTimeToLive",
    "update_time_to_live": "dynamodb:UpdateTimeToLive",
    "describe_stream": "dynamodb:DescribeStream",
    "get_shard_iterator": "dynamodb:GetShardIterator",
    "get_records": "dynamodb:GetRecords",
    "publish": "sns:Publish",
    "publish_batch": "sns:Publish",
    "create_topic": "sns:CreateTopic",
    "delete_topic": "sns:DeleteTopic",
    "subscribe": "sns:Subscribe",
    "unsubscribe": "sns:Unsubscribe",
    "list_topics": "sns:ListTopics",
    "list_subscriptions_by_topic": "sns:ListSubscriptionsByTopic",
    "get_subscription_attributes": "sns:GetSubscriptionAttributes",
    "set_subscription_attributes": "sns:SetSubscriptionAttributes",
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "purge_queue": "sqs:PurgeQueue",
    "start_message_move_task": "sqs:StartMessageMoveTask",
    "list_message_move_tasks": "sqs:ListMessageMoveTasks",
    "get_queue_url": "sqs:GetQueueUrl",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "set_queue_attributes": "sqs:SetQueueAttributes",
    "create_queue": "sqs:CreateQueue",
    "delete_queue": "sqs:DeleteQueue",
    "get_parameter": "ssm:GetParameter",
    "get_parameters": "ssm:GetParameters",
    "put_parameter": "ssm:PutParameter",
    "delete_parameter": "ssm:DeleteParameter",
    "get_parameters_by_path": "ssm:GetParametersByPath",
    "get_metric_statistics": "cloudwatch:GetMetricStatistics",
}


@dataclass(frozen=True)
class SharedCode:
    """Library code a service runs beside its own.

    ``path``: a glob of modules. ``functions`` (``Class.method`` or ``function``): only these
    functions' calls count, for a module of which the service runs a part. ``resource``: the
    resource part of the ARN every call found must be granted on (``table/pulse-api-keys``).
    """

    path: str
    functions: tuple[str, ...] = ()
    resource: str | None = None


API_KEYS = "libs/pulse/src/pulse/api_keys.py"
API_KEYS_TABLE = "table/pulse-api-keys"
# A payment's moves (the fraud decision, reviews, the review timeout) and the review queue:
# the update on the table, the query on its index.
PAYMENT_STATES = [
    SharedCode(
        "libs/pulse/src/pulse/payment_states.py",
        ("PaymentTransitions.apply",),
        "table/pulse-payments",
    ),
    SharedCode(
        "libs/pulse/src/pulse/payment_states.py",
        ("PaymentTransitions.review_queue",),
        "table/pulse-payments/index/review-queue",
    ),
]
WEBHOOK_ENDPOINTS = "libs/pulse/src/pulse/webhook_endpoints.py"
WEBHOOK_ENDPOINT_SECRETS = "libs/pulse/src/pulse/webhook_endpoint_secrets.py"
WEBHOOK_DELIVERIES = "libs/pulse/src/pulse/webhook_deliveries.py"
WEBHOOKS_TABLE = "table/pulse-webhooks"
WEBHOOK_SECRETS = "parameter/pulse-webhooks/ep_1/secret"
WEBHOOK_ATTEMPTS_CODE = "libs/pulse/src/pulse/webhook_attempts.py"
ATTEMPTS_TABLE = "table/pulse-webhook-attempts"
# What the notify worker runs of the webhook library: an account's endpoints, an endpoint's
# secrets, and queuing deliveries.
WEBHOOK_READS = [
    SharedCode(WEBHOOK_ENDPOINTS, ("query_account_endpoints",), WEBHOOKS_TABLE),
    SharedCode(WEBHOOK_ENDPOINT_SECRETS, ("read_signing_secrets",), WEBHOOK_SECRETS),
    SharedCode(
        WEBHOOK_DELIVERIES, ("DeliveryQueue._url", "DeliveryQueue.send"), "pulse-webhooks.fifo"
    ),
]
# ingest's /v1/webhook-endpoints: the endpoints (the table, and its index for operators),
# their secrets, test, replay and recovery deliveries, the audit trail's index of an
# account's events, and reading the attempt log.
WEBHOOK_MANAGEMENT = [
    *WEBHOOK_READS,
    SharedCode(
        WEBHOOK_ENDPOINTS,
        (
            "WebhookEndpoints.create",
            "WebhookEndpoints.get",
            "WebhookEndpoints.page",
            "WebhookEndpoints._set",
            "WebhookEndpoints.delete",
        ),
        WEBHOOKS_TABLE,
    ),
    SharedCode(
        WEBHOOK_ENDPOINTS, ("WebhookEndpoints._owner",), f"{WEBHOOKS_TABLE}/index/endpoint-id"
    ),
    SharedCode(
        WEBHOOK_ENDPOINTS,
        ("WebhookEndpoints._put_secret", "WebhookEndpoints._delete_parameter"),
        WEBHOOK_SECRETS,
    ),
    SharedCode(
        WEBHOOK_DELIVERIES, ("_audit_notifications",), "table/pulse-events/index/account-time"
    ),
    # the attempt log as its readers read it: a page of it, and (recovery) every attempt
    # from a time on, by the index by-time; an event's first attempt
    SharedCode(WEBHOOK_ATTEMPTS_CODE, ("AttemptLog.query", "AttemptLog.get"), ATTEMPTS_TABLE),
    SharedCode(
        WEBHOOK_ATTEMPTS_CODE,
        ("AttemptLog.query", "AttemptLog.since"),
        f"{ATTEMPTS_TABLE}/index/by-time",
    ),
]
# The notify worker keeps each attempt's outcome on its endpoint and disables one that keeps
# failing (pulse.webhook_endpoint_health: conditional updates, a consistent read).
WEBHOOK_ENDPOINT_HEALTH = SharedCode(
    "libs/pulse/src/pulse/webhook_endpoint_health.py", resource=WEBHOOKS_TABLE
)
# The notify worker claims and records webhook attempts; reading the log is the readers' part.
WEBHOOK_ATTEMPTS = SharedCode(
    WEBHOOK_ATTEMPTS_CODE,
    tuple(
        f"AttemptLog.{name}"
        for name in ("claim", "renew", "release", "finish", "followed_up", "get")
    ),
    ATTEMPTS_TABLE,
)
SHARED_CODE = {
    "fraud-worker": [SharedCode("libs/pulse/src/pulse/consumer/*.py"), *PAYMENT_STATES],
    "notify-worker": [
        SharedCode("libs/pulse/src/pulse/consumer/*.py"),
        *WEBHOOK_READS,
        WEBHOOK_ATTEMPTS,
        WEBHOOK_ENDPOINT_HEALTH,
    ],
    # its replay queue (stream-replays, failed records redriven) runs on the consumer, whose
    # health probe reads the failure queue and that queue's DLQ
    "stream-processor": [SharedCode("libs/pulse/src/pulse/consumer/*.py")],
    "operator": [SharedCode("libs/pulse/src/pulse/topology_apply.py")],
    # The door of the API (pulse.credentials) reads a key and stamps its last use; the
    # review endpoints decide and list payments in REVIEW; the webhook endpoints' routes
    # manage endpoints, read their attempts and queue tests, replays and recoveries.
    "ingest": [
        SharedCode("libs/pulse/src/pulse/credentials.py"),
        SharedCode(API_KEYS, ("ApiKeyTable.get", "ApiKeyTable.touch"), API_KEYS_TABLE),
        *PAYMENT_STATES,
        *WEBHOOK_MANAGEMENT,
    ],
}
# Policies for the AWS identity of a person running a command (never a pod's role; hence not
# named *-policy.json, which the IRSA commands and checks take for a service's): the file and
# the code the command runs.
COMMAND_POLICIES = {
    "k8s/iam/api-keys-admin.json": (
        "pulse keys",
        [
            SharedCode(
                API_KEYS,
                ("ApiKeyTable.put", "ApiKeyTable.list", "ApiKeyTable.revoke"),
                API_KEYS_TABLE,
            )
        ],
    ),
    "k8s/iam/review-admin.json": ("pulse review", PAYMENT_STATES),
    # the same code as ingest's /v1/webhook-endpoints, run from an operator's terminal
    "k8s/iam/webhooks-admin.json": ("pulse webhooks", WEBHOOK_MANAGEMENT),
    # reads, redrives and purges the dead-letter queues (and releases what it read)
    "k8s/iam/dlq-admin.json": (
        "pulse dlq",
        [
            SharedCode("libs/pulse/src/pulse/dead_letter_sqs.py"),
            SharedCode("libs/pulse/src/pulse/consumer/visibility.py", ("Visibility.release",)),
        ],
    ),
}
# The only actions that may be granted on every resource (they name none).
UNSCOPED_ACTIONS = {"sns:ListTopics", "cloudwatch:GetMetricStatistics"}
# A call (``sqs.send_message(``), a method handed to a thread (``to_thread(sqs.send_message,``)
# or a name in quotes (a paginator's).
CALL = re.compile(
    r"\.(" + "|".join(sorted(ACTIONS, key=len, reverse=True)) + r")\s*[(,)]"
    r"|[\"'](" + "|".join(ACTIONS) + r")[\"']"
)


def pod_restricted(pod: dict[str, Any]) -> bool:
    """The pod runs as non-root with the runtime's default seccomp profile."""
    psc = pod.get("securityContext", {})
    return (
        psc.get("runAsNonRoot") is True
        and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    )


def container_restricted(container: dict[str, Any]) -> bool:
    """No privilege escalation, a read-only root filesystem, every capability dropped."""
    sc = container.get("securityContext", {})
    return (
        sc.get("allowPrivilegeEscalation") is False
        and sc.get("readOnlyRootFilesystem") is True
        and sc.get("capabilities", {}).get("drop") == ["ALL"]
    )


def actions_called(sources: Iterable[str]) -> set[str]:
    """The IAM actions the boto3 calls in these sources need."""
    return {ACTIONS[a or b] for text in sources for a, b in CALL.findall(text)}


def function_sources(text: str, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The source of each named function of a module (``Class.method`` or ``function``),
    and the names it does not define."""
    tree = ast.parse(text)
    found: dict[str, str] = {}
    for node in tree.body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        prefix = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
        for member in members:
            if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[prefix + member.name] = ast.get_source_segment(text, member) or ""
    wanted = list(names)
    return [found[n] for n in wanted if n in found], [n for n in wanted if n not in found]


@dataclass
class Needs:
    """What some code calls in AWS: every action, those bound to a resource, whether it makes
    an AWS client at all, and the declared functions not found (a renamed method must not
    pass unread)."""

    actions: set[str] = field(default_factory=set)
    on_resource: dict[str, set[str]] = field(default_factory=dict)
    makes_clients: bool = False
    problems: list[str] = field(default_factory=list)

    def add_module(self, text: str) -> None:
        self.actions |= actions_called([text])
        self.makes_clients |= "aws_client(" in text

    def add(self, root: Path, shared: SharedCode) -> None:
        files = sorted(root.glob(shared.path))
        if not files:
            self.problems.append(f"{shared.path} matches no file")
        for path in files:
            text = path.read_text()
            self.makes_clients |= "aws_client(" in text
            sources = [text]
            if shared.functions:
                sources, missing = function_sources(text, shared.functions)
                self.problems += [f"{shared.path} defines no {name}" for name in missing]
            called = actions_called(sources)
            self.actions |= called
            if shared.resource is not None:
                self.on_resource.setdefault(shared.resource, set()).update(called)


# Services whose AWS calls are all in these modules: the rest of their code calls Redis's
# publish and subscribe, which a scan by method name would take for SNS's.
AWS_MODULES = {"ws-gateway": ("src/ws_gateway/durable.py", "src/ws_gateway/__main__.py")}


def service_needs(root: Path, svc: str) -> Needs:
    """What the service's own code and the library code it runs call in AWS (nothing, unless
    some of it makes an AWS client)."""
    needs = Needs()
    service = root / "services" / svc
    modules = [service / m for m in AWS_MODULES[svc]] if svc in AWS_MODULES else []
    for path in modules or sorted(service.glob("src/**/*.py")):
        needs.add_module(path.read_text())
    for shared in SHARED_CODE.get(svc, []):
        needs.add(root, shared)
    return needs if needs.makes_clients else Needs(problems=needs.problems)


def granted_on(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement grants ``action`` on ``resource`` (an ARN's resource part,
    matched with IAM's wildcards in the statement's resources)."""
    service = action.partition(":")[0]
    arn = f"arn:aws:{service}:REGION:ACCOUNT_ID:{resource}"
    return any(
        s.get("Effect") == "Allow"
        and action in _as_list(s["Action"])
        and any(fnmatchcase(arn, r) for r in _as_list(s["Resource"]))
        for s in policy["Statement"]
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statement_problems(where: str, statement: dict[str, Any]) -> list[str]:
    """Allow only, exact actions, and every resource one of Pulse's (or ``*`` where an
    action names no resource)."""
    sid = statement.get("Sid")
    actions = _as_list(statement["Action"])
    problems = []
    if statement.get("Effect") != "Allow" or any("*" in a for a in actions):
        problems.append(f"{where}: {sid}: only Allow statements with exact actions")
    for resource in _as_list(statement["Resource"]):
        if resource == "*":
            if not set(actions) <= UNSCOPED_ACTIONS:
                problems.append(f"{where}: {sid}: Resource * for {actions}")
        elif not any(m in resource for m in (":pulse-", ":parameter/pulse/", "/pulse-")):
            problems.append(f"{where}: {sid}: {resource} is not scoped to Pulse's resources")
    return problems


def policy_problems(
    service: str,
    where: str,
    policy: dict[str, Any],
    needed: set[str],
    on_resource: Mapping[str, set[str]] | None = None,
) -> list[str]:
    """One service's policy document against the actions its code needs, and those it needs
    on a given resource."""
    problems = []
    if policy.get("Version") != "2012-10-17":
        problems.append(f"{where}: Version must be 2012-10-17")
    granted: set[str] = set()
    for statement in policy["Statement"]:
        problems += statement_problems(where, statement)
        granted |= set(_as_list(statement["Action"]))
    if missing := needed - granted:
        problems.append(f"{service}: the code calls {sorted(missing)}, not granted by {where}")
    for resource, actions in sorted((on_resource or {}).items()):
        if elsewhere := sorted(a for a in actions if not granted_on(policy, a, resource)):
            problems.append(
                f"{service}: the code calls {elsewhere} on {resource}, not granted there by {where}"
            )
    return problems


def iam_policies_cover_the_code(repository: Repository) -> Verdict:
    root = repository.root
    problems = []
    for svc_dir in sorted(p for p in (root / "services").iterdir() if (p / "src").is_dir()):
        svc = svc_dir.name
        needs = service_needs(root, svc)
        problems += [f"{svc}: {p}" for p in needs.problems]
        where = f"k8s/iam/{svc}-policy.json"
        if not (root / where).exists():
            if called := sorted(needs.actions):
                problems.append(f"{svc}: calls AWS ({called}) but {where} is missing")
            continue
        policy = json.loads(repository.text(where))
        problems += policy_problems(svc, where, policy, needs.actions, needs.on_resource)
    for where, (command, code) in COMMAND_POLICIES.items():
        needs = Needs()
        for shared in code:
            needs.add(root, shared)
        problems += [f"{command}: {p}" for p in needs.problems]
        if not (root / where).exists():
            problems.append(f"{command}: {where} is missing")
            continue
        policy = json.loads(repository.text(where))
        problems += policy_problems(command, where, policy, needs.actions, needs.on_resource)
    return Verdict.of(problems, f"IAM policies ok ({len(COMMAND_POLICIES)} for commands)")
