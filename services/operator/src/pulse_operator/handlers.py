"""kopf handlers for ``EventPipeline`` (pulse.dev/v1alpha1), thin over :class:`PipelineOperator`.

- create, update and resume call one idempotent :meth:`PipelineOperator.reconcile`: the spec
  becomes a :class:`~pulse.topology.TopologySpec` and
  :func:`~pulse.topology_apply.apply_topology` creates or repairs every resource; the resolved
  names go to ``status.outputs`` and to a ConfigMap the services mount; the ``Ready``
  condition says how it went.
- a timer (:meth:`~PipelineOperator.refresh`) reports queue depths, DLQ depths and the oldest
  message's age into status; a slower one re-applies the topology to repair drift.
- delete (with kopf's finalizer) honours ``spec.deletionPolicy``: Retain (default) leaves
  the AWS resources, Delete removes them.

Pulse's :class:`~pulse.errors.RetryableError` (throttling, an unreachable endpoint, a table
still being created) becomes ``kopf.TemporaryError`` with its delay; an invalid spec, a
request AWS refuses (``AWSRejected``) or one the Kubernetes API server refuses
(``KubernetesRejected``: RBAC, admission) becomes ``kopf.PermanentError`` with a
``Ready=False`` condition saying why. kopf applies the status patch whether the handler
succeeded or not. AWS changes, refusals and recoveries are also posted as Kubernetes Events
(:mod:`pulse_operator.events`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import kopf

from pulse.errors import PermanentError, RetryableError
from pulse.logging import get_logger
from pulse.topology_apply import apply_topology
from pulse_operator.aws import delete_resources, measure_queues
from pulse_operator.events import EventSink, KopfEvents, PipelineRef
from pulse_operator.kube import (
    ConfigMapWriter,
    InClusterConfigMaps,
    KubernetesRejectedError,
    config_map_body,
)
from pulse_operator.pipeline import InvalidPipelineError, Pipeline, parse_pipeline
from pulse_operator.status import config_map_data, health_status, outputs_status, set_condition

if TYPE_CHECKING:
    from pulse.settings import PulseSettings
    from pulse_operator.settings import OperatorSettings

__all__ = ["GROUP", "PLURAL", "VERSION", "PipelineOperator", "configure", "kopf_scope"]

GROUP, VERSION, PLURAL = "pulse.dev", "v1alpha1", "eventpipelines"
KIND = "EventPipeline"
DEFAULT_RETRY_SECONDS = 15.0

log = get_logger("pulse_operator")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PipelineOperator:
    """The handlers' logic; every method takes the resource's parts as plain mappings, and
    ``ref`` (which pipeline: the outputs ConfigMap's owner, what Events are about)."""

    settings: PulseSettings
    configmaps: ConfigMapWriter
    events: EventSink

    def _ready(
        self,
        patch: kopf.Patch,
        status: Any,
        meta: Any,
        *,
        ok: bool,
        reason: str,
        message: str,
        ref: PipelineRef | None,
    ) -> bool:
        """Set the Ready condition; True when it turned (new, other status or reason). A
        condition turning false is posted as a Warning Event with its reason."""
        current = patch.status.get("conditions") or (status or {}).get("conditions") or []
        previous = next((c for c in current if c.get("type") == "Ready"), None)
        patch.status["conditions"] = set_condition(
            current,
            type_="Ready",
            status=ok,
            reason=reason,
            message=message,
            generation=(meta or {}).get("generation"),
            now=_now(),
        )
        turned = (
            previous is None
            or previous.get("status") != ("True" if ok else "False")
            or previous.get("reason") != reason
        )
        if turned and not ok and ref is not None:
            self.events.post(ref, warning=True, reason=reason, message=message)
        return turned

    def _parse(
        self,
        spec: Any,
        name: str,
        patch: kopf.Patch,
        status: Any,
        meta: Any,
        *,
        ref: PipelineRef | None,
    ) -> Pipeline:
        try:
            return parse_pipeline(spec, name=name)
        except InvalidPipelineError as exc:
            self._ready(
                patch, status, meta, ok=False, reason="InvalidSpec", message=str(exc), ref=ref
            )
            raise kopf.PermanentError(f"invalid spec: {exc}") from exc

    def _fail(
        self,
        exc: Exception,
        patch: kopf.Patch,
        status: Any,
        meta: Any,
        what: str,
        *,
        ref: PipelineRef | None,
    ) -> kopf.TemporaryError | kopf.PermanentError:
        message = f"{what}: {exc}"
        if isinstance(exc, RetryableError):
            self._ready(patch, status, meta, ok=False, reason="Retrying", message=message, ref=ref)
            return kopf.TemporaryError(message, delay=exc.delay or DEFAULT_RETRY_SECONDS)
        # Who refused decides what the user must fix: the operator's role or an admission
        # policy (Kubernetes), or the AWS account, its IAM policy or the spec (AWS).
        reason = "KubernetesRejected" if isinstance(exc, KubernetesRejectedError) else "AWSRejected"
        self._ready(patch, status, meta, ok=False, reason=reason, message=message, ref=ref)
        return kopf.PermanentError(message)

    async def reconcile(
        self,
        *,
        name: str,
        namespace: str,
        spec: Any,
        meta: Any,
        status: Any,
        patch: kopf.Patch,
        ref: PipelineRef | None = None,
    ) -> list[str]:
        """Make AWS match ``spec`` (idempotent); returns what changed."""
        pipeline = self._parse(spec, name, patch, status, meta, ref=ref)
        try:
            outputs = await asyncio.to_thread(apply_topology, self.settings, pipeline.topology)
        except (RetryableError, PermanentError) as exc:
            raise self._fail(exc, patch, status, meta, "apply topology", ref=ref) from exc
        body = config_map_body(
            name=pipeline.config_map_name,
            namespace=namespace,
            data=config_map_data(outputs, pipeline.topology, pipeline.resource_prefix),
            owner=ref.owner() if ref else None,
        )
        try:
            await self.configmaps.apply(body)
        except (RetryableError, PermanentError) as exc:
            raise self._fail(exc, patch, status, meta, "write outputs ConfigMap", ref=ref) from exc
        patch.status["outputs"] = outputs_status(
            outputs, pipeline.topology, pipeline.config_map_name
        )
        patch.status["observedGeneration"] = (meta or {}).get("generation")
        changes = outputs.changes
        message = f"{len(changes)} change(s): {'; '.join(changes)}" if changes else "in sync"
        turned = self._ready(
            patch, status, meta, ok=True, reason="Reconciled", message=message, ref=ref
        )
        # AWS changed, or the pipeline is ready again: worth an Event; "still in sync" is not.
        if ref is not None and (changes or turned):
            self.events.post(ref, warning=False, reason="Reconciled", message=message)
        log.info("pipeline reconciled", pipeline=f"{namespace}/{name}", changes=len(changes))
        return changes

    async def refresh(
        self,
        *,
        name: str,
        spec: Any,
        meta: Any,
        status: Any,
        patch: kopf.Patch,
        ref: PipelineRef | None = None,
    ) -> None:
        """Report queue depths, DLQ depths and the oldest message's age into status, once
        the pipeline's current spec has been reconciled (before that, a queue still being
        made is not drift: the reconcile reports its own progress)."""
        if (status or {}).get("observedGeneration") != (meta or {}).get("generation"):
            return
        try:
            pipeline = parse_pipeline(spec, name=name)
        except InvalidPipelineError:
            return  # the reconcile already said why in the Ready condition
        try:
            depths = await asyncio.to_thread(
                measure_queues, self.settings, pipeline.topology.queues
            )
        except (RetryableError, PermanentError) as exc:
            # A missing queue is drift: say so; the repair timer (or the next update) fixes it.
            self._ready(
                patch,
                status,
                meta,
                ok=False,
                reason="Degraded",
                message=f"measure queues: {exc}",
                ref=ref,
            )
            delay = (
                exc.delay
                if isinstance(exc, RetryableError) and exc.delay
                else DEFAULT_RETRY_SECONDS
            )
            raise kopf.TemporaryError(f"measure queues: {exc}", delay=delay) from exc
        patch.status.update(health_status(depths))
        patch.status["lastMeasuredTime"] = _now()

    async def finalize(
        self,
        *,
        name: str,
        spec: Any,
        meta: Any,
        status: Any,
        patch: kopf.Patch,
        ref: PipelineRef | None = None,
    ) -> list[str]:
        """On deletion: remove the AWS resources if ``deletionPolicy`` is Delete."""
        try:
            pipeline = parse_pipeline(spec, name=name)
        except InvalidPipelineError as exc:
            log.warning("invalid pipeline deleted; nothing removed", pipeline=name, error=str(exc))
            if ref is not None:
                message = f"invalid spec, so no AWS resource was removed: {exc}"
                self.events.post(ref, warning=True, reason="InvalidSpec", message=message)
            return []
        if pipeline.deletion_policy != "Delete":
            log.info("pipeline deleted; resources retained", pipeline=name)
            if ref is not None:
                message = "deletionPolicy Retain: the AWS tables, topic and queues stay"
                self.events.post(ref, warning=False, reason="Retained", message=message)
            return []
        try:
            deleted = await asyncio.to_thread(delete_resources, self.settings, pipeline.topology)
        except (RetryableError, PermanentError) as exc:
            raise self._fail(exc, patch, status, meta, "delete resources", ref=ref) from exc
        log.info("pipeline deleted with its resources", pipeline=name, deleted=len(deleted))
        if ref is not None:
            message = f"deleted {len(deleted)} AWS resource(s): {'; '.join(deleted)}"
            self.events.post(ref, warning=False, reason="Deleted", message=message)
        return deleted


def _parts(body: kopf.Body) -> dict[str, Any]:
    return {
        "name": body.metadata.name or "",
        "spec": body.spec,
        "meta": body.metadata,
        "status": body.status,
        "ref": PipelineRef.of(body),
    }


def kopf_scope(settings: OperatorSettings) -> dict[str, Any]:
    """kopf.run's scope: the watched namespace, or every namespace when none is set."""
    namespace = settings.watch_namespace
    return {
        "clusterwide": not namespace,
        "namespaces": [namespace] if namespace else [],
    }


def configure(
    settings: OperatorSettings,
    configmaps: ConfigMapWriter | None = None,
    events: EventSink | None = None,
) -> PipelineOperator:
    """Register the kopf handlers (intervals from ``settings``); returns their logic object."""
    op = PipelineOperator(settings, configmaps or InClusterConfigMaps(), events or KopfEvents())
    resource = (GROUP, VERSION, PLURAL)
    one_namespace = bool(settings.watch_namespace)

    @kopf.on.startup()
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Kubernetes Events: Pulse's own (pulse_operator.events) and, with loggers on, kopf's
        # handler outcomes; without it kopf 1.45 posts none of its messages.
        settings.posting.enabled = True
        settings.posting.loggers = True
        settings.posting.level = logging.INFO
        settings.posting.reporting_component = "pulse-operator"
        # Watching one namespace, kopf must not scan the cluster: listing namespaces needs a
        # cluster-wide grant the chart's Role does not give (kopf would retry a 403 for about
        # a minute, serving nothing), and the CRD watch would need one too. The CRD is found
        # once, at start.
        settings.scanning.disabled = one_namespace
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        # Handler progress in annotations, not status: the CRD's status schema is closed,
        # so the API server would prune kopf's status fields.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.watching.server_timeout = 300

    async def _reconcile(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        parts = _parts(body)
        await op.reconcile(**parts, namespace=body.metadata.namespace or "", patch=patch)

    async def _refresh(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await op.refresh(**_parts(body), patch=patch)

    async def _delete(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await op.finalize(**_parts(body), patch=patch)

    # One idempotent reconcile for every reason a resource needs it.
    kopf.on.create(*resource, id="reconcile")(_reconcile)
    kopf.on.update(*resource, id="reconcile")(_reconcile)
    kopf.on.resume(*resource, id="reconcile")(_reconcile)
    kopf.timer(
        *resource,
        id="repair",
        interval=settings.repair_interval_seconds,
        initial_delay=settings.repair_interval_seconds,
    )(_reconcile)
    kopf.timer(*resource, id="status", interval=settings.status_interval_seconds, initial_delay=5)(
        _refresh
    )
    # A delete handler makes kopf hold the resource with a finalizer until it succeeds.
    kopf.on.delete(*resource, id="finalize")(_delete)
    return op
