"""The operator as it runs in a pod: kopf, wired by ``configure`` and scoped by ``kopf_scope``,
against an in-process Kubernetes API server (:class:`ApiServer`, below) and the real AWS
emulator.

The API server answers as a namespaced Role lets it: the watched namespace's EventPipelines,
Events and ConfigMaps; cluster-wide lists (namespaces, CRDs) are refused with 403 as RBAC
would, and every request is recorded, so a test can say what the operator never asked.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import gc
import itertools
import json
import logging
import pathlib
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf
import pytest
import yaml
from aiohttp import web

from pulse.clients import aws_client
from pulse_dev.testing import eventually, serving
from pulse_operator.handlers import configure, kopf_scope
from pulse_operator.kube import InClusterConfigMaps
from pulse_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from pulse.settings import PulseSettings

EXAMPLE = pathlib.Path(__file__).parents[3] / "k8s" / "examples" / "eventpipeline.yaml"
NAMESPACE = "pulse-test"
GROUP_VERSION = "pulse.dev/v1alpha1"
# What OwnerReferencesPermissionEnforcement answers a writer that may not update the owner's
# finalizers (the message of a real API server's 403).
OWNER_REFUSAL = (
    'configmaps "refused-outputs" is forbidden: cannot set blockOwnerDeletion if an '
    "ownerReference refers to a resource you can't set finalizers on: , <nil>"
)

RUNNING_LOG = "kopf._core.reactor.running"

Key = tuple[str, str, str]  # (plural, namespace, name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any] | None:
    """RFC 6902 JSON patch (test, add, remove, replace), as ``application/json-patch+json``;
    None when a ``test`` fails (the API server's 422)."""
    doc = copy.deepcopy(target)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if op["op"] == "test":
            found = node[int(last)] if isinstance(node, list) else node.get(last)
            if found != op["value"]:
                return None
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, op["value"])
            else:
                node[index] = op["value"]
        else:
            node[last] = op["value"]
    return doc


def resource_list(group_version: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "APIResourceList", "groupVersion": group_version, "resources": list(resources)}


def api_resource(
    name: str, kind: str, *, namespaced: bool = True, verbs: tuple[str, ...] = ("get", "list")
) -> dict[str, Any]:
    return {
        "name": name,
        "singularName": "" if "/" in name else kind.lower(),
        "namespaced": namespaced,
        "kind": kind,
        "verbs": list(verbs),
    }


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/api/v1": resource_list(
        "v1",
        api_resource("namespaces", "Namespace", namespaced=False, verbs=("get", "list", "watch")),
        api_resource("events", "Event", verbs=("create", "get", "list")),
        api_resource("configmaps", "ConfigMap", verbs=("create", "get", "patch")),
    ),
    "/apis": {
        "kind": "APIGroupList",
        "groups": [
            {
                "name": name,
                "versions": [{"groupVersion": f"{name}/{version}", "version": version}],
                "preferredVersion": {"groupVersion": f"{name}/{version}", "version": version},
            }
            for name, version in (("apiextensions.k8s.io", "v1"), ("pulse.dev", "v1alpha1"))
        ],
    },
    "/apis/apiextensions.k8s.io/v1": resource_list(
        "apiextensions.k8s.io/v1",
        api_resource("customresourcedefinitions", "CustomResourceDefinition", namespaced=False),
    ),
    f"/apis/{GROUP_VERSION}": resource_list(
        GROUP_VERSION,
        api_resource(
            "eventpipelines",
            "EventPipeline",
            verbs=("delete", "get", "list", "patch", "update", "watch"),
        ),
        api_resource("eventpipelines/status", "EventPipeline", verbs=("get", "patch")),
    ),
    "/version": {"major": "1", "minor": "34", "gitVersion": "v1.34.0"},
}


@dataclass
class Watch:
    namespace: str
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


