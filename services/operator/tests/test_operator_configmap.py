"""The outputs ConfigMap goes to the API server as one idempotent server-side apply."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from pulse.errors import PermanentError, RetryableError
from pulse_dev.testing import serving
from pulse_operator.kube import InClusterConfigMaps, KubernetesRejectedError, config_map_body

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class ApiServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.message = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": json.loads(await request.read()),
            }
        )
        return web.json_response({"kind": "Status", "message": self.message}, status=self.status)


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiServer, str]]:
    server = ApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    async with serving(app) as url:
        yield server, url


async def test_apply_is_a_server_side_apply_patch(
    api: tuple[ApiServer, str], tmp_path: Path
) -> None:
    server, url = api
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    body = config_map_body(
        name="p-outputs",
        namespace="pulse",
        data={"B": "2", "A": "1"},
        owner={
            "apiVersion": "pulse.dev/v1alpha1",
            "kind": "EventPipeline",
            "name": "p",
            "uid": "u",
        },
    )
    await InClusterConfigMaps(url, token).apply(body)
    (req,) = server.requests
    assert (req["method"], req["path"]) == (
        "PATCH",
        "/api/v1/namespaces/pulse/configmaps/p-outputs",
    )
    assert req["query"] == {"fieldManager": "pulse-operator", "force": "true"}
    assert req["headers"]["Content-Type"] == "application/apply-patch+yaml"
    assert req["headers"]["Authorization"] == "Bearer sa-token"
    assert req["body"]["data"] == {"A": "1", "B": "2"}
    assert req["body"]["metadata"]["ownerReferences"][0]["controller"] is True


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, RetryableError),
        (429, RetryableError),
        (403, KubernetesRejectedError),
        (422, KubernetesRejectedError),
    ],
)
async def test_api_errors_are_classified(
    api: tuple[ApiServer, str], tmp_path: Path, status: int, error: type[Exception]
) -> None:
    server, url = api
    server.status = status
    token = tmp_path / "token"
    token.write_text("t")
    body = config_map_body(name="c", namespace="n", data={}, owner=None)
    with pytest.raises(error):
        await InClusterConfigMaps(url, token).apply(body)


async def test_a_refusal_says_what_the_api_server_said(
    api: tuple[ApiServer, str], tmp_path: Path
) -> None:
    """OwnerReferencesPermissionEnforcement's 403: the operator's condition quotes it."""
    server, url = api
    server.status = 403
    server.message = "cannot set blockOwnerDeletion if an ownerReference refers to a resource"
    token = tmp_path / "token"
    token.write_text("t")
    body = config_map_body(name="c", namespace="n", data={}, owner=None)
    with pytest.raises(KubernetesRejectedError) as refused:
        await InClusterConfigMaps(url, token).apply(body)
    assert isinstance(refused.value, PermanentError)
    assert refused.value.status == 403
    assert str(refused.value) == f"ConfigMap c: HTTP 403: {server.message}"


async def test_unreachable_api_server_is_retryable(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    body = config_map_body(name="c", namespace="n", data={}, owner=None)
    with pytest.raises(RetryableError):
        await InClusterConfigMaps("http://127.0.0.1:9", token).apply(body)
