"""pulse_dev.k8s_check.security: IAM policies against the AWS calls in the code."""

import json
from pathlib import Path
from typing import Any

from pulse_dev.k8s_check.security import (
    COMMAND_POLICIES,
    Needs,
    SharedCode,
    actions_called,
    policy_problems,
    service_needs,
)

CODE = """
async def handle(client):
    await client.receive_message(QueueUrl=url)
    await client.delete_message_batch(QueueUrl=url, Entries=entries)
    await getattr(client, "publish")(TopicArn=arn)
"""


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(actions: list[str], resource: str) -> dict[str, Any]:
    return {"Sid": "S", "Effect": "Allow", "Action": actions, "Resource": [resource]}


QUEUE = "arn:aws:sqs:REGION:ACCOUNT_ID:pulse-fraud"


def test_the_calls_in_the_code_are_found() -> None:
    assert actions_called([CODE]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sns:Publish"}


def test_a_policy_granting_what_the_code_calls_passes() -> None:
    needed = {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
    assert policy_problems("w", "p.json", policy(allow(sorted(needed), QUEUE)), needed) == []


def test_a_missing_action_fails() -> None:
    granted = policy(allow(["sqs:ReceiveMessage"], QUEUE))
    assert policy_problems("w", "p.json", granted, {"sqs:ReceiveMessage", "sqs:DeleteMessage"}) == [
        "w: the code calls ['sqs:DeleteMessage'], not granted by p.json"
    ]


def test_wildcards_and_resources_outside_pulse_fail() -> None:
    found = policy_problems(
        "w",
        "p.json",
        policy(
            allow(["sqs:*"], QUEUE),
            allow(["sqs:SendMessage"], "*"),
            allow(["sqs:SendMessage"], "arn:aws:sqs:REGION:ACCOUNT_ID:billing"),
            {**allow(["sns:ListTopics"], "*"), "Effect": "Deny"},
        ),
        set(),
    )
    assert found == [
        "p.json: S: only Allow statements with exact actions",
        "p.json: S: Resource * for ['sqs:SendMessage']",
        "p.json: S: arn:aws:sqs:REGION:ACCOUNT_ID:billing is not scoped to Pulse's resources",
        "p.json: S: only Allow statements with exact actions",
    ]


ROOT = Path(__file__).resolve().parents[3]
KEYS = "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/pulse-api-keys"
PAYMENTS = "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/pulse-payments"


def test_ingest_needs_what_the_door_calls_on_the_key_table_and_no_more() -> None:
    needs = service_needs(ROOT, "ingest")
    assert needs.problems == []
    assert needs.on_resource == {
        "table/pulse-api-keys": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
        # the review endpoints: a payment's move, the review queue's index
        "table/pulse-payments": {"dynamodb:UpdateItem"},
        "table/pulse-payments/index/review-queue": {"dynamodb:Query"},
        # the webhook endpoints API: the endpoints (an operator lists every account's with a
        # Scan), the index by endpoint id, their secrets, tests, replays and recoveries
        # queued, the audit trail of an account
        "table/pulse-webhooks": {
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "dynamodb:UpdateItem",
        },
        "table/pulse-webhooks/index/endpoint-id": {"dynamodb:Query"},
        "parameter/pulse-webhooks/ep_1/secret": {
            "ssm:DeleteParameter",
            "ssm:GetParameters",
            "ssm:PutParameter",
        },
        "pulse-webhooks.fifo": {"sqs:GetQueueUrl", "sqs:SendMessage"},
        "table/pulse-events/index/account-time": {"dynamodb:Query"},
        # the attempt log: a page of it (by event on the table, else by time), an event's
        # first attempt, and recovery's read of every attempt since a time
        "table/pulse-webhook-attempts": {"dynamodb:GetItem", "dynamodb:Query"},
        "table/pulse-webhook-attempts/index/by-time": {"dynamodb:Query"},
    }
    # creating and listing keys is `pulse keys`' part: it stays out of ingest's role, whose
    # one Scan is of the webhooks table
    policy = json.loads((ROOT / "k8s/iam/ingest-policy.json").read_text())
    scanned = [s["Resource"] for s in policy["Statement"] if "dynamodb:Scan" in s["Action"]]
    assert scanned == [["arn:aws:dynamodb:REGION:ACCOUNT_ID:table/pulse-webhooks"]]


def test_a_policy_granting_getitem_only_elsewhere_fails_for_the_key_table() -> None:
    needs = service_needs(ROOT, "ingest")
    policy = json.loads((ROOT / "k8s/iam/ingest-policy.json").read_text())
    assert policy_problems("ingest", "p.json", policy, needs.actions, needs.on_resource) == []
    for statement in policy["Statement"]:
        if KEYS in statement["Resource"]:
            statement["Action"].remove("dynamodb:GetItem")
    assert any("dynamodb:GetItem" in s["Action"] for s in policy["Statement"])  # on payments
    refused = policy_problems("ingest", "p.json", policy, needs.actions, needs.on_resource)
    want = "ingest: the code calls ['dynamodb:GetItem'] on table/pulse-api-keys, not granted"
    assert refused == [f"{want} there by p.json"]


def test_a_wildcard_resource_grants_the_table_it_matches() -> None:
    on = {"table/pulse-api-keys": {"dynamodb:GetItem"}}
    wide = policy(allow(["dynamodb:GetItem"], "arn:aws:dynamodb:REGION:ACCOUNT_ID:table/pulse-*"))
    assert policy_problems("w", "p.json", wide, {"dynamodb:GetItem"}, on) == []
    other = policy(allow(["dynamodb:GetItem"], PAYMENTS))
    assert policy_problems("w", "p.json", other, {"dynamodb:GetItem"}, on) != []


def test_only_the_named_functions_of_a_module_count(tmp_path: Path) -> None:
    module = tmp_path / "keys.py"
    module.write_text(
        "class Table:\n"
        "    def get(self):\n        return self._ddb.get_item(Key=k)\n"
        "    def list(self):\n        return self._ddb.get_paginator('scan')\n"
    )
    needs = Needs()
    needs.add(tmp_path, SharedCode("keys.py", ("Table.get", "Table.gone"), "table/pulse-x"))
    assert needs.actions == {"dynamodb:GetItem"}
    assert needs.on_resource == {"table/pulse-x": {"dynamodb:GetItem"}}
    assert needs.problems == ["keys.py defines no Table.gone"]


def test_the_key_commands_policy_covers_create_list_and_revoke() -> None:
    needs = Needs()
    for shared in COMMAND_POLICIES["k8s/iam/api-keys-admin.json"][1]:
        needs.add(ROOT, shared)
    assert needs.on_resource == {
        "table/pulse-api-keys": {"dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"}
    }
    admin = json.loads((ROOT / "k8s/iam/api-keys-admin.json").read_text())
    assert policy_problems("keys", "a.json", admin, needs.actions, needs.on_resource) == []


def test_the_review_commands_policy_covers_deciding_and_listing_and_no_more() -> None:
    needs = Needs()
    for shared in COMMAND_POLICIES["k8s/iam/review-admin.json"][1]:
        needs.add(ROOT, shared)
    assert needs.on_resource == {
        "table/pulse-payments": {"dynamodb:UpdateItem"},
        "table/pulse-payments/index/review-queue": {"dynamodb:Query"},
    }
    admin = json.loads((ROOT / "k8s/iam/review-admin.json").read_text())
    assert policy_problems("review", "r.json", admin, needs.actions, needs.on_resource) == []
    granted = {a for s in admin["Statement"] for a in s["Action"]}
    assert granted == {"dynamodb:UpdateItem", "dynamodb:Query"}


def test_the_webhook_commands_policy_is_what_the_endpoints_api_runs_and_no_more() -> None:
    needs = Needs()
    for shared in COMMAND_POLICIES["k8s/iam/webhooks-admin.json"][1]:
        needs.add(ROOT, shared)
    assert needs.problems == []
    assert needs.on_resource["table/pulse-webhooks"] >= {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    assert "sqs:SendMessage" in needs.on_resource["pulse-webhooks.fifo"]
    admin = json.loads((ROOT / "k8s/iam/webhooks-admin.json").read_text())
    assert policy_problems("webhooks", "w.json", admin, needs.actions, needs.on_resource) == []
    granted = {a for s in admin["Statement"] for a in s["Action"]}
    assert granted == needs.actions
    # nothing of the payments: the command manages endpoints, it does not touch money
    assert not any("pulse-payments" in r for s in admin["Statement"] for r in s["Resource"])


def test_the_dead_letter_commands_policy_covers_read_redrive_and_purge() -> None:
    needs = Needs()
    for shared in COMMAND_POLICIES["k8s/iam/dlq-admin.json"][1]:
        needs.add(ROOT, shared)
    assert needs.problems == []
    assert needs.actions >= {
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:StartMessageMoveTask",
        "sqs:ListMessageMoveTasks",
        "sqs:PurgeQueue",
    }
    admin = json.loads((ROOT / "k8s/iam/dlq-admin.json").read_text())
    assert policy_problems("dlq", "d.json", admin, needs.actions) == []


def test_a_method_handed_to_a_thread_counts_as_a_call() -> None:
    source = "await asyncio.to_thread(self._sqs.send_message, QueueUrl=url)\n"
    assert actions_called([source]) == {"sqs:SendMessage"}
    assert actions_called(["self._sqs.send_message_batch(QueueUrl=u)"]) == {"sqs:SendMessage"}
    assert actions_called(["self.send_messages_later()"]) == set()
