"""The EventPipeline CRD as the API server would hold it: a structural schema, closed objects,
its CEL rules evaluated (with cel-python), the example accepted, broken resources and changes
to immutable fields refused, printer columns that point into the schema."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, TypeAlias

import celpy
import jsonschema
from celpy.adapter import json_to_cel

from pulse_dev.k8s_check.render import CRD_CHART, Document
from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulse_dev.k8s_check.repository import Repository

EXAMPLE = "k8s/examples/eventpipeline.yaml"
PRINTER_COLUMNS = ("READY", "QUEUES", "DLQ", "LAG", "AGE")
# openAPIV3Schema keys JSON Schema does not share (or that the API server ignores when it
# validates: defaults, formats, descriptions).
OPENAPI_ONLY = ("nullable", "properties", "items", "default", "format", "description")

Spec: TypeAlias = dict[str, Any]


def structural_problems(node: dict[str, Any], path: str = "$") -> list[str]:
    """Every node typed (Kubernetes requires structural schemas) unless marked otherwise."""
    problems = []
    untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string"
    )
    if "type" not in node and not untyped_ok:
        problems.append(f"CRD schema {path}: no type (not structural)")
    for key, sub in node.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{key}")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """openAPIV3Schema -> JSON Schema with the API server's strict field validation:
    unknown fields fail unless x-kubernetes-preserve-unknown-fields; nullable allows null."""
    out = {
        k: v for k, v in node.items() if not k.startswith("x-kubernetes") and k not in OPENAPI_ONLY
    }
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_jsonschema(node["items"])
    return out


class CrdSchema:
    """One CRD version's schema: JSON Schema validation plus its CEL rules."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = jsonschema.Draft7Validator(to_jsonschema(schema))
        self._cel = celpy.Environment()
        self._programs: dict[str, celpy.Runner] = {}

    def problems(self, obj: Any, old: Any = None) -> list[str]:
        """Why the API server would refuse ``obj`` (an update of ``old``, when given)."""
        found = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in self._validator.iter_errors(obj)
        ]
        return found + self.cel_problems(self.schema, obj, old, "$")

    def cel_problems(self, node: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
        """Every x-kubernetes-validations rule where the value has the node; transition rules
        (oldSelf) only where an old value correlates (objects, map-list items by key)."""
        if value is None:
            return []
        out = [
            p
            for rule in node.get("x-kubernetes-validations", [])
            for p in self._rule(rule, value, old, path)
        ]
        if isinstance(value, dict):
            old_map = old if isinstance(old, dict) else {}
            for key, sub in node.get("properties", {}).items():
                out += self.cel_problems(sub, value.get(key), old_map.get(key), f"{path}.{key}")
        if isinstance(value, list) and "items" in node:
            for i, (item, prev) in enumerate(correlated(node, value, old)):
                out += self.cel_problems(node["items"], item, prev, f"{path}[{i}]")
        return out

    def _rule(self, rule: dict[str, str], value: Any, old: Any, path: str) -> list[str]:
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            return []
        activation = {"self": json_to_cel(value)}
        if transition:
            activation["oldSelf"] = json_to_cel(old)
        try:
            ok = self._program(rule["rule"]).evaluate(activation)
        except Exception as exc:  # a rule that does not compile or evaluate is a bug
            return [f"{path}: rule {rule['rule']!r} failed to evaluate: {exc}"]
        return [] if ok else [f"{path}: {rule['message']}"]

    def _program(self, rule: str) -> celpy.Runner:
        if rule not in self._programs:
            self._programs[rule] = self._cel.program(self._cel.compile(rule))
        return self._programs[rule]


def correlated(node: dict[str, Any], value: list[Any], old: Any) -> list[tuple[Any, Any]]:
    """Each item with its old self: by key in a map list, else none (no transition rules)."""
    keys = node.get("x-kubernetes-list-map-keys")
    if not keys or node.get("x-kubernetes-list-type") != "map":
        return [(item, None) for item in value]
    olds = {tuple(o.get(k) for k in keys): o for o in old or []}
    return [
        (item, olds.get(tuple(item.get(k) for k in keys)) if isinstance(item, dict) else None)
        for item in value
    ]


def _first_queue(spec: Spec) -> dict[str, Any]:
    queue: dict[str, Any] = spec["queues"][0]
    return queue


# Each a change of the example's spec that the API server must refuse.
BROKEN: dict[str, Callable[[Spec], object]] = {
    "visibilityTimeout as a string": lambda s: _first_queue(s).update(visibilityTimeout="30"),
    "an unknown field (tabels)": lambda s: s.update(tabels=[]),
    "an unknown keyType": lambda s: s["tables"][0]["keySchema"][0].update(keyType="SORT"),
    "two HASH keys": lambda s: s["tables"][1]["keySchema"][1].update(keyType="HASH"),
    "timeToLive enabled without attributeName": lambda s: s["tables"][1]["timeToLive"].pop(
        "attributeName"
    ),
    "fifoQueue on a queue whose name lacks .fifo": lambda s: _first_queue(s).update(fifoQueue=True),
    "a FIFO queue subscribed to the topic": lambda s: s["queues"][2].update(
        subscription={"filterPolicy": {}}
    ),
    "deletionPolicy Orphan": lambda s: s.update(deletionPolicy="Orphan"),
    "a DLQ maxReceiveCount of 0": lambda s: _first_queue(s)["deadLetter"].update(maxReceiveCount=0),
    "no topic": lambda s: s.pop("topic"),
}


def changed(example: Document, mutate: Callable[[Spec], object]) -> Document:
    obj = copy.deepcopy(example)
    mutate(obj["spec"])
    return obj


def refusal_problems(schema: CrdSchema, example: Document) -> list[str]:
    """The example accepted; each broken resource and immutable-field change refused; a
    valid update accepted."""
    problems = []
    if found := schema.problems(example):
        problems.append(f"the example is refused: {found}")
    problems += [
        f"not refused: {label}"
        for label, mutate in BROKEN.items()
        if not schema.problems(changed(example, mutate))
    ]
    # transition rules: a table's key and the prefix cannot change; other fields can
    rekeyed = changed(example, lambda s: s["tables"][0]["keySchema"][0].update(attributeName="id"))
    found = schema.problems(rekeyed, example)
    if not found:
        problems.append("not refused: changing a table's keySchema")
    elif not any("keySchema is immutable" in f for f in found):
        problems.append(f"keySchema change refused for the wrong reason: {found}")
    if not schema.problems(changed(example, lambda s: s.update(resourcePrefix="other-")), example):
        problems.append("not refused: changing resourcePrefix")
    valid = copy.deepcopy(example)
    valid["spec"]["queues"][0]["visibilityTimeout"] = 60
    valid["spec"]["tables"].append(
        {"tableName": "extra", "keySchema": [{"attributeName": "id", "keyType": "HASH"}]}
    )
    if found := schema.problems(valid, example):
        problems.append(f"a valid update (visibilityTimeout, a new table) is refused: {found}")
    return problems


def printer_column_problems(version: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    cols = {c["name"].upper(): c for c in version.get("additionalPrinterColumns", [])}
    problems = [f"no printer column {want}" for want in PRINTER_COLUMNS if want not in cols]
    for name, col in cols.items():
        path = col["jsonPath"].split("[")[0].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node: dict[str, Any] | None = schema
        for part in path:
            node = (node or {}).get("properties", {}).get(part)
        if node is None:
            problems.append(f"printer column {name}: {col['jsonPath']} is not in the schema")
    return problems


def crd_problems(crd: Document, example: Document) -> list[str]:
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    problems = structural_problems(schema)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    if example.get("apiVersion") != f"{group}/{version['name']}" or example.get("kind") != kind:
        problems.append("example: apiVersion/kind do not match the CRD")
    problems += refusal_problems(CrdSchema(schema), example)
    problems += printer_column_problems(version, schema)
    if version.get("subresources", {}).get("status") != {}:
        problems.append("no status subresource")
    if crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
        problems.append("the CRD must carry helm.sh/resource-policy: keep")
    return problems


def schema_and_rules(repository: Repository) -> Verdict:
    crd = next(
        d
        for d in repository.renders.documents(CRD_CHART)
        if d["kind"] == "CustomResourceDefinition"
    )
    example = repository.yaml(EXAMPLE)
    problems = crd_problems(crd, example)
    (version,) = crd["spec"]["versions"]
    columns = sorted(c["name"].upper() for c in version.get("additionalPrinterColumns", []))
    return Verdict.of(
        problems,
        f"CRD ok: example valid, {len(BROKEN) + 2} broken resources refused, "
        f"printer columns {columns}",
    )
