"""Kubernetes Events about an EventPipeline: what ``kubectl describe eventpipeline`` and k9s
show.

kopf posts its own handler outcomes ("Handler 'reconcile' failed temporarily: …") once
``settings.posting.loggers`` is on (see :func:`pulse_operator.handlers.configure`); these are
Pulse's own, with reasons a reader can filter on:

- ``Reconciled`` (Normal): the AWS resources a reconcile created or changed, or the pipeline
  ready again after a failure;
- the ``Ready`` condition's reason (Warning) when it turns false or its reason changes:
  ``Retrying``, ``AWSRejected``, ``KubernetesRejected``, ``InvalidSpec``, ``Degraded``;
- ``Deleted`` / ``Retained`` (Normal): what deleting the pipeline did to its AWS resources.

They are posted when something happened or changed, never on every timer tick: each Event is
an object the API server stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import kopf

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["EventSink", "KopfEvents", "PipelineRef"]


@dataclass(frozen=True)
class PipelineRef:
    """Which EventPipeline an Event is about, and the owner of its outputs ConfigMap."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> PipelineRef:
        meta = body["metadata"]
        return cls(
            api_version=body["apiVersion"],
            kind=body["kind"],
            name=meta["name"],
            namespace=meta.get("namespace") or "",
            uid=meta["uid"],
        )

    def owner(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
        }

    def body(self) -> dict[str, Any]:
        """The parts of the object an Event's ``involvedObject`` names."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


class EventSink(Protocol):
    def post(self, ref: PipelineRef, *, warning: bool, reason: str, message: str) -> None: ...


class KopfEvents:
    """Posts through kopf's event queue; call it only from kopf's handlers."""

    def post(self, ref: PipelineRef, *, warning: bool, reason: str, message: str) -> None:
        kopf.event(
            kopf.Body(ref.body()),  # type: ignore[arg-type] # kopf types the raw body as a TypedDict
            type="Warning" if warning else "Normal",
            reason=reason,
            message=message,
        )
