"""pulse_dev.k8s_check.crd: the EventPipeline CRD as the API server would hold it."""

import copy
from typing import Any

import pytest
import yaml

from pulse_dev.k8s_check.crd import CrdSchema, crd_problems, structural_problems
from pulse_dev.k8s_check.render import CRD_CHART, Document
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]


@pytest.fixture
def crd(k8s_repository: Repository) -> Document:
    docs = k8s_repository.renders.documents(CRD_CHART)
    return copy.deepcopy(next(d for d in docs if d["kind"] == "CustomResourceDefinition"))


@pytest.fixture
def example(k8s_repository: Repository) -> Document:
    loaded: Document = yaml.safe_load(k8s_repository.text("k8s/examples/eventpipeline.yaml"))
    return loaded


def spec_schema(crd: Document) -> dict[str, Any]:
    found: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    return found


def test_the_crd_and_its_example_pass(crd: Document, example: Document) -> None:
    assert crd_problems(crd, example) == []


def test_a_key_schema_without_its_immutability_rule_fails(crd: Document, example: Document) -> None:
    key_schema = spec_schema(crd)["properties"]["tables"]["items"]["properties"]["keySchema"]
    key_schema["x-kubernetes-validations"] = [
        r for r in key_schema["x-kubernetes-validations"] if "oldSelf" not in r["rule"]
    ]
    assert crd_problems(crd, example) == ["not refused: changing a table's keySchema"]


def test_an_untyped_field_a_missing_column_and_no_status_fail(
    crd: Document, example: Document
) -> None:
    del spec_schema(crd)["properties"]["deletionPolicy"]["type"]
    version = crd["spec"]["versions"][0]
    version["additionalPrinterColumns"] = [
        c for c in version["additionalPrinterColumns"] if c["name"].upper() != "LAG"
    ]
    del version["subresources"]
    problems = crd_problems(crd, example)
    assert "CRD schema $.spec.deletionPolicy: no type (not structural)" in problems
    assert "no printer column LAG" in problems
    assert "no status subresource" in problems


def test_an_example_the_schema_refuses_fails(crd: Document, example: Document) -> None:
    example["spec"]["queues"][0]["visibilityTimeout"] = "thirty"
    (problem,) = crd_problems(crd, example)
    assert problem.startswith("the example is refused: ")
    assert "spec.queues.0.visibilityTimeout: 'thirty' is not of type 'integer'" in problem


def test_cel_rules_are_evaluated_and_transition_rules_need_an_old_value() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "name is immutable"},
                    {"rule": "self.startsWith('pulse-')", "message": "name starts with pulse-"},
                ],
            }
        },
    }
    crd = CrdSchema(schema)
    assert crd.problems({"name": "pulse-a"}) == []
    assert crd.problems({"name": "other"}) == ["$.name: name starts with pulse-"]
    assert crd.problems({"name": "pulse-b"}, {"name": "pulse-a"}) == ["$.name: name is immutable"]
    assert crd.problems({"name": "pulse-a", "extra": 1}) == [
        ": Additional properties are not allowed ('extra' was unexpected)"
    ]
    assert structural_problems(schema) == []