@dataclass
class ApiServer:
    """EventPipelines (with the status subresource, finalizers and watches), Events and
    ConfigMaps in one namespace; discovery as a cluster serving the CRD."""

    refuse_configmaps: set[str] = field(default_factory=set)
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    history: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)
    closing: bool = False
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    # -- what tests do, as kubectl would
    def apply_pipeline(self, name: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "EventPipeline",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": spec,
        }
        self._store(("eventpipelines", NAMESPACE, name), body, "ADDED")

    def delete_pipeline(self, name: str) -> None:
        key = ("eventpipelines", NAMESPACE, name)
        body = copy.deepcopy(self.objects[key])
        if body["metadata"].get("finalizers"):
            body["metadata"]["deletionTimestamp"] = dt.datetime.now(dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            self._store(key, body, "MODIFIED")
        else:
            self._remove(key)

    def pipeline(self, name: str) -> dict[str, Any] | None:
        return self.objects.get(("eventpipelines", NAMESPACE, name))

    def ready(self, name: str) -> dict[str, Any] | None:
        conditions = ((self.pipeline(name) or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"), None)

    def events_about(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["involvedObject"]["name"] == name]

    def asked(self, path: str) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[1] == path]

    # -- storage and watch events
    def _store(self, key: Key, body: dict[str, Any], kind: str) -> dict[str, Any]:
        version = next(self._versions)
        body["metadata"]["resourceVersion"] = str(version)
        self.objects[key] = body
        self._notify(version, kind, body)
        return body

    def _remove(self, key: Key) -> None:
        body = self.objects.pop(key)
        version = next(self._versions)
        body["metadata"]["resourceVersion"] = str(version)
        self._notify(version, "DELETED", body)

    def _notify(self, version: int, kind: str, body: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(body)}
        self.history.append((version, body["metadata"]["namespace"], event))
        for watch in self.watches:
            if watch.namespace == body["metadata"]["namespace"]:
                watch.queue.put_nowait(event)

    # -- the HTTP API
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        self.requests.append((request.method, path, dict(request.query)))
        if request.method == "GET" and path in DISCOVERY:
            return web.json_response(DISCOVERY[path])
        parts = path.split("/")
        # /apis/pulse.dev/v1alpha1/namespaces/<ns>/eventpipelines[/<name>[/status]]
        if path.startswith(f"/apis/{GROUP_VERSION}/namespaces/") and parts[6] == "eventpipelines":
            return await self._pipelines(request, parts[5], parts[7:])
        if path.startswith("/api/v1/namespaces/") and len(parts) >= 6:
            namespace, plural = parts[4], parts[5]
            if plural == "events" and request.method == "POST":
                event = await request.json()
                self.events.append(event)
                return web.json_response(event, status=201)
            if plural == "configmaps" and request.method == "PATCH":
                return await self._configmap(request, namespace, parts[6])
        # anything else (cluster-wide lists and watches above all) is beyond a Role
        return self._status(403, f"{request.method} {path} is forbidden: beyond the Role")

    @staticmethod
    def _status(code: int, message: str) -> web.Response:
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message},
            status=code,
        )

    async def _configmap(self, request: web.Request, namespace: str, name: str) -> web.Response:
        body = await request.json()
        if name in self.refuse_configmaps:
            return self._status(403, OWNER_REFUSAL)
        self.objects["configmaps", namespace, name] = body
        return web.json_response(body)

    async def _pipelines(
        self, request: web.Request, namespace: str, rest: list[str]
    ) -> web.StreamResponse:
        if not rest and request.method == "GET":
            if request.query.get("watch") in {"true", "1"}:
                return await self._watch(request, namespace)
            return web.json_response(self._list(namespace))
        key = ("eventpipelines", namespace, rest[0]) if rest else None
        if key is None or key not in self.objects:
            return self._status(404, "not found")
        if request.method != "PATCH":
            return self._status(405, f"{request.method} not served here")
        return await self._patch(request, key, status=rest[1:] == ["status"])

    def _list(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": GROUP_VERSION,
            "kind": "EventPipelineList",
            "metadata": {"resourceVersion": str(self.history[-1][0] if self.history else 0)},
            "items": [
                copy.deepcopy(body)
                for (plural, ns, _), body in self.objects.items()
                if plural == "eventpipelines" and ns == namespace
            ],
        }

    async def _patch(self, request: web.Request, key: Key, *, status: bool) -> web.Response:
        patch = await request.json()
        stored = self.objects[key]
        if request.content_type == "application/json-patch+json":
            patched = json_patch(stored, patch)
            if patched is None:
                return self._status(422, "the object has been modified")
        elif request.content_type == "application/merge-patch+json":
            patched = merge_patch(stored, patch)
        else:
            return self._status(415, f"{request.content_type} not served here")
        # the status subresource changes only status; the object itself, all but status
        body = copy.deepcopy(stored)
        if status:
            body["status"] = patched.get("status") or {}
        else:
            body = {k: v for k, v in patched.items() if k != "status"}
            if "status" in stored:
                body["status"] = stored["status"]
        if body["metadata"].get("deletionTimestamp") and not body["metadata"].get("finalizers"):
            self._remove(key)
            return web.json_response(body)
        return web.json_response(self._store(key, body, "MODIFIED"))

    async def _watch(self, request: web.Request, namespace: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        watch = Watch(namespace)
        for version, ns, event in self.history:
            if version > since and ns == namespace:
                watch.queue.put_nowait(event)
        self.watches.append(watch)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while not self.closing and request.transport and not request.transport.is_closing():
                try:
                    event = await asyncio.wait_for(watch.queue.get(), timeout=0.2)
                except TimeoutError:
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
        except ConnectionResetError:
            pass
        finally:
            self.watches.remove(watch)
        return response


def pipeline_spec(prefix: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    spec["resourcePrefix"] = prefix
    return spec


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiServer, str]]:
    server = ApiServer()
    async with serving(server.app()) as url:
        yield server, url
        server.closing = True


