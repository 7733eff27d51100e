"""The operator's Kubernetes edge: write the outputs ConfigMap with server-side apply.

kopf ships no general API client, and one PATCH does not justify another dependency: this
speaks to the API server with aiohttp, using the pod's service-account token. Server-side
apply (``application/apply-patch+yaml`` with a field manager) is create-or-update in one
idempotent call.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from pulse.errors import PermanentError, RetryableError

__all__ = ["ConfigMapWriter", "InClusterConfigMaps", "config_map_body"]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "pulse-operator"


class ConfigMapWriter(Protocol):
    async def apply(self, body: dict[str, Any]) -> None: ...


def config_map_body(
    *, name: str, namespace: str, data: dict[str, str], owner: dict[str, Any] | None
) -> dict[str, Any]:
    """A ConfigMap manifest, owned by the pipeline so Kubernetes collects it with it."""
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


class InClusterConfigMaps:
    """Applies ConfigMaps through the API server the pod runs in."""

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

    async def apply(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        url = f"{self.base_url}/api/v1/namespaces/{meta['namespace']}/configmaps/{meta['name']}"
        # The token is re-read each time: the kubelet rotates projected tokens.
        headers = {
            "Authorization": f"Bearer {self.token_path.read_text().strip()}",
            "Content-Type": "application/apply-patch+yaml",  # JSON is valid YAML
        }
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
                session.patch(
                    url, data=json.dumps(body), headers=headers, params=params, ssl=self._ssl()
                ) as resp,
            ):
                if resp.status >= 500 or resp.status == 429:  # noqa: PLR2004 - HTTP classes
                    raise RetryableError(f"ConfigMap {meta['name']}: HTTP {resp.status}", delay=10)
                if resp.status >= 400:  # noqa: PLR2004
                    text = await resp.text()
                    raise PermanentError(
                        f"ConfigMap {meta['name']}: HTTP {resp.status}: {text[:300]}"
                    )
        except aiohttp.ClientError as exc:
            raise RetryableError(f"ConfigMap {meta['name']}: {exc}", delay=10) from exc
