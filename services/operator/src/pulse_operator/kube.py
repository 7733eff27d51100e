"""The operator's Kubernetes edge: write the outputs ConfigMap with server-side apply, and list
the EventPipelines (for the uninstall guard).

kopf ships no general API client, and two calls do not justify another dependency: this
speaks to the API server with aiohttp, using the pod's service-account token. Server-side
apply (``application/apply-patch+yaml`` with a field manager) is create-or-update in one
idempotent call.

What the API server answers becomes Pulse's error tree: 429 and 5xx (and an unreachable
server) are :class:`~pulse.errors.RetryableError`; any other refusal (403 from RBAC or from
an admission plugin such as ``OwnerReferencesPermissionEnforcement``, 422 from validation)
is :class:`KubernetesRejectedError`, a permanent error the operator reports with the reason
``KubernetesRejected`` (not ``AWSRejected``: Kubernetes refused, not AWS).
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from pulse.errors import PermanentError, RetryableError

__all__ = [
    "ConfigMapWriter",
    "InClusterConfigMaps",
    "KubeApi",
    "KubernetesRejectedError",
    "config_map_body",
]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "pulse-operator"
PIPELINES_PATH = "/apis/pulse.dev/v1alpha1"
HTTP_NOT_FOUND = 404
HTTP_TOO_MANY_REQUESTS = 429
HTTP_CLIENT_ERROR = 400
HTTP_SERVER_ERROR = 500


class KubernetesRejectedError(PermanentError):
    """The Kubernetes API server refused a request (RBAC, admission, validation); retrying
    the same request cannot help until the role or the object changes."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConfigMapWriter(Protocol):
    async def apply(self, body: dict[str, Any]) -> None: ...


def config_map_body(
    *, name: str, namespace: str, data: dict[str, str], owner: dict[str, Any] | None
) -> dict[str, Any]:
    """A ConfigMap manifest, owned by the pipeline so Kubernetes collects it with it.

    ``blockOwnerDeletion`` makes a foreground deletion of the pipeline wait for the
    ConfigMap; under ``OwnerReferencesPermissionEnforcement`` the API server accepts it only
    from a writer allowed to ``update eventpipelines/finalizers`` (the chart's Role is).
    """
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/managed-by": FIELD_MANAGER,
            "app.kubernetes.io/part-of": "pulse",
        },
    }
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["name"],
                "uid": owner["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": dict(sorted(data.items())),
    }


def _refusal(what: str, status: int, text: str) -> Exception:
    if status >= HTTP_SERVER_ERROR or status == HTTP_TOO_MANY_REQUESTS:
        return RetryableError(f"{what}: HTTP {status}", delay=10)
    try:
        # a Status object: its message says what refused and why
        detail = str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        detail = text
    return KubernetesRejectedError(f"{what}: HTTP {status}: {detail[:400]}", status=status)


class KubeApi:
    """The API server the pod runs in, as its service account.

    ``base_url`` and ``token_path`` default to the in-cluster ones
    (``KUBERNETES_SERVICE_HOST``/``PORT`` and the projected token).
    """

    def __init__(
        self, base_url: str | None = None, token_path: Path = SERVICE_ACCOUNT / "token"
    ) -> None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.base_url = base_url or f"https://{host}:{port}"
        self.token_path = token_path

    def _ssl(self) -> ssl.SSLContext | bool:
        ca = SERVICE_ACCOUNT / "ca.crt"
        return ssl.create_default_context(cafile=str(ca)) if ca.exists() else True

    async def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """``(status, parsed JSON)`` of a 2xx or 404 answer.

        Raises RetryableError (429, 5xx, unreachable) or KubernetesRejectedError (any
        other refusal), both naming ``what``.
        """
        # The token is re-read each time: the kubelet rotates projected tokens.
        headers = {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
                session.request(
                    method,
                    self.base_url + path,
                    data=None if body is None else json.dumps(body),
                    headers=headers,
                    params=params,
                    ssl=self._ssl(),
                ) as resp,
            ):
                text = await resp.text()
                if resp.status >= HTTP_CLIENT_ERROR and resp.status != HTTP_NOT_FOUND:
                    raise _refusal(what, resp.status, text)
                return resp.status, json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise RetryableError(f"{what}: {exc}", delay=10) from exc

    async def pipelines(self, namespace: str) -> list[str] | None:
        """The EventPipelines in ``namespace`` (every namespace when empty), as
        ``namespace/name``; None when the API server does not serve the kind (no CRD)."""
        where = f"/namespaces/{namespace}" if namespace else ""
        status, found = await self.request(
            "GET", f"{PIPELINES_PATH}{where}/eventpipelines", "list EventPipelines"
        )
        if status == HTTP_NOT_FOUND:
            return None
        return sorted(
            f"{item['metadata'].get('namespace', '')}/{item['metadata']['name']}"
            for item in (found or {}).get("items", [])
        )


class InClusterConfigMaps(KubeApi):
    """Applies ConfigMaps through the API server the pod runs in."""

    async def apply(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        what = f"ConfigMap {meta['name']}"
        status, _ = await self.request(
            "PATCH",
            f"/api/v1/namespaces/{meta['namespace']}/configmaps/{meta['name']}",
            what,
            body=body,  # JSON is valid YAML
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        if status == HTTP_NOT_FOUND:  # the namespace is gone (being deleted)
            raise KubernetesRejectedError(f"{what}: HTTP 404: namespace not found", status=404)
