"""PodSecurity ``restricted``, as the API server's admission enforces it (Pod Security
Standards, ``latest``), for every pod template each chart renders with each of its values
files: the services, Jobs and hooks, the operator, and the dev cluster's LocalStack and Redis.

No namespace is declared at a lower level: a pod that fails here is refused
(``FailedCreate … forbidden``) in a namespace labelled
``pod-security.kubernetes.io/enforce=restricted``, and warned about in any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.render import (
    CRD_CHART,
    OPERATOR_CHART,
    OPERATOR_SCENARIOS,
    PULSE_CHART,
    PULSE_SCENARIOS,
    Document,
)
from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from pulse_dev.k8s_check.repository import Repository

# Every chart and the values files it is rendered with.
CHART_SCENARIOS = (
    *((PULSE_CHART, s) for s in PULSE_SCENARIOS),
    *((OPERATOR_CHART, s) for s in OPERATOR_SCENARIOS),
    (CRD_CHART, "default"),
)
# baseline: capabilities a container may add; restricted: only NET_BIND_SERVICE
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def pod_templates(doc: Document) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod metadata, pod spec) of a Pod or of each pod a workload makes."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        yield doc.get("metadata") or {}, spec
    elif kind == "CronJob":
        template = spec["jobTemplate"]["spec"]["template"]
        yield template.get("metadata") or {}, template["spec"]
    elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield spec["template"].get("metadata") or {}, spec["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in pod.get(key) or []
    ]


def baseline_violations(meta: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """What PodSecurity ``baseline`` refuses in a pod (``restricted`` includes it)."""
    found = []
    psc = pod.get("securityContext") or {}
    found += [f"{host}: true" for host in ("hostNetwork", "hostPID", "hostIPC") if pod.get(host)]
    found += [f"hostPath volume {v['name']}" for v in pod.get("volumes") or [] if "hostPath" in v]
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        found.append("windowsOptions.hostProcess: true")
    found += [
        f"sysctl {s['name']} is not a safe sysctl"
        for s in psc.get("sysctls") or []
        if s["name"] not in SAFE_SYSCTLS
    ]
    found += _context_violations("pod", psc)
    found += [
        f"annotation {key}: {value}"
        for key, value in (meta.get("annotations") or {}).items()
        if key.startswith(APPARMOR_ANNOTATION)
        and value != "runtime/default"
        and not value.startswith("localhost/")
    ]
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("privileged"):
            found.append(f"{where}: privileged: true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: windowsOptions.hostProcess: true")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount {sc['procMount']}")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if extra := added - BASELINE_CAPABILITIES:
            found.append(f"{where}: adds capabilities {sorted(extra)}")
        found += [
            f"{where}: hostPort {p['hostPort']}" for p in c.get("ports") or [] if p.get("hostPort")
        ]
        found += _context_violations(where, sc)
    return found


def _context_violations(where: str, sc: dict[str, Any]) -> list[str]:
    """The baseline's rules shared by a pod's and a container's security context."""
    found = []
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or "user" in selinux or "role" in selinux:
        found.append(f"{where}: seLinuxOptions {selinux}")
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append(f"{where}: seccompProfile Unconfined")
    apparmor = (sc.get("appArmorProfile") or {}).get("type", "RuntimeDefault")
    if apparmor not in {"RuntimeDefault", "Localhost"}:
        found.append(f"{where}: appArmorProfile {apparmor}")
    return found


def restricted_violations(meta: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """What PodSecurity ``restricted`` refuses in a pod; empty when it is admitted."""
    found = baseline_violations(meta, pod)
    psc = pod.get("securityContext") or {}
    found += [
        f"volume {v['name']}: type {sorted(set(v) - {'name'})} is not allowed"
        for v in pod.get("volumes") or []
        if not set(v) - {"name"} <= VOLUME_TYPES
    ]
    if psc.get("runAsUser") == 0:
        found.append("pod: runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in SECCOMP_TYPES
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if not (seccomp in SECCOMP_TYPES or (seccomp is None and pod_seccomp)):
            found.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: capabilities must drop ALL")
        if extra := set(caps.get("add") or []) - RESTRICTED_CAPABILITIES:
            found.append(f"{where}: adds capabilities {sorted(extra)} (only NET_BIND_SERVICE)")
    return found


def document_problems(source: str, docs: Iterable[Document]) -> list[str]:
    return [
        f"{source}: {doc['kind']}/{doc['metadata']['name']}: {violation}"
        for doc in docs
        for meta, pod in pod_templates(doc)
        for violation in restricted_violations(meta, pod)
    ]


def every_pod_is_restricted(repository: Repository) -> Verdict:
    problems: list[str] = []
    pods = 0
    for chart, scenario in CHART_SCENARIOS:
        docs = repository.renders.documents(chart, scenario)
        pods += sum(1 for d in docs for _ in pod_templates(d))
        problems += document_problems(f"{chart} ({scenario} values)", docs)
    return Verdict.of(
        problems,
        f"{pods} pod templates in {len(CHART_SCENARIOS)} renders meet PodSecurity restricted",
    )