@dataclass
class RunningOperator:
    settings: kopf.OperatorSettings
    stop: threading.Event
    thread: threading.Thread


@pytest.fixture
def registry() -> Iterator[kopf.OperatorRegistry]:
    previous = kopf.get_default_registry()
    fresh = kopf.OperatorRegistry()
    kopf.set_default_registry(fresh)
    yield fresh
    kopf.set_default_registry(previous)


@pytest.fixture
async def operator(
    api: tuple[ApiServer, str],
    registry: kopf.OperatorRegistry,
    stack_settings: PulseSettings,
    tmp_path: pathlib.Path,
) -> AsyncIterator[RunningOperator]:
    """``python -m pulse_operator`` watching one namespace, as the chart's default values run
    it, in a thread of its own (kopf owns its event loop); stopped after the test."""
    _, url = api
    token = tmp_path / "token"
    token.write_text("service-account-token")
    settings = OperatorSettings(watch_namespace=NAMESPACE, status_interval_seconds=1)
    configure(settings, InClusterConfigMaps(url, token))

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, scheme="Bearer", token="service-account-token")

    kopf_settings = kopf.OperatorSettings()
    stop = threading.Event()

    def run() -> None:
        asyncio.run(
            kopf.operator(
                registry=registry,
                settings=kopf_settings,
                standalone=True,
                stop_flag=stop,
                **kopf_scope(settings),
            )
        )

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    levels = {name: logging.getLogger(name).level for name in ("kopf.objects", RUNNING_LOG)}
    # as python -m pulse_operator does (keep_events_at_info): Events come from kopf's log
    logging.getLogger("kopf.objects").setLevel(logging.INFO)
    # kopf says once that it runs outside the main thread (so without signal handlers)
    logging.getLogger(RUNNING_LOG).setLevel(logging.ERROR)
    thread.start()
    yield RunningOperator(kopf_settings, stop, thread)
    stop.set()
    await asyncio.to_thread(thread.join, 30)
    # A timer that patches while kopf stops can open an API session after kopf closed its
    # vault; with kopf's loop gone nothing can close it any more. Collect it here, rather
    # than as an "unclosed client session" in whichever later test the collector runs in.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    assert not thread.is_alive(), "kopf did not stop"


