"""Cluster-scoped objects are named per release: each chart, with each values file, rendered
as release ``pulse`` in two namespaces, must not render the same cluster-scoped name twice.

Helm refuses to install an object that another release owns ("exists and cannot be imported
into the current release: invalid ownership metadata"), so a shared name means the second
release (the operator in ``pulse`` and in ``pulse-eks``, say) fails to install.

The one exception is the CRD: a CustomResourceDefinition's name is ``<plural>.<group>``, one
per cluster by nature, and ``charts/pulse-crds`` is installed once per cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pulse_dev.k8s_check.pod_security import CHART_SCENARIOS
from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pulse_dev.k8s_check.render import Document, ObjectKey
    from pulse_dev.k8s_check.repository import Repository

NAMESPACES = ("pulse", "pulse-eks")
# The cluster-scoped kinds of Kubernetes 1.34 and of the add-ons the charts may render (KEDA's
# ClusterTriggerAuthentication). A kind named Cluster* is taken for cluster-scoped too.
CLUSTER_SCOPED = {
    "APIService", "CertificateSigningRequest", "ClusterRole", "ClusterRoleBinding",
    "ClusterTrustBundle", "CSIDriver", "CSINode", "CustomResourceDefinition", "DeviceClass",
    "FlowSchema", "IngressClass", "IPAddress", "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding", "MutatingWebhookConfiguration", "Namespace", "Node",
    "PersistentVolume", "PriorityClass", "PriorityLevelConfiguration", "ResourceSlice",
    "RuntimeClass", "ServiceCIDR", "StorageClass", "StorageVersionMigration",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration", "VolumeAttachment", "VolumeAttributesClass",
}  # fmt: skip
# One per cluster by nature (the name is the API's), installed once: never per release.
ONE_PER_CLUSTER = {"CustomResourceDefinition"}


def cluster_scoped(docs: Iterable[Document]) -> set[ObjectKey]:
    return {
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["kind"] in CLUSTER_SCOPED or d["kind"].startswith("Cluster")
    }


def collisions(source: str, renders: dict[str, list[Document]]) -> list[str]:
    """The cluster-scoped names every namespace's render claims (but a CRD's)."""
    (first, a), (second, b) = renders.items()
    return [
        f"{source}: {kind} {name} is rendered the same in namespaces {first} and {second}: "
        f"a second release would fail to install (name it after the release's namespace)"
        for kind, name in sorted(cluster_scoped(a) & cluster_scoped(b))
        if kind not in ONE_PER_CLUSTER
    ]


def names_are_per_release(repository: Repository) -> Verdict:
    problems: list[str] = []
    seen = 0
    for chart, scenario in CHART_SCENARIOS:
        renders = {ns: repository.renders.documents(chart, scenario, ns) for ns in NAMESPACES}
        seen += len(cluster_scoped(renders[NAMESPACES[0]]))
        problems += collisions(f"{chart} ({scenario} values)", renders)
    return Verdict.of(
        problems,
        f"{seen} cluster-scoped objects in {len(CHART_SCENARIOS)} renders; none claimed by "
        f"releases in two namespaces (CRDs aside: one per cluster)",
    )
