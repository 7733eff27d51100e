"""The pulse chart in Redis sentinel mode with TLS: the settings reach every container that
reads them, the CA certificate is mounted where PULSE_REDIS_TLS_CA_FILE says, the sentinels'
port is open, and the render validates and meets PodSecurity restricted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pulse_dev.k8s_check.pod_security import document_problems, pod_templates
from pulse_dev.k8s_check.render import PULSE_CHART, documents, validate_strictly
from pulse_dev.k8s_check.suite import Verdict

if TYPE_CHECKING:
    from pulse_dev.k8s_check.render import Document
    from pulse_dev.k8s_check.repository import Repository

SENTINELS = "rediss://sentinel-0:26379,rediss://sentinel-1:26379"
VALUES = (
    "redis.mode=sentinel",
    f"redis.sentinels={{{SENTINELS}}}",
    "redis.masterName=pulse",
    "redis.sentinelPasswordSecret=redis-sentinel",
    "redis.tls.caSecret=redis-ca",
    "networkPolicy.enabled=true",
    "topology.enabled=true",
)
CA_DIR = "/etc/pulse/redis-ca"
SENTINEL_PORT = 26379
SETTINGS_PODS = 6  # five services and the topology Job
CONFIG = {
    "PULSE_REDIS_MODE": "sentinel",
    "PULSE_REDIS_SENTINELS": SENTINELS,
    "PULSE_REDIS_MASTER_NAME": "pulse",
    "PULSE_REDIS_TLS_CA_FILE": f"{CA_DIR}/ca.crt",
}


def sentinel_with_tls_renders(repository: Repository) -> Verdict:
    flags = [flag for value in VALUES for flag in ("--set", value)]
    done = repository.helm.run("template", "pulse", PULSE_CHART, *flags)
    if done.returncode != 0:
        return Verdict(passed=False, output=done.stderr)
    docs = documents(done.stdout)
    problems = _config_problems(docs) + _network_problems(docs)
    pods = 0
    for doc in docs:
        for _, pod in pod_templates(doc):
            if _reads_settings(pod):
                pods += 1
                problems += [f"{doc['kind']}/{doc['metadata']['name']}: {p}" for p in _pod(pod)]
    if pods < SETTINGS_PODS:
        problems.append(f"only {pods} pods read the Pulse settings")
    problems += document_problems("sentinel+TLS values", docs)
    validated = validate_strictly(docs, "sentinel+TLS values", warn=False)
    if not validated.passed:
        problems.append(validated.output)
    return Verdict.of(
        problems, f"{pods} pods: sentinel settings, password, CA mounted; port 26379 open"
    )


def _config_problems(docs: list[Document]) -> list[str]:
    configs = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-env")
    ]
    if len(configs) != 1:
        return [f"expected one -env ConfigMap, found {len(configs)}"]
    data = configs[0].get("data") or {}
    return [
        f"ConfigMap: {name}={data.get(name)!r}, expected {value!r}"
        for name, value in CONFIG.items()
        if data.get(name) != value
    ]


def _network_problems(docs: list[Document]) -> list[str]:
    problems = []
    for doc in docs:
        if doc["kind"] != "NetworkPolicy" or not doc["spec"].get("egress"):
            continue
        ports = {p.get("port") for rule in doc["spec"]["egress"] for p in rule.get("ports", [])}
        if SENTINEL_PORT not in ports:
            problems.append(f"NetworkPolicy/{doc['metadata']['name']}: no egress to the sentinels")
    return problems


def _reads_settings(pod: dict[str, Any]) -> bool:
    return any(
        ref.get("configMapRef", {}).get("name", "").endswith("-env")
        for c in pod.get("containers", [])
        for ref in c.get("envFrom", [])
    )


def _pod(pod: dict[str, Any]) -> list[str]:
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if volumes.get("redis-ca", {}).get("secret", {}).get("secretName") != "redis-ca":
        problems.append("no redis-ca volume from the Secret redis-ca")
    for container in pod.get("containers", []):
        env = {e["name"]: e for e in container.get("env", [])}
        secret = env.get("PULSE_REDIS_SENTINEL_PASSWORD", {}).get("valueFrom", {})
        if secret.get("secretKeyRef", {}).get("name") != "redis-sentinel":
            problems.append(f"{container['name']}: no PULSE_REDIS_SENTINEL_PASSWORD")
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        if mounts.get("redis-ca", {}).get("mountPath") != CA_DIR:
            problems.append(f"{container['name']}: the CA is not mounted at {CA_DIR}")
    return problems
