"""``python -m pulse_operator.uninstall_guard``: the pulse-operator chart's pre-delete hook.

Every EventPipeline carries the finalizer ``pulse.dev/finalizer``, which only a running
operator removes (after applying the pipeline's ``deletionPolicy``). Uninstalling the operator
while pipelines exist leaves them undeletable: ``kubectl delete`` hangs, and so does deleting
their namespace. So this refuses (exit 1, saying why and what to do) while the watched
namespace (every namespace when ``PULSE_WATCH_NAMESPACE`` is empty) holds any EventPipeline,
or when it cannot tell; it allows (exit 0) when there is none, or no EventPipeline CRD.

Helm prints the message (the hook's ``helm.sh/hook-output-log-policy: hook-failed``); the
uninstall stops before deleting anything and can be run again once the pipelines are gone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from pulse.errors import PulseError
from pulse_operator.kube import KubeApi

__all__ = ["main", "refusal"]

FINALIZER = "pulse.dev/finalizer"


def refusal(pipelines: list[str], *, release: str, namespace: str, watched: str) -> str:
    """Why the uninstall stops, and the ways on."""
    where = f"namespace {watched}" if watched else "the cluster"
    delete = (
        f"kubectl delete eventpipelines --all -n {watched}"
        if watched
        else "kubectl delete eventpipelines --all --all-namespaces"
    )
    found = f"{len(pipelines)} EventPipeline(s) in {where}: {', '.join(pipelines)}"
    return "\n".join(
        [
            f"pulse-operator: refusing to uninstall: {found}.",
            f"Each holds the finalizer {FINALIZER}, which only this operator removes: without it,",
            "deleting them - or their namespace - hangs.",
            "Delete them first, while the operator runs (it applies each one's deletionPolicy),",
            "then uninstall again:",
            f"  {delete}",
            f"  helm uninstall {release} -n {namespace}",
            "Or uninstall anyway (the pipelines then stay until an operator returns, or until",
            "their finalizer is removed by hand: see charts/pulse-operator/README.md):",
            f"  helm uninstall {release} -n {namespace} --no-hooks",
            "or set uninstallGuard.enabled=false (helm upgrade --reuse-values) and uninstall.",
        ]
    )


async def check(api: KubeApi, *, release: str, namespace: str, watched: str) -> tuple[int, str]:
    """The exit code and what to print."""
    try:
        pipelines = await api.pipelines(watched)
    except (PulseError, OSError) as exc:  # OSError: no service-account token to read
        return 1, (
            f"pulse-operator: refusing to uninstall: cannot tell whether EventPipelines exist"
            f" ({exc}). Uninstall anyway with: helm uninstall {release} -n {namespace} --no-hooks"
        )
    if pipelines is None:
        return 0, "pulse-operator: no EventPipeline CRD; nothing holds the operator's finalizer"
    if pipelines:
        return 1, refusal(pipelines, release=release, namespace=namespace, watched=watched)
    where = f"namespace {watched}" if watched else "the cluster"
    return 0, f"pulse-operator: no EventPipeline in {where}; uninstalling"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pulse_operator.uninstall_guard")
    parser.add_argument("--release", required=True, help="the operator's Helm release")
    parser.add_argument("--namespace", required=True, help="the release's namespace")
    args = parser.parse_args(argv)
    code, message = asyncio.run(
        check(
            KubeApi(),
            release=args.release,
            namespace=args.namespace,
            watched=os.environ.get("PULSE_WATCH_NAMESPACE", ""),
        )
    )
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
