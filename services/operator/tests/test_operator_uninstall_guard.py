"""The chart's pre-delete hook: refuse to uninstall the operator while EventPipelines (and
so its finalizers) exist, or when that cannot be known."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from pulse_dev.testing import serving
from pulse_operator.kube import KubeApi
from pulse_operator.uninstall_guard import check

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class ApiServer:
    """Answers every request with ``status`` and ``body``; records the paths asked."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.status = 200
        self.body: dict[str, Any] = {"kind": "EventPipelineList", "items": []}

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, KubeApi]]:
    server = ApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    token = tmp_path / "token"
    token.write_text("t")
    async with serving(app) as url:
        yield server, KubeApi(url, token)


def pipelines(*names: str) -> dict[str, Any]:
    return {
        "kind": "EventPipelineList",
        "items": [{"metadata": {"name": n, "namespace": "pulse"}} for n in names],
    }


async def test_pipelines_in_the_watched_namespace_refuse_the_uninstall(
    api: tuple[ApiServer, KubeApi],
) -> None:
    server, kube = api
    server.body = pipelines("pulse", "audit")
    code, message = await check(kube, release="pulse-operator", namespace="ops", watched="pulse")
    assert code == 1
    assert server.paths == ["/apis/pulse.dev/v1alpha1/namespaces/pulse/eventpipelines"]
    assert "2 EventPipeline(s) in namespace pulse: pulse/audit, pulse/pulse" in message
    assert "pulse.dev/finalizer" in message
    assert "kubectl delete eventpipelines --all -n pulse" in message
    assert "helm uninstall pulse-operator -n ops --no-hooks" in message
    assert "uninstallGuard.enabled=false" in message


async def test_cluster_wide_it_looks_in_every_namespace(api: tuple[ApiServer, KubeApi]) -> None:
    server, kube = api
    server.body = pipelines("pulse")
    code, message = await check(kube, release="op", namespace="ops", watched="")
    assert code == 1
    assert server.paths == ["/apis/pulse.dev/v1alpha1/eventpipelines"]
    assert "kubectl delete eventpipelines --all --all-namespaces" in message


@pytest.mark.parametrize(
    ("status", "code", "says"),
    [
        (200, 0, "no EventPipeline in namespace pulse"),
        (404, 0, "no EventPipeline CRD"),  # nothing can hold the finalizer
        (403, 1, "cannot tell whether EventPipelines exist"),
        (503, 1, "cannot tell whether EventPipelines exist"),
    ],
)
async def test_none_or_no_crd_allows_it_and_not_knowing_refuses_it(
    api: tuple[ApiServer, KubeApi], status: int, code: int, says: str
) -> None:
    server, kube = api
    server.status = status
    if status != 200:
        server.body = {"kind": "Status", "message": "refused"}
    found, message = await check(kube, release="op", namespace="ops", watched="pulse")
    assert (found, says in message) == (code, True)


async def test_without_a_service_account_token_it_refuses(tmp_path: Path) -> None:
    kube = KubeApi("http://127.0.0.1:9", tmp_path / "missing-token")
    code, message = await check(kube, release="op", namespace="ops", watched="pulse")
    assert code == 1
    assert "--no-hooks" in message
