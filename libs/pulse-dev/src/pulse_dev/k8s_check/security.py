"""Least privilege: the restricted pod security every workload runs with, and the IAM
policies in ``k8s/iam/`` granting exactly the AWS calls each service's code makes."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable

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
    "get_queue_url": "sqs:GetQueueUrl",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "set_queue_attributes": "sqs:SetQueueAttributes",
    "create_queue": "sqs:CreateQueue",
    "delete_queue": "sqs:DeleteQueue",
    "get_parameter": "ssm:GetParameter",
    "get_parameters_by_path": "ssm:GetParametersByPath",
    "get_metric_statistics": "cloudwatch:GetMetricStatistics",
}
# Library code a service runs, beside its own (glob patterns).
SHARED_CODE = {
    "fraud-worker": ["libs/pulse/src/pulse/consumer/*.py"],
    "notify-worker": ["libs/pulse/src/pulse/consumer/*.py"],
    "operator": ["libs/pulse/src/pulse/topology.py"],
}
# The only actions that may be granted on every resource (they name none).
UNSCOPED_ACTIONS = {"sns:ListTopics", "cloudwatch:GetMetricStatistics"}
CALL = re.compile(
    r"\.(" + "|".join(sorted(ACTIONS, key=len, reverse=True)) + r")\("
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
    service: str, where: str, policy: dict[str, Any], needed: set[str]
) -> list[str]:
    """One service's policy document against the actions its code needs."""
    problems = []
    if policy.get("Version") != "2012-10-17":
        problems.append(f"{where}: Version must be 2012-10-17")
    granted: set[str] = set()
    for statement in policy["Statement"]:
        problems += statement_problems(where, statement)
        granted |= set(_as_list(statement["Action"]))
    if missing := needed - granted:
        problems.append(f"{service}: the code calls {sorted(missing)}, not granted by {where}")
    return problems


def iam_policies_cover_the_code(repository: Repository) -> Verdict:
    root = repository.root
    problems = []
    for svc_dir in sorted(p for p in (root / "services").iterdir() if (p / "src").is_dir()):
        svc = svc_dir.name
        shared = [f for pattern in SHARED_CODE.get(svc, []) for f in sorted(root.glob(pattern))]
        files = [*svc_dir.glob("src/**/*.py"), *shared]
        sources = [f.read_text() for f in files]
        needed = actions_called(sources) if any("aws_client(" in s for s in sources) else set()
        where = f"k8s/iam/{svc}-policy.json"
        if not (root / where).exists():
            if needed:
                problems.append(f"{svc}: calls AWS ({sorted(needed)}) but {where} is missing")
            continue
        problems += policy_problems(svc, where, json.loads(repository.text(where)), needed)
    return Verdict.of(problems, "IAM policies ok")
