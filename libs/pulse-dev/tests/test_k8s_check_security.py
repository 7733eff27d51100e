"""pulse_dev.k8s_check.security: IAM policies against the AWS calls in the code."""

from typing import Any

from pulse_dev.k8s_check.security import actions_called, policy_problems

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
