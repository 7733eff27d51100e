"""pulse_dev.k8s_check.render and charts: strict validation, and helm checks that can fail."""

from pulse_dev.k8s_check.charts import MISSPELT_DEPLOYMENT, schema_refuses
from pulse_dev.k8s_check.monitoring import refuses_without_crds
from pulse_dev.k8s_check.render import documents, validate_strictly
from pulse_dev.k8s_check.repository import Repository

pytest_plugins = ["pulse_dev.k8s_check.testing"]

SCALED_OBJECT = """\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: pulse-fraud-worker}
spec: {scaleTargetRef: {name: pulse-fraud-worker}}
"""


def test_an_unknown_field_fails_strict_validation() -> None:
    verdict = validate_strictly(documents(MISSPELT_DEPLOYMENT), "bad.yaml")
    assert not verdict.passed
    assert "'replicaz' was unexpected" in verdict.output
    fixed = MISSPELT_DEPLOYMENT.replace("replicaz", "replicas")
    assert validate_strictly(documents(fixed), "good.yaml").passed


def test_a_kind_with_no_schema_here_warns_without_failing() -> None:
    verdict = validate_strictly(documents(SCALED_OBJECT), "keda.yaml")
    assert verdict.passed
    assert verdict.output.startswith("WARN keda.yaml Couldn't find schema for kind ScaledObject")
    assert validate_strictly(documents(SCALED_OBJECT), "keda.yaml", warn=False).output == ""


def test_a_value_the_schema_accepts_fails_the_refusal_check(k8s_repository: Repository) -> None:
    verdict = schema_refuses("services.ingest.replicas=3").run(k8s_repository)
    assert not verdict.passed
    assert (
        verdict.output
        == "helm template --set services.ingest.replicas=3 succeeded; the schema must refuse it"
    )


def test_a_render_that_needs_no_crd_fails_the_crd_gate_check(k8s_repository: Repository) -> None:
    check = refuses_without_crds("gate", "logging.level=debug", "monitoring.coreos.com/v1")
    verdict = check.run(k8s_repository)
    assert not verdict.passed
    assert (
        verdict.output
        == "rendered logging.level=debug without the monitoring.coreos.com/v1 CRD; it must fail"
    )