async def test_watching_one_namespace_scans_nothing_and_posts_events(
    api: tuple[ApiServer, str],
    operator: RunningOperator,
    stack_settings: PulseSettings,
    stack_prefix: str,
) -> None:
    """A pipeline is reconciled into AWS and its outcome, the AWS changes, the Kubernetes
    refusal of another and a timer's finding are posted as Events; the operator never asks
    for what a namespaced Role does not grant (namespaces, CRDs), and deleting a pipeline runs
    its finalizer."""
    server, _ = api
    server.refuse_configmaps.add("refused-outputs")
    server.apply_pipeline("pulse", pipeline_spec(stack_prefix))
    refused_spec = {**pipeline_spec(f"{stack_prefix}r-"), "outputsConfigMap": "refused-outputs"}
    server.apply_pipeline("refused", refused_spec)

    ready = await eventually(
        lambda: (c := server.ready("pulse")) and c["status"] == "True" and c, timeout=60
    )
    assert ready["reason"] == "Reconciled"
    refused = await eventually(
        lambda: (c := server.ready("refused")) and c["reason"] == "KubernetesRejected" and c,
        timeout=60,
    )
    assert refused["status"] == "False"
    assert "blockOwnerDeletion" in refused["message"]
    assert ("configmaps", NAMESPACE, "pulse-outputs") in server.objects
    sqs = aws_client("sqs", stack_settings)
    assert sqs.get_queue_url(QueueName=f"{stack_prefix}fraud")["QueueUrl"]

    # Events: Pulse's (the AWS changes; the refusal, with its own reason) and kopf's
    reconciled = await eventually(
        lambda: [e for e in server.events_about("pulse") if e["reason"] == "Reconciled"]
    )
    assert reconciled[0]["type"] == "Normal"
    assert f"created queue {stack_prefix}fraud" in reconciled[0]["message"]
    assert reconciled[0]["involvedObject"]["kind"] == "EventPipeline"
    assert reconciled[0]["source"]["component"] == "pulse-operator"
    rejected = await eventually(
        lambda: [e for e in server.events_about("refused") if e["reason"] == "KubernetesRejected"]
    )
    assert rejected[0]["type"] == "Warning"
    assert "write outputs ConfigMap" in rejected[0]["message"]
    assert await eventually(
        lambda: [e for e in server.events_about("pulse") if "succeeded" in e["message"]]
    ), "kopf's own handler outcomes are posted too (settings.posting.loggers)"
    assert not [e for e in server.events_about("refused") if e["reason"] == "AWSRejected"]

    # scanning is off: no namespace list or watch, no CRD watch - none of it retried
    assert server.asked("/api/v1/namespaces") == []
    assert server.asked("/apis/apiextensions.k8s.io/v1/customresourcedefinitions") == []
    assert operator.settings.scanning.disabled
    assert {p for _, p, _ in server.requests if p.startswith("/apis/pulse.dev")} <= {
        f"/apis/{GROUP_VERSION}",
        *(
            f"/apis/{GROUP_VERSION}/namespaces/{NAMESPACE}/eventpipelines{tail}"
            for tail in ("", "/pulse", "/pulse/status", "/refused", "/refused/status")
        ),
    }

    # a timer's refusal is posted too: a queue deleted behind the operator's back
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{stack_prefix}notify")["QueueUrl"])
    degraded = await eventually(
        lambda: [e for e in server.events_about("pulse") if e["reason"] == "Degraded"]
    )
    assert degraded[0]["type"] == "Warning"
    assert degraded[0]["message"].startswith(f"measure queues: queue {stack_prefix}notify: ")

    # deletion runs the finalizer (Retain: the queues stay) and says so
    server.delete_pipeline("pulse")
    await eventually(lambda: server.pipeline("pulse") is None, timeout=30)
    retained = [e for e in server.events_about("pulse") if e["reason"] == "Retained"]
    assert retained
    assert retained[0]["type"] == "Normal"
    assert sqs.get_queue_url(QueueName=f"{stack_prefix}fraud")["QueueUrl"]
