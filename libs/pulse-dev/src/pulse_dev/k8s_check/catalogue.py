"""Every check, in the order they run and print."""

from __future__ import annotations

from pulse_dev.k8s_check import (
    chart_rules,
    charts,
    cluster_scope,
    crd,
    dockerfiles,
    docs,
    features,
    metrics,
    monitoring,
    operator_chart,
    pod_security,
    redis_modes,
    security,
    skaffold,
    skaffold_render,
)
from pulse_dev.k8s_check.suite import Check


def every_check() -> list[Check]:
    return [
        Check(
            "dockerfiles in sync with services/Dockerfile.template",
            dockerfiles.in_sync_with_template,
        ),
        Check("dockerfiles parse and follow the rules", dockerfiles.follow_the_rules),
        *charts.pulse_checks(),
        *charts.operator_and_crd_checks(),
        Check(
            "CRD: structural schema, example accepted, broken and immutable-field changes refused "
            "(CEL evaluated)",
            crd.schema_and_rules,
        ),
        Check(
            "pulse-operator: one replica, Recreate, liveness, least-privilege RBAC, restricted pod",
            operator_chart.runs_least_privileged,
        ),
        Check(
            "pulse-operator: RBAC grants what the operator does (eventpipelines/finalizers: "
            "update for blockOwnerDeletion, events)",
            operator_chart.grants_what_it_does,
        ),
        Check(
            "pulse-operator: a pre-delete hook refuses to uninstall while EventPipelines exist",
            operator_chart.uninstall_is_guarded,
        ),
        Check(
            "every chart rendered in two namespaces: no cluster-scoped name collides",
            cluster_scope.names_are_per_release,
        ),
        Check(
            "every pod of every chart and values file meets PodSecurity restricted",
            pod_security.every_pod_is_restricted,
        ),
        Check(
            "k8s/iam: least-privilege policies cover every AWS call in each service's code",
            security.iam_policies_cover_the_code,
        ),
        Check("rendered objects follow the chart's rules", chart_rules.follow_the_rules),
        Check(
            "eks values: HPAs, KEDA triggers, monitors, alerts, dashboards, NetworkPolicies, "
            "helm test",
            features.eks_features,
        ),
        *monitoring.crd_gate_checks(),
        Check(
            "dashboard JSON parses; every panel and alert metric is exposed by some service",
            monitoring.dashboards_use_real_metrics,
        ),
        Check(
            "metric names follow docs/design.md (pulse_ prefix, base units, latency histograms, "
            "bounded labels)",
            metrics.follow_the_rules,
        ),
        Check(
            "helm test script parses and its imports exist in the gateway's environment",
            features.helm_test_script_works,
        ),
        *charts.schema_checks(),
        Check(
            "redis sentinel mode with TLS: settings, sentinel password and CA in every pod, "
            "sentinel port open",
            redis_modes.sentinel_with_tls_renders,
        ),
        Check(
            "skaffold.yaml: one named module per service, requires resolve, artifacts, sync, "
            "profiles",
            skaffold.modules_are_sound,
        ),
        *skaffold_render.checks(),
        Check(
            "NOTES.txt (dev, eks, split release): real object names, Ingress URLs, token, "
            "bearer, API key, helm test",
            docs.notes_name_real_objects,
        ),
        Check(
            "deploy docs: every chart, values file and path they name exists; EKS prefix, "
            "ECR names "
            "and IRSA roles agree",
            docs.deploy_docs_agree,
        ),
    ]
