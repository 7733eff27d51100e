#!/usr/bin/env bash
# Static checks of the Kubernetes packaging (no Docker engine, no cluster needed):
#   1. tools            helm 4 + kubectl + validator venv (scripts/k8s-tools.sh)
#   2. dockerfiles      generated files match services/Dockerfile.template; each parses with
#                       BuildKit's parser; pinned base, uv sync --frozen, uid 10001, the right
#                       EXPOSE/ENTRYPOINT for the service, COPY sources present in the context
#   3. helm lint        --strict, with the default, ci/dev and ci/eks values
#   4. render+validate  helm template per values file, every document validated against the
#                       Kubernetes 1.34 JSON schemas in strict mode (unknown fields fail), after
#                       proving the validator rejects a bad manifest
#   4b. operator, CRDs  charts/pulse-operator and charts/pulse-crds linted, rendered, validated;
#                       the CRD structural, the example EventPipeline accepted by its schema
#                       and CEL rules (evaluated with cel-python), broken ones and changes to
#                       immutable fields refused; operator: one replica, Recreate, liveness,
#                       RBAC within an allow-list, restricted pod
#   5. chart rules      labels, restricted securityContext, probes, /tmp, checksum, env names,
#                       ports, PDBs, and what dev/eks values must produce
#   5b. features        eks values: HPAs, KEDA triggers (SQS queue URLs, stream shards), monitors,
#                       alerts, dashboards, NetworkPolicies, helm test; monitoring/KEDA without
#                       their CRDs fail the render; every dashboard/alert metric is exposed by
#                       some service (the registry of the imported code); every metric's name
#                       and labels follow KUBERNETES.md
#   6. schema           typos in values are refused (services.ingest.replicaz=2, ...)
#   7. skaffold/kind    skaffold.yaml: one named module per service (+ pulse-base, operator),
#                       requires resolve, artifacts/Dockerfiles/sync/profiles agree, the
#                       service modules share one shape; each module's release rendered as
#                       Skaffold would: alone it holds only its workload, together no object
#                       twice and the same objects as a one-release install (no skaffold
#                       binary is installable here, so no `skaffold diagnose`)
#   8. docs             NOTES.txt rendered (dev, eks, a split release) names only real objects,
#                       the Ingress URLs and next steps; the READMEs' deploy commands name
#                       existing charts, values files and paths, and agree with the EKS values
#                       (resource prefix, IRSA role names, Skaffold's ECR repository names)
# Prints a summary; exits non-zero when any check fails.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
KUBE_VERSION="1.34.0"
# The renders pretend the cluster serves KEDA and the Prometheus Operator (as EKS values need);
# section 5b proves the chart refuses to render those features without them.
API_VERSIONS=(--api-versions keda.sh/v1alpha1/ScaledObject --api-versions keda.sh/v1alpha1/TriggerAuthentication
              --api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PodMonitor
              --api-versions monitoring.coreos.com/v1/PrometheusRule)
CHART="charts/pulse"
VALUES_FILES=("" "$CHART/ci/dev-values.yaml" "$CHART/ci/eks-values.yaml")
START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pulse-k8s-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

results=()
failed=0
run() { # name, command...
    local name="$1"; shift
    local t0=$SECONDS out
    if out="$("$@" 2>&1)"; then
        results+=("PASS  $name ($((SECONDS - t0))s)")
        [[ -n "${VERBOSE:-}" && -n "$out" ]] && printf '%s\n' "$out"
    else
        results+=("FAIL  $name ($((SECONDS - t0))s)")
        failed=1
        echo "---- FAIL: $name" >&2
        printf '%s\n' "$out" | tail -40 >&2
    fi
}

TOOLS="$(bash scripts/k8s-tools.sh)" || { echo "k8s-check: tools unavailable" >&2; exit 1; }
HELM="$TOOLS/helm"
KUBECTL="$TOOLS/kubectl"
PY="$TOOLS/venv/bin/python"
VALIDATE="$TOOLS/venv/bin/kubernetes-validate"
results+=("PASS  tools: $("$HELM" version --short), kubectl $("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Client Version: //p')")

label() { [[ -z "$1" ]] && echo "default" || basename "$1" .yaml; }
vflag() { [[ -n "$1" ]] && printf -- '-f\n%s\n' "$1"; }

# ---- 2. Dockerfiles
run "dockerfiles in sync with services/Dockerfile.template" bash scripts/gen-dockerfiles.sh --check
run "dockerfiles parse and follow the rules" "$PY" - <<'PY'
import pathlib, re, sys
import dockerfile, yaml

root = pathlib.Path(".")
values = yaml.safe_load((root / "charts/pulse/values.yaml").read_text())
lock = (root / "uv.lock").read_text()
errors = []
ports = {svc: spec["port"] for svc, spec in values["services"].items()}
# the operator's image: its port is kopf's liveness endpoint
ports["operator"] = yaml.safe_load((root / "charts/pulse-operator/values.yaml").read_text())["livenessPort"]
for svc, port in ports.items():
    path = root / "services" / svc / "Dockerfile"
    where = str(path)
    if not path.exists():
        errors.append(f"{where}: missing"); continue
    text = path.read_text()
    if not text.startswith("# syntax=docker/dockerfile:1\n"):
        errors.append(f"{where}: the syntax directive must be the first line")
    cmds = dockerfile.parse_string(text)
    by = lambda name: [c for c in cmds if c.cmd.upper() == name]
    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[-1] for c in by("ARG")}
    base = args.get("PYTHON_IMAGE", "")
    if not re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base):
        errors.append(f"{where}: base image must be a pinned python:3.11.x-slim-bookworm, got {base!r}")
    froms = by("FROM")
    if len(froms) < 2:
        errors.append(f"{where}: expected a multi-stage build")
    runs = " ".join(" ".join(c.value) for c in by("RUN"))
    if f"uv sync --frozen --no-dev --no-install-workspace --package pulse-{svc}" not in runs or \
       f"uv sync --frozen --no-dev --no-editable --package pulse-{svc}" not in runs:
        errors.append(f"{where}: must install pulse-{svc} with uv sync --frozen --no-dev")
    if f'name = "pulse-{svc}"' not in lock:
        errors.append(f"{where}: pulse-{svc} is not a package in uv.lock")
    last = [c for c in cmds if c.start_line > froms[-1].start_line] if froms else []
    users = [c.value[0] for c in last if c.cmd.upper() == "USER"]
    if users != ["10001:10001"]:
        errors.append(f"{where}: the runtime stage must run as USER 10001:10001, got {users}")
    if by("HEALTHCHECK"):
        errors.append(f"{where}: no HEALTHCHECK (Kubernetes probes do it)")
    expose = [v for c in by("EXPOSE") for v in c.value]
    if expose != [str(port)]:
        errors.append(f"{where}: EXPOSE {expose} != chart port {port}")
    entry = [list(c.value) for c in last if c.cmd.upper() == "ENTRYPOINT"]
    if len(entry) != 1 or entry[0][:2] != ["python", "-m"] or len(entry[0]) != 3:
        errors.append(f"{where}: ENTRYPOINT must be [python, -m, <package>], got {entry}")
    else:
        pkg = entry[0][2]
        if not (root / "services" / svc / "src" / pkg / "__main__.py").exists():
            errors.append(f"{where}: services/{svc}/src/{pkg}/__main__.py does not exist")
    stages = {f.value[2]: f for f in froms if len(f.value) == 3 and f.value[1].upper() == "AS"}
    if "dev" not in stages or stages["dev"].value[0] != "base" or froms[-1].value[2:] != ("runtime",):
        errors.append(f"{where}: needs a dev stage from base and runtime as the last (default) stage")
    else:
        dev = [c for c in cmds if stages["dev"].start_line < c.start_line < froms[-1].start_line]
        dev_entry = [list(c.value) for c in dev if c.cmd.upper() == "ENTRYPOINT"]
        if dev_entry != [["python", "/app/reload.py", entry[0][2] if entry and len(entry[0]) == 3 else "?"]]:
            errors.append(f"{where}: the dev stage must run the reloader on the same package, got {dev_entry}")
        synced = {c.value[-1] for c in dev if c.cmd.upper() == "COPY" and "--chown=10001:10001" in c.flags}
        if synced != {"/app/src/libs/pulse/src", f"/app/src/services/{svc}/src"}:
            errors.append(f"{where}: the dev stage must copy the sources skaffold syncs, owned by 10001, got {synced}")
    for c in by("COPY"):
        if any(f.startswith("--from") for f in c.flags):
            continue
        for src in c.value[:-1]:
            if src.startswith("<<"):  # a heredoc, not a file
                continue
            if not (root / src).exists():
                errors.append(f"{where}:{c.start_line}: COPY source {src} is not in the context")
ignore = (root / ".dockerignore").read_text().split()
for needed in ("!uv.lock", "!pyproject.toml", "!libs/pulse/src/", "!services/*/src/"):
    if needed not in ignore:
        errors.append(f".dockerignore: must let {needed[1:]} into the context")
print("\n".join(errors) or f"{len(ports)} Dockerfiles ok")
sys.exit(1 if errors else 0)
PY

# ---- 3. helm lint
for vf in "${VALUES_FILES[@]}"; do
    mapfile -t flags < <(vflag "$vf")
    run "helm lint --strict ($(label "$vf") values)" "$HELM" lint --strict "$CHART" "${flags[@]}"
done

# ---- 4. render and validate against the Kubernetes schemas
bad="$WORK/bad.yaml"
cat >"$bad" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: must-fail}
spec:
  replicaz: 2
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c, image: i}]}
YAML
validator_rejects() { ! "$VALIDATE" -k "$KUBE_VERSION" --strict --quiet "$bad" >/dev/null 2>&1; }
run "validator self-test: an unknown field is rejected" validator_rejects

render_and_validate() { # values file (may be empty)
    local vf="$1" out="$WORK/$(label "$1").yaml"
    mapfile -t flags < <(vflag "$vf")
    "$HELM" template pulse "$CHART" --namespace pulse --kube-version "$KUBE_VERSION" "${API_VERSIONS[@]}" "${flags[@]}" >"$out" || return 1
    # KEDA and Prometheus Operator kinds have no schema here (a warning): checked in 5b
    "$VALIDATE" -k "$KUBE_VERSION" --strict --quiet --no-warn "$out"
}
for vf in "${VALUES_FILES[@]}"; do
    run "helm template | kubernetes-validate --strict $KUBE_VERSION ($(label "$vf") values)" render_and_validate "$vf"
done

# ---- 4b. the operator and CRD charts: lint, render, validate
OP_CHART="charts/pulse-operator"
CRD_CHART="charts/pulse-crds"
for vf in "" "$OP_CHART/ci/dev-values.yaml" "$OP_CHART/ci/eks-values.yaml" "$OP_CHART/ci/clusterwide-values.yaml"; do
    mapfile -t flags < <(vflag "$vf")
    run "pulse-operator: helm lint --strict ($(label "$vf") values)" "$HELM" lint --strict "$OP_CHART" "${flags[@]}"
done
render_chart() { # chart, output name, values file (may be empty)
    local out="$WORK/$2.yaml"
    mapfile -t flags < <(vflag "$3")
    "$HELM" template pulse "$1" --namespace pulse --kube-version "$KUBE_VERSION" "${flags[@]}" >"$out" || return 1
    "$VALIDATE" -k "$KUBE_VERSION" --strict --quiet "$out"
}
run "pulse-operator: helm template | kubernetes-validate (default values)" render_chart "$OP_CHART" operator-default ""
run "pulse-operator: helm template | kubernetes-validate (clusterwide values)" render_chart "$OP_CHART" operator-clusterwide "$OP_CHART/ci/clusterwide-values.yaml"
run "pulse-crds: helm lint --strict" "$HELM" lint --strict "$CRD_CHART"
run "pulse-crds: helm template | kubernetes-validate" render_chart "$CRD_CHART" crds ""

run "CRD: structural schema, example accepted, broken and immutable-field changes refused (CEL evaluated)" "$PY" - "$WORK/crds.yaml" k8s/examples/eventpipeline.yaml <<'PY'
import copy, pathlib, sys
import celpy, jsonschema, yaml
from celpy import json_to_cel

crd_path, example_path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
crd = next(d for d in yaml.safe_load_all(crd_path.read_text()) if d and d["kind"] == "CustomResourceDefinition")
example = yaml.safe_load(example_path.read_text())
errors = []
(version,) = crd["spec"]["versions"]
schema = version["schema"]["openAPIV3Schema"]
env = celpy.Environment()

def structural(node, path="$"):
    """Every node typed (Kubernetes requires structural schemas); objects closed unless marked."""
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields") and not node.get("x-kubernetes-int-or-string"):
        errors.append(f"CRD schema {path}: no type (not structural)")
    for k, sub in node.get("properties", {}).items():
        structural(sub, f"{path}.{k}")
    if "items" in node:
        structural(node["items"], f"{path}[]")

def to_jsonschema(node):
    """openAPIV3Schema -> JSON Schema with the API server's strict field validation:
    unknown fields fail unless x-kubernetes-preserve-unknown-fields; nullable allows null."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes") and k not in ("nullable", "properties", "items", "default", "format", "description")}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_jsonschema(node["items"])
    return out

def cel_errors(node, value, old, path):
    """Evaluate every x-kubernetes-validations rule where the value has the node; transition
    rules (oldSelf) only where an old value correlates (objects, map-list items by key)."""
    out = []
    if value is None:
        return out
    for rule in node.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        act = {"self": json_to_cel(value)}
        if transition:
            act["oldSelf"] = json_to_cel(old)
        try:
            ok = env.program(env.compile(rule["rule"])).evaluate(act)
        except Exception as exc:  # a rule that does not compile or evaluate is a bug
            out.append(f"{path}: rule {rule['rule']!r} failed to evaluate: {exc}")
            continue
        if not ok:
            out.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for k, sub in node.get("properties", {}).items():
            out += cel_errors(sub, value.get(k), (old or {}).get(k) if isinstance(old, dict) else None, f"{path}.{k}")
    if isinstance(value, list) and "items" in node:
        keys = node.get("x-kubernetes-list-map-keys")
        olds = {tuple(o.get(k) for k in keys): o for o in old or []} if keys and node.get("x-kubernetes-list-type") == "map" else {}
        for i, item in enumerate(value):
            prev = olds.get(tuple(item.get(k) for k in keys)) if keys and isinstance(item, dict) else None
            out += cel_errors(node["items"], item, prev, f"{path}[{i}]")
    return out

validator = jsonschema.Draft7Validator(to_jsonschema(schema))
def problems(obj, old=None):
    found = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    return found + cel_errors(schema, obj, old, "$")

structural(schema)
if example.get("apiVersion") != f"{crd['spec']['group']}/{version['name']}" or example.get("kind") != crd["spec"]["names"]["kind"]:
    errors.append("example: apiVersion/kind do not match the CRD")
if found := problems(example):
    errors.append(f"the example is refused: {found}")

def broken(label, mutate, *, update=False):
    obj = copy.deepcopy(example)
    mutate(obj["spec"])
    found = problems(obj, example if update else None)
    if not found:
        errors.append(f"not refused: {label}")
    return found

spec_q = lambda s: s["queues"][0]
cases = {
    "visibilityTimeout as a string": lambda s: spec_q(s).update(visibilityTimeout="30"),
    "an unknown field (tabels)": lambda s: s.update(tabels=[]),
    "an unknown keyType": lambda s: s["tables"][0]["keySchema"][0].update(keyType="SORT"),
    "two HASH keys": lambda s: s["tables"][1]["keySchema"][1].update(keyType="HASH"),
    "timeToLive enabled without attributeName": lambda s: s["tables"][1]["timeToLive"].pop("attributeName"),
    "fifoQueue on a queue whose name lacks .fifo": lambda s: spec_q(s).update(fifoQueue=True),
    "a FIFO queue subscribed to the topic": lambda s: s["queues"][2].update(subscription={"filterPolicy": {}}),
    "deletionPolicy Orphan": lambda s: s.update(deletionPolicy="Orphan"),
    "a DLQ maxReceiveCount of 0": lambda s: spec_q(s)["deadLetter"].update(maxReceiveCount=0),
    "no topic": lambda s: s.pop("topic"),
}
for label, mutate in cases.items():
    broken(label, mutate)
# transition rules: a table's key and the prefix cannot change; other fields can
found = broken("changing a table's keySchema", lambda s: s["tables"][0]["keySchema"][0].update(attributeName="id"), update=True)
if found and not any("keySchema is immutable" in f for f in found):
    errors.append(f"keySchema change refused for the wrong reason: {found}")
broken("changing resourcePrefix", lambda s: s.update(resourcePrefix="other-"), update=True)
ok = copy.deepcopy(example); ok["spec"]["queues"][0]["visibilityTimeout"] = 60
ok["spec"]["tables"].append({"tableName": "extra", "keySchema": [{"attributeName": "id", "keyType": "HASH"}]})
if found := problems(ok, example):
    errors.append(f"a valid update (visibilityTimeout, a new table) is refused: {found}")

cols = {c["name"].upper(): c for c in version.get("additionalPrinterColumns", [])}
for want in ("READY", "QUEUES", "DLQ", "LAG", "AGE"):
    if want not in cols:
        errors.append(f"no printer column {want}")
for name, col in cols.items():
    path = col["jsonPath"].split("[")[0].lstrip(".").split(".")
    if path[0] == "metadata":
        continue
    node = schema
    for part in path:
        node = node.get("properties", {}).get(part)
        if node is None:
            errors.append(f"printer column {name}: {col['jsonPath']} is not in the schema"); break
if version.get("subresources", {}).get("status") != {}:
    errors.append("no status subresource")
if crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
    errors.append("the CRD must carry helm.sh/resource-policy: keep")
print("\n".join(errors) or f"CRD ok: example valid, {len(cases) + 2} broken resources refused, printer columns {sorted(cols)}")
sys.exit(1 if errors else 0)
PY

run "pulse-operator: one replica, Recreate, liveness, least-privilege RBAC, restricted pod" "$PY" - "$WORK" <<'PY'
import pathlib, sys
import yaml

work = pathlib.Path(sys.argv[1])
errors = []
ALLOWED = {  # (apiGroup, resource) -> verbs the operator may hold; nothing else
    ("pulse.dev", "eventpipelines"): {"get", "list", "watch", "patch"},
    ("pulse.dev", "eventpipelines/status"): {"get", "patch"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}
for scenario in ("operator-default", "operator-clusterwide"):
    docs = [d for d in yaml.safe_load_all((work / f"{scenario}.yaml").read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (dep,) = by_kind.get("Deployment", [None])
    spec = dep["spec"]
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        errors.append(f"{scenario}: the operator must run one replica with strategy Recreate")
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    probe = c.get("livenessProbe", {}).get("httpGet", {})
    if probe.get("path") != "/healthz":
        errors.append(f"{scenario}: no liveness probe on /healthz")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    port = {p["name"]: p["containerPort"] for p in c.get("ports", [])}.get(probe.get("port"))
    if str(port) != env.get("PULSE_HTTP_PORT"):
        errors.append(f"{scenario}: the liveness probe's port {port} is not PULSE_HTTP_PORT {env.get('PULSE_HTTP_PORT')}")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if not (psc.get("runAsNonRoot") and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        errors.append(f"{scenario}: pod security is not restricted")
    if pod.get("serviceAccountName") not in {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])}:
        errors.append(f"{scenario}: the service account is not rendered")
    for kind in ("ClusterRole", "Role"):
        for role in by_kind.get(kind, []):
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        extra = set(rule["verbs"]) - ALLOWED.get((group, res), set())
                        if extra or "*" in res or "*" in group:
                            errors.append(f"{scenario}: {kind} grants {sorted(extra) or rule['verbs']} on {group or 'core'}/{res}")
    cluster_resources = {r for role in by_kind.get("ClusterRole", []) for rule in role["rules"] for r in rule["resources"]}
    if scenario == "operator-default":
        if cluster_resources != {"customresourcedefinitions"}:
            errors.append(f"{scenario}: namespaced mode must hold only CRD discovery cluster-wide, has {sorted(cluster_resources)}")
        if not by_kind.get("Role") or env.get("PULSE_WATCH_NAMESPACE") != "pulse":
            errors.append(f"{scenario}: must watch its own namespace with a Role")
    elif env.get("PULSE_WATCH_NAMESPACE") != "" or "eventpipelines" not in cluster_resources:
        errors.append(f"{scenario}: clusterWide must watch every namespace with a ClusterRole")
print("\n".join(errors) or "operator chart ok")
sys.exit(1 if errors else 0)
PY

run "k8s/iam: least-privilege policies cover every AWS call in each service's code" "$PY" - <<'PY'
import json, pathlib, re, sys

root = pathlib.Path(".")
errors = []
# boto3 method -> IAM action (only the calls Pulse makes; an unknown one is reported below)
ACTIONS = {
    "put_item": "dynamodb:PutItem", "get_item": "dynamodb:GetItem", "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem", "query": "dynamodb:Query", "scan": "dynamodb:Scan",
    "batch_write_item": "dynamodb:BatchWriteItem", "describe_table": "dynamodb:DescribeTable",
    "create_table": "dynamodb:CreateTable", "update_table": "dynamodb:UpdateTable", "delete_table": "dynamodb:DeleteTable",
    "describe_time_to_live": "dynamodb:DescribeTimeToLive", "update_time_to_live": "dynamodb:UpdateTimeToLive",
    "describe_stream": "dynamodb:DescribeStream", "get_shard_iterator": "dynamodb:GetShardIterator",
    "get_records": "dynamodb:GetRecords",
    "publish": "sns:Publish", "publish_batch": "sns:Publish", "create_topic": "sns:CreateTopic",
    "delete_topic": "sns:DeleteTopic", "subscribe": "sns:Subscribe", "unsubscribe": "sns:Unsubscribe",
    "list_topics": "sns:ListTopics", "list_subscriptions_by_topic": "sns:ListSubscriptionsByTopic",
    "get_subscription_attributes": "sns:GetSubscriptionAttributes",
    "set_subscription_attributes": "sns:SetSubscriptionAttributes",
    "receive_message": "sqs:ReceiveMessage", "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage", "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility", "send_message": "sqs:SendMessage",
    "get_queue_url": "sqs:GetQueueUrl", "get_queue_attributes": "sqs:GetQueueAttributes",
    "set_queue_attributes": "sqs:SetQueueAttributes", "create_queue": "sqs:CreateQueue",
    "delete_queue": "sqs:DeleteQueue", "get_parameter": "ssm:GetParameter",
    "get_parameters_by_path": "ssm:GetParametersByPath", "get_metric_statistics": "cloudwatch:GetMetricStatistics",
}
SHARED = {  # library code a service runs
    "fraud-worker": ["libs/pulse/src/pulse/consumer/*.py"], "notify-worker": ["libs/pulse/src/pulse/consumer/*.py"],
    "operator": ["libs/pulse/src/pulse/topology.py"],
}
call = re.compile(r"\.(" + "|".join(sorted(ACTIONS, key=len, reverse=True)) + r")\(|[\"'](" + "|".join(ACTIONS) + r")[\"']")
for svc_dir in sorted(p for p in (root / "services").iterdir() if (p / "src").is_dir()):
    svc = svc_dir.name
    files = [*svc_dir.glob("src/**/*.py"), *(f for g in SHARED.get(svc, []) for f in sorted(root.glob(g)))]
    uses_aws = any("aws_client(" in f.read_text() for f in files)
    needed = {ACTIONS[m] for f in files for a, b in call.findall(f.read_text()) for m in (a or b,)} if uses_aws else set()
    policy_path = root / "k8s/iam" / f"{svc}-policy.json"
    if not policy_path.exists():
        if needed:
            errors.append(f"{svc}: calls AWS ({sorted(needed)}) but k8s/iam/{svc}-policy.json is missing")
        continue
    doc = json.loads(policy_path.read_text())
    if doc.get("Version") != "2012-10-17":
        errors.append(f"{policy_path}: Version must be 2012-10-17")
    granted = set()
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if st.get("Effect") != "Allow" or any("*" in a for a in actions):
            errors.append(f"{policy_path}: {st.get('Sid')}: only Allow statements with exact actions")
        for r in resources:
            if r == "*" and not set(actions) <= {"sns:ListTopics", "cloudwatch:GetMetricStatistics"}:
                errors.append(f"{policy_path}: {st.get('Sid')}: Resource * for {actions}")
            elif r != "*" and ":pulse-" not in r and ":parameter/pulse/" not in r and "/pulse-" not in r:
                errors.append(f"{policy_path}: {st.get('Sid')}: {r} is not scoped to Pulse's resources")
        granted |= set(actions)
    if missing := needed - granted:
        errors.append(f"{svc}: the code calls {sorted(missing)}, not granted by {policy_path}")
print("\n".join(errors) or "IAM policies ok")
sys.exit(1 if errors else 0)
PY

# ---- 5. chart rules on the rendered documents
run "rendered objects follow the chart's rules" "$PY" - "$WORK" <<'PY'
import pathlib, sys
import yaml

work = pathlib.Path(sys.argv[1])
PORTS = {"ingest": 8080, "ws-gateway": 8090, "stream-processor": 9101, "fraud-worker": 9102,
         "notify-worker": 9103}
# The ports each container names: the public services' API ("http") and, where the service
# serves them apart (PULSE_OPS_PORT), the ops routes ("ops"); the workers' one port is "ops".
values = yaml.safe_load(pathlib.Path("charts/pulse/values.yaml").read_text())
defaults = values["defaults"]
def port_names(svc):
    v = {**defaults, **values["services"][svc]}
    if not v["public"]:
        return {"ops": v["port"]}, "ops"
    if v["opsPort"] != v["port"]:
        return {"http": v["port"], "ops": v["opsPort"]}, "ops"
    return {"http": v["port"]}, "http"
COMMON_ENV = {"AWS_REGION", "REDIS_URL", "PULSE_RESOURCE_PREFIX", "PULSE_REDIS_PREFIX",
              "PULSE_LOG_LEVEL"}
LABELS = {"app.kubernetes.io/" + k for k in ("name", "instance", "version", "managed-by",
                                             "component", "part-of")} | {"helm.sh/chart"}
SELECTOR = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
errors = []

def check(cond, msg):
    if not cond:
        errors.append(msg)

for scenario in ("default", "dev-values", "eks-values"):
    path = work / f"{scenario}.yaml"
    if not path.exists():
        errors.append(f"{scenario}: not rendered"); continue
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    config = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pulse-env"), None)
    check(config is not None, f"{scenario}: no ConfigMap pulse-env")
    cm = (config or {}).get("data", {})
    check(COMMON_ENV <= set(cm) | ({"REDIS_URL"} if scenario == "eks-values" else set()),
          f"{scenario}: ConfigMap lacks {COMMON_ENV - set(cm)}")
    for d in docs:
        where = f"{scenario}: {d['kind']}/{d['metadata']['name']}"
        check(LABELS <= set(d["metadata"].get("labels", {})), f"{where}: missing labels {LABELS - set(d['metadata'].get('labels', {}))}")
    for svc, port in PORTS.items():
        name = f"pulse-{svc}"
        dep = kinds.get(("Deployment", name))
        if dep is None:
            errors.append(f"{scenario}: no Deployment {name}"); continue
        for kind in ("Service", "ServiceAccount"):
            check((kind, name) in kinds, f"{scenario}: no {kind} {name}")
        where = f"{scenario}: Deployment/{name}"
        spec = dep["spec"]
        check(set(spec["selector"]["matchLabels"]) == SELECTOR, f"{where}: selector must be name+instance+component")
        pod = spec["template"]["spec"]
        check("checksum/config" in spec["template"]["metadata"].get("annotations", {}), f"{where}: no checksum/config")
        check(pod.get("serviceAccountName") == name, f"{where}: wrong service account")
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              f"{where}: pod must runAsNonRoot with seccomp RuntimeDefault")
        (c,) = pod["containers"]
        sc = c.get("securityContext", {})
        check(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
              and sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: container securityContext not restricted")
        named, ops = port_names(svc)
        check({p["name"]: p["containerPort"] for p in c["ports"]} == named, f"{where}: container ports {c['ports']} != {named}")
        env = {e["name"]: e for e in c.get("env", [])}
        check(env.get("PULSE_HTTP_PORT", {}).get("value") == str(port), f"{where}: PULSE_HTTP_PORT != {port}")
        want_ops = str(named["ops"]) if "http" in named and "ops" in named else None
        check(env.get("PULSE_OPS_PORT", {}).get("value") == want_ops, f"{where}: PULSE_OPS_PORT must be {want_ops}")
        for kind in ("liveness", "readiness", "startup"):
            got = c.get(f"{kind}Probe", {}).get("httpGet", {}).get("port")
            check(got == ops, f"{where}: the {kind} probe must use port {ops!r} (the ops routes), not {got!r}")
        if svc == "stream-processor":
            check(env.get("PULSE_WORKER_ID", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}},
                  f"{where}: PULSE_WORKER_ID must be the pod's name (downward API): two replicas must never share a lease owner id")
        if svc == "ws-gateway":
            check("secretKeyRef" in env.get("PULSE_JWT_SECRET", {}).get("valueFrom", {}), f"{where}: PULSE_JWT_SECRET must come from a Secret")
        check({"configMapRef": {"name": "pulse-env"}} in c.get("envFrom", []), f"{where}: no envFrom pulse-env")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{where}: liveness must GET /healthz")
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{where}: readiness must GET /readyz")
        check({"name": "tmp", "mountPath": "/tmp"} in c.get("volumeMounts", []) and
              any(v["name"] == "tmp" and "emptyDir" in v for v in pod.get("volumes", [])), f"{where}: no emptyDir at /tmp")
        check("requests" in c.get("resources", {}) and "limits" in c.get("resources", {}), f"{where}: requests and limits")
        svc_obj = kinds.get(("Service", name), {"spec": {"ports": [{}]}})
        check(svc_obj["spec"]["ports"][0].get("port") == port, f"{scenario}: Service/{name} port != {port}")
        check({p.get("name"): p.get("port") for p in svc_obj["spec"]["ports"]} == named, f"{scenario}: Service/{name} ports != {named}")
        has_pdb = ("PodDisruptionBudget", name) in kinds
        hpa, scaled = kinds.get(("HorizontalPodAutoscaler", name)), kinds.get(("ScaledObject", name))
        if hpa or scaled:
            check("replicas" not in spec, f"{where}: an autoscaler owns the count, so no replicas")
            least = hpa["spec"]["minReplicas"] if hpa else scaled["spec"]["minReplicaCount"]
        else:
            least = spec["replicas"]
        check(has_pdb == (least > 1), f"{where}: PDB must exist exactly when (minimum) replicas > 1")
        role = kinds.get(("ServiceAccount", name), {}).get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn")
        if scenario == "eks-values":
            # a role exactly where k8s/iam has a policy (the services that call AWS), named as
            # k8s/iam/README.md creates it: arn:aws:iam::<aws.accountId>:role/pulse-<service>
            eks_values = yaml.safe_load(pathlib.Path("charts/pulse/ci/eks-values.yaml").read_text())
            want_role = f"arn:aws:iam::{eks_values['aws']['accountId']}:role/pulse-{svc}"
            if pathlib.Path(f"k8s/iam/{svc}-policy.json").exists():
                check(role == want_role, f"{scenario}: ServiceAccount/{name} IRSA role {role!r}, want {want_role!r}")
            else:
                check(role is None, f"{scenario}: ServiceAccount/{name} has IRSA role {role!r}, but {svc} calls no AWS API (no k8s/iam policy)")
        else:
            check(role is None, f"{scenario}: ServiceAccount/{name} has an IRSA role outside eks")
    if scenario == "dev-values":
        check(cm.get("AWS_ENDPOINT_URL") == "http://pulse-localstack:4566", f"{scenario}: AWS_ENDPOINT_URL must be the in-cluster LocalStack")
        check(cm.get("REDIS_URL") == "redis://pulse-redis:6379/0", f"{scenario}: REDIS_URL must be the in-cluster Redis")
        for dep in ("pulse-localstack", "pulse-redis"):
            check(("Deployment", dep) in kinds and ("Service", dep) in kinds, f"{scenario}: no {dep}")
        check(any(k == "Job" for k, _ in kinds), f"{scenario}: no topology Job")
        check(("Secret", "pulse-aws") in kinds, f"{scenario}: no Secret with the emulator's keys")
    if scenario == "eks-values":
        for svc in PORTS:
            dep = kinds.get(("Deployment", f"pulse-{svc}"))
            env_from = dep["spec"]["template"]["spec"]["containers"][0].get("envFrom", []) if dep else []
            check(env_from[1:2] == [{"configMapRef": {"name": "pulse-outputs", "optional": True}}],
                  f"{scenario}: {svc} must mount the operator's outputs ConfigMap after pulse-env")
        check("AWS_ENDPOINT_URL" not in cm, f"{scenario}: no AWS_ENDPOINT_URL on real AWS")
        check(cm.get("REDIS_URL", "").startswith("rediss://"), f"{scenario}: REDIS_URL must be the ElastiCache (TLS) URL")
        check(("Secret", "pulse-aws") not in kinds, f"{scenario}: no static AWS keys on EKS")
        check(not any(n in ("pulse-localstack", "pulse-redis") for _, n in kinds), f"{scenario}: no dev dependencies on EKS")
# a separate ops port only where the code serves one (pulse.service.serving_api), else the
# probes would fail in the cluster
values = yaml.safe_load(pathlib.Path("charts/pulse/values.yaml").read_text())
for svc in values["services"]:
    named, _ = port_names(svc)
    if "http" in named and "ops" in named:
        code = " ".join(f.read_text() for f in pathlib.Path("services", svc, "src").rglob("*.py"))
        check("serving_api(" in code, f"values: {svc} has opsPort {named['ops']} != port, but services/{svc}/src never calls pulse.service.serving_api")
print("\n".join(errors) or "rendered objects ok")
sys.exit(1 if errors else 0)
PY

# ---- 5b. autoscaling, monitoring, dashboards, network policies, helm test
run "eks values: HPAs, KEDA triggers, monitors, alerts, dashboards, NetworkPolicies, helm test" "$PY" - "$WORK" <<'PY'
import json, pathlib, sys
import yaml

work = pathlib.Path(sys.argv[1])
errors = []
check = lambda cond, msg: cond or errors.append(msg)
docs = [d for d in yaml.safe_load_all((work / "eks-values.yaml").read_text()) if d]
kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
for svc in ("ingest", "ws-gateway"):
    hpa = kinds.get(("HorizontalPodAutoscaler", f"pulse-{svc}"))
    check(hpa and hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"pulse-{svc}"},
          f"HPA for {svc} missing or aimed elsewhere")
    check(("ServiceMonitor", f"pulse-{svc}") in kinds, f"no ServiceMonitor for {svc}")
    check(("PodDisruptionBudget", f"pulse-{svc}") in kinds, f"no PDB for {svc}")
for svc, trigger, key, want in (("fraud-worker", "aws-sqs-queue", "queueURL", "https://sqs.eu-west-1.amazonaws.com/111122223333/pulse-prod-fraud"),
                                ("notify-worker", "aws-sqs-queue", "queueURL", "https://sqs.eu-west-1.amazonaws.com/111122223333/pulse-prod-notify"),
                                ("stream-processor", "aws-dynamodb-streams", "tableName", "pulse-prod-payments")):
    so = kinds.get(("ScaledObject", f"pulse-{svc}"))
    if not so:
        errors.append(f"no ScaledObject for {svc}"); continue
    (t,) = so["spec"]["triggers"]
    check(t["type"] == trigger and t["metadata"].get(key) == want, f"{svc}: trigger {t['type']} {t['metadata'].get(key)} != {trigger} {want}")
    check(so["spec"]["scaleTargetRef"]["name"] == f"pulse-{svc}", f"{svc}: ScaledObject targets another Deployment")
    check(all(isinstance(v, str) for v in t["metadata"].values()), f"{svc}: KEDA trigger metadata values must be strings")
    auth = kinds.get(("TriggerAuthentication", t["authenticationRef"]["name"]), {}).get("spec", {})
    check(auth.get("podIdentity", {}).get("provider") == "aws", f"{svc}: on EKS KEDA must use the workload's IRSA identity")
    check(("PodMonitor", f"pulse-{svc}") in kinds, f"no PodMonitor for {svc}")
for svc in ("ingest", "ws-gateway"):
    ing = kinds.get(("Ingress", f"pulse-{svc}"))
    if not ing:
        errors.append(f"no Ingress for {svc}"); continue
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    check(backend == {"name": f"pulse-{svc}", "port": {"name": "http"}}, f"Ingress {svc}: backend {backend}")
    check(ing["spec"].get("tls"), f"Ingress {svc}: no TLS on EKS")
gw = kinds.get(("Ingress", "pulse-ws-gateway"), {"metadata": {}})["metadata"].get("annotations", {})
check(int(gw.get("nginx.ingress.kubernetes.io/proxy-read-timeout", 0)) >= 3600, "gateway Ingress: WebSockets need a long read timeout")
gw_dep = kinds.get(("Deployment", "pulse-ws-gateway"), {"spec": {"template": {"spec": {}}}})["spec"]["template"]["spec"]
pre = gw_dep.get("containers", [{}])[0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
check(pre > 0 and gw_dep.get("terminationGracePeriodSeconds", 0) > pre, "gateway: a preStop pause and a grace period longer than it, to drain")
so = kinds.get(("ScaledObject", "pulse-stream-processor"), {"spec": {"triggers": [{"metadata": {}}]}})
check(so["spec"]["triggers"][0]["metadata"].get("shardCount") == "1", "stream processor: at most one replica per shard (shardCount 1)")
for d in docs:
    if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        check(d["metadata"]["labels"].get("release") == "kube-prometheus-stack", f"{d['kind']}/{d['metadata']['name']}: no release label")
# metrics, probes and Prometheus' NetworkPolicy rule all on the ops port; the API's rule not on it
def ops_port_of(name):
    dep = kinds.get(("Deployment", name))
    return dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] if dep else None
for d in docs:
    name = d["metadata"]["name"]
    if d["kind"] in ("ServiceMonitor", "PodMonitor"):
        eps = d["spec"].get("endpoints") or d["spec"].get("podMetricsEndpoints") or [{}]
        check([e.get("port") for e in eps] == [ops_port_of(name)], f"{d['kind']}/{name}: must scrape the ops port {ops_port_of(name)!r}, not {[e.get('port') for e in eps]}")
    if d["kind"] == "NetworkPolicy" and ("Deployment", name) in kinds:
        for rule in d["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            from_prometheus = any("namespaceSelector" in f and f["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name") == "monitoring" for f in rule.get("from", []))
            open_to_pods = any(f == {"podSelector": {}} for f in rule.get("from", []))
            if from_prometheus:
                check(ops_port_of(name) in ports, f"NetworkPolicy {name}: Prometheus must reach the ops port")
            if open_to_pods and ops_port_of(name) == "ops":
                check("ops" not in ports, f"NetworkPolicy {name}: the ops port must not be open to every pod")
rules = [r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
alerts = {r["alert"] for r in rules}
for want in ("PulseDeadLetterQueueNotEmpty", "PulseStreamLagHigh", "PulseHttpErrorRatioHigh"):
    check(want in alerts, f"no alert {want}")
dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
check(dashboards, "no ConfigMap labelled grafana_dashboard: \"1\"")
for cm in dashboards:
    for key, text in cm["data"].items():
        try:
            json.loads(text)
        except ValueError as exc:
            errors.append(f"ConfigMap/{cm['metadata']['name']}: {key} is not JSON after rendering: {exc}")
nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
deny = [n for n in nps if n["metadata"]["name"].endswith("-default-deny")]
check(deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "no default-deny NetworkPolicy")
for svc in ("ingest", "ws-gateway", "stream-processor", "fraud-worker", "notify-worker"):
    np = kinds.get(("NetworkPolicy", f"pulse-{svc}"))
    if not np:
        errors.append(f"no NetworkPolicy for {svc}"); continue
    ports = {p.get("port") for e in np["spec"].get("egress", []) for p in e.get("ports", [])}
    check({53, 443, 6379} <= ports, f"NetworkPolicy {svc}: egress must allow DNS, AWS and Redis, has {ports}")
tests = [d for d in docs if d["kind"] == "Job" and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
check(len(tests) == 1, "no helm test Job")
for job in tests:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    (work / "helm-test.py").write_text(c["args"][0])
    env = {e["name"] for e in c["env"]}
    check({"INGEST_URL", "GATEWAY_URL", "PULSE_JWT_SECRET"} <= env, f"helm test env lacks {sorted({'INGEST_URL', 'GATEWAY_URL', 'PULSE_JWT_SECRET'} - env)}")
    check(c["securityContext"].get("readOnlyRootFilesystem") is True, "helm test container must be restricted too")
print("\n".join(errors) or f"features ok: {len(alerts)} alerts, {len(dashboards)} dashboard(s), {len(nps)} NetworkPolicies")
sys.exit(1 if errors else 0)
PY

refuses_without_crds() { # --set expression, API the message must name
    local out
    if out="$("$HELM" template pulse "$CHART" -f "$CHART/ci/dev-values.yaml" --set "$1" 2>&1)"; then
        echo "rendered $1 without the $2 CRD; it must fail"; return 1
    fi
    grep -q "does not serve $2" <<<"$out" || { echo "failed, but not for the missing CRD: $out"; return 1; }
}
run "monitoring.enabled without Prometheus Operator CRDs fails the render" refuses_without_crds monitoring.enabled=true monitoring.coreos.com/v1
run "keda.enabled without KEDA's CRDs fails the render" refuses_without_crds services.fraud-worker.keda.enabled=true keda.sh/v1alpha1/ScaledObject

REPO_PY="$ROOT/.venv/bin/python"
metric_names() { "$REPO_PY" - <<'PY'
import sys
sys.path.insert(0, "scripts")
from metric_registry import REGISTRY, load_every_metric
load_every_metric()
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"],
            "info": ["_info"], "gauge": [""], "stateset": [""], "enum": [""], "unknown": [""]}
names = set()
for metric in REGISTRY.collect():
    if metric.name.startswith("pulse_"):
        names.update(metric.name + s for s in SUFFIXES.get(metric.type, [""]))
print("\n".join(sorted(names)))
PY
}
dashboards_use_real_metrics() {
    [[ -x "$REPO_PY" ]] || { echo "$REPO_PY is missing: run make sync"; return 1; }
    metric_names >"$WORK/metrics.txt" || return 1
    "$PY" - "$WORK/metrics.txt" "$WORK/eks-values.yaml" <<'PY'
import json, pathlib, re, sys
import yaml

exposed = set(pathlib.Path(sys.argv[1]).read_text().split())
errors = []
metric = re.compile(r"\bpulse_[a-z0-9_]+")
def names_in(expr):
    return set(metric.findall(expr))
for path in sorted(pathlib.Path("charts/pulse/dashboards").glob("*.json")):
    dash = json.loads(path.read_text())
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if not {"namespace", "service"} <= variables:
        errors.append(f"{path}: needs namespace and service variables, has {sorted(variables)}")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        for name in names_in(q["query"] if isinstance(q, dict) else q or ""):
            if name not in exposed:
                errors.append(f"{path}: variable {v['name']} uses {name}, which no service exposes")
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    for svc in ("ingest", "ws-gateway", "stream-processor", "fraud-worker", "notify-worker"):
        if not any(r.startswith(svc) for r in rows):
            errors.append(f"{path}: no RED row for {svc}")
    if not any("Saturation" in r for r in rows):
        errors.append(f"{path}: no saturation row")
    for p in panels:
        for t in p.get("targets", []):
            used = names_in(t["expr"])
            if not used:
                errors.append(f"{path}: panel {p['title']!r} queries no pulse_ metric")
            for name in used - exposed:
                errors.append(f"{path}: panel {p['title']!r} uses {name}, which no service exposes")
docs = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[2]).read_text()) if d]
for d in docs:
    if d["kind"] == "PrometheusRule":
        for g in d["spec"]["groups"]:
            for r in g["rules"]:
                for name in names_in(r["expr"]) - exposed:
                    errors.append(f"alert {r.get('alert')}: uses {name}, which no service exposes")
print("\n".join(errors) or f"dashboards and alerts use only the {len(exposed)} exposed pulse_ series")
sys.exit(1 if errors else 0)
PY
}
run "dashboard JSON parses; every panel and alert metric is exposed by some service" dashboards_use_real_metrics
metrics_follow_the_rules() { # ../shared/KUBERNETES.md: prefix, base units, latency histograms, bounded labels
    [[ -x "$REPO_PY" ]] || { echo "$REPO_PY is missing: run make sync"; return 1; }
    "$REPO_PY" - <<'PY'
import re, sys
sys.path.insert(0, "scripts")
from metric_registry import REGISTRY, load_every_metric
load_every_metric()
# ids of payments, users, connections, events, traces or endpoints make unbounded series
ID_LABELS = {"payment_id", "event_id", "trace_id", "account_id", "user", "user_id", "sub", "connection_id",
             "endpoint_id", "merchant_id", "message_id", "id", "url", "path", "channel"}
NOT_BASE = re.compile(r"_(milli|micro|nano)?(seconds_ms|ms|us|ns|milliseconds|microseconds|nanoseconds|minutes|hours|days|kb|mb|gb|kilobytes|megabytes|percent)(_|$)")
errors, names = [], []
for collector in list(REGISTRY._collector_to_names):  # prometheus_client keeps no public list
    name, kind = getattr(collector, "_name", None), getattr(collector, "_type", None)
    if name is None:
        continue  # the process, platform and GC collectors prometheus_client registers itself
    names.append(name)
    labels = set(getattr(collector, "_labelnames", ()))
    if not name.startswith("pulse_"):
        errors.append(f"{name}: not prefixed pulse_")
    if NOT_BASE.search(name):
        errors.append(f"{name}: not in base units (seconds, bytes, ratios)")
    if re.search(r"(duration|latency|_age|_time)", name) and kind in ("histogram", "gauge", "summary") \
            and not name.endswith(("_seconds", "_timestamp_seconds")):
        errors.append(f"{name}: a time must be in seconds (…_seconds)")
    if re.search(r"(duration|latency)", name) and kind != "histogram":
        errors.append(f"{name}: latency is a histogram, not a {kind}")
    if labels & ID_LABELS:
        errors.append(f"{name}: unbounded label(s) {sorted(labels & ID_LABELS)}")
if "pulse_build" not in names:
    errors.append("no pulse_build_info")
for want in ("pulse_http_request_duration_seconds", "pulse_message_processing_duration_seconds", "pulse_message_age_seconds",
             "pulse_stage_received", "pulse_stage_in_progress", "pulse_stage_processed",
             "pulse_stage_last_processed_timestamp_seconds", "pulse_stream_iterator_age_seconds",
             "pulse_ws_connections", "pulse_ws_messages_sent"):
    if want not in names:
        errors.append(f"KUBERNETES.md's {want} is not registered")
print("\n".join(errors) or f"{len(names)} pulse_ metrics: prefix, base units, latency histograms, bounded labels")
sys.exit(1 if errors else 0)
PY
}
run "metric names follow KUBERNETES.md (pulse_ prefix, base units, latency histograms, bounded labels)" metrics_follow_the_rules
helm_test_script_compiles() {
    "$REPO_PY" -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$WORK/helm-test.py" &&
    "$REPO_PY" -c 'from websockets.sync.client import connect; from pulse.auth import issue_token; import inspect
assert {"sub", "roles", "ttl_seconds"} <= set(inspect.signature(issue_token).parameters)'
}
run "helm test script parses and its imports exist in the gateway's environment" helm_test_script_compiles

# ---- 6. the values schema refuses typos
refuses() { # --set expression
    local out
    if out="$("$HELM" template pulse "$CHART" --set "$1" 2>&1)"; then
        echo "helm template --set $1 succeeded; the schema must refuse it"; return 1
    fi
    grep -q "schema" <<<"$out" || { echo "refused, but not by the schema: $out"; return 1; }
}
for typo in "services.ingest.replicaz=2" "services.ingestt.replicas=1" "defaults.probes.liveness.pat=/x" \
            "aws.regoin=eu-west-1" "logging.level=verbose" "services.ws-gateway.port=http"; do
    run "schema refuses --set $typo" refuses "$typo"
done
accepts_override() {
    "$HELM" template pulse "$CHART" --set services.ingest.replicas=0 --set-string services.fraud-worker.env.PULSE_X=1 \
        | grep -q 'name: PULSE_X'
}
run "schema accepts a valid override (replicas=0, env)" accepts_override

# ---- 7. skaffold.yaml (one module per service) and k8s/
# No skaffold binary ships in a package registry reachable here (PyPI/npm hold only unrelated
# names), so `skaffold diagnose`/`render` cannot run: this section checks statically what they
# would, and renders each module's Helm release the way Skaffold's helm deployer calls Helm.
run "skaffold.yaml: one named module per service, requires resolve, artifacts, sync, profiles" "$PY" - <<'PY'
import copy, pathlib, re, sys
import yaml

root = pathlib.Path(".")
errors = []
cfgs = list(yaml.safe_load_all((root / "skaffold.yaml").read_text()))
services = list(yaml.safe_load((root / "charts/pulse/values.yaml").read_text())["services"])
BASE = "pulse-base"
modules = {}
for i, cfg in enumerate(cfgs):
    if cfg.get("apiVersion") != "skaffold/v4beta13" or cfg.get("kind") != "Config":
        errors.append(f"skaffold.yaml document {i}: apiVersion must be skaffold/v4beta13, kind Config")
    name = (cfg.get("metadata") or {}).get("name")
    if not name:
        errors.append(f"skaffold.yaml document {i}: no metadata.name, so `skaffold dev -m` cannot select it")
    elif name in modules:
        errors.append(f"skaffold.yaml: two modules named {name}")
    modules[name] = cfg
want = {BASE, "operator", *services}
if set(modules) != want:
    errors.append(f"skaffold.yaml modules {sorted(m for m in modules if m)} != {sorted(want)} (pulse-base, the operator, one per service)")

# requires: same file, names that exist, no cycle; every module but the base needs the base
def requires(name):
    out = []
    for req in modules.get(name, {}).get("requires", []):
        if set(req) - {"configs", "activeProfiles"}:
            errors.append(f"module {name}: requires {req}: only configs in this file (no path, git or GCS)")
        for dep in req.get("configs", []):
            if dep not in modules:
                errors.append(f"module {name}: requires {dep}, which is no module")
            else:
                out.append(dep)
    return out
def closure(name, seen=()):
    if name in seen:
        errors.append(f"module {name}: requires itself through {' -> '.join(seen)}"); return set()
    return {name}.union(*[closure(d, (*seen, name)) for d in requires(name)])
for name in modules:
    deps = closure(name)
    if name != BASE and BASE not in deps:
        errors.append(f"module {name}: must require {BASE} (the shared ConfigMap, Secrets, dev LocalStack and Redis)")
if modules.get(BASE, {}).get("requires") or modules.get(BASE, {}).get("build", {}).get("artifacts"):
    errors.append(f"module {BASE}: must stand alone (no requires) and build no image")

# artifacts: each module builds only its own image, from the root, with a Dockerfile that exists
images = {}
for name, cfg in modules.items():
    arts = cfg.get("build", {}).get("artifacts", [])
    if name != BASE and [a.get("image") for a in arts] != [f"pulse/{name}"]:
        errors.append(f"module {name}: must build exactly pulse/{name}, builds {[a.get('image') for a in arts]}")
    for a in arts:
        image, svc = a["image"], a["image"].rsplit("/", 1)[-1]
        if image in images:
            errors.append(f"{image}: built by modules {images[image]} and {name}")
        images[image] = name
        if a.get("context", ".") != ".":
            errors.append(f"{image}: must build from the repository root")
        dockerfile = a.get("docker", {}).get("dockerfile", "")
        if dockerfile != f"services/{svc}/Dockerfile" or not (root / dockerfile).is_file():
            errors.append(f"{image}: dockerfile {dockerfile!r} must be services/{svc}/Dockerfile and exist")
            continue
        dev_dests = set(re.findall(r"^COPY --chown=10001:10001 \S+ (\S+)$", (root / dockerfile).read_text(), re.M))
        rules = a.get("sync", {}).get("manual", [])
        if {r["dest"] for r in rules} != dev_dests or not dev_dests:
            errors.append(f"{image}: sync destinations {sorted(r['dest'] for r in rules)} != the dev stage's sources {sorted(dev_dests)}")
        for r in rules:
            if not r["src"].endswith("**/*.py") or not list(root.glob(r["src"])):
                errors.append(f"{image}: sync src {r['src']} matches no Python file")
            if not r["src"].startswith(r.get("strip", "\0")) or r["dest"] != "/app/src/" + r["strip"].rstrip("/"):
                errors.append(f"{image}: sync {r['src']} -> {r['dest']} strips {r.get('strip')!r}: the path would not match the dev image's")

# releases: unique names, charts exist, images only from the module's own artifacts
releases = {}
for name, cfg in modules.items():
    own = {re.sub(r"[/\-.]", "_", a["image"]) for a in cfg.get("build", {}).get("artifacts", [])}
    for r in cfg.get("deploy", {}).get("helm", {}).get("releases", []):
        if r["name"] in releases:
            errors.append(f"release {r['name']}: deployed by modules {releases[r['name']][0]} and {name}")
        releases[r["name"]] = (name, r)
        if not (root / r["chartPath"] / "Chart.yaml").exists():
            errors.append(f"release {r['name']}: no chart at {r['chartPath']}")
        for key, tpl in r.get("setValueTemplates", {}).items():
            for ref in re.findall(r"\{\{\s*\.IMAGE_(?:REPO|TAG|FULLY_QUALIFIED)_(\w+)\s*\}\}", tpl):
                if ref not in own:
                    errors.append(f"release {r['name']}: {key} uses image {ref}, which module {name} does not build")
        if r["chartPath"] == "charts/pulse":
            ov = r.get("overrides", {})
            if ov.get("instance") != "pulse":
                errors.append(f"release {r['name']}: overrides.instance must be pulse (one Pulse across releases)")
            want_scope = {"shared": True, "services": []} if name == BASE else {"shared": False, "services": [name]}
            if ov.get("scope") != want_scope:
                errors.append(f"release {r['name']}: overrides.scope {ov.get('scope')} != {want_scope}")
    if name in services:
        rel = [r for r in cfg.get("deploy", {}).get("helm", {}).get("releases", [])]
        key = re.sub(r"[/\-.]", "_", f"pulse/{name}")
        tpls = rel[0].get("setValueTemplates", {}) if len(rel) == 1 else {}
        for field, var in (("repository", "IMAGE_REPO_"), ("tag", "IMAGE_TAG_")):
            got, want_tpl = tpls.get(f"services.{name}.image.{field}"), "{{." + var + key + "}}"
            if got != want_tpl:
                errors.append(f"module {name}: setValueTemplates services.{name}.image.{field} = {got!r}, want {want_tpl!r}")
op_tpls = releases.get("pulse-operator", (None, {}))[1].get("setValueTemplates", {})
if op_tpls != {"image.repository": "{{.IMAGE_REPO_pulse_operator}}", "image.tag": "{{.IMAGE_TAG_pulse_operator}}"}:
    errors.append(f"release pulse-operator: setValueTemplates {op_tpls}")
if releases.get("pulse-crds", (None,))[0] != BASE:
    errors.append(f"the CRD release pulse-crds must be in {BASE}")

# profiles: kind/minikube/eks in every module; patches address the module's own lists
for name, cfg in modules.items():
    profiles = {p["name"]: p for p in cfg.get("profiles", [])}
    arts = cfg.get("build", {}).get("artifacts", [])
    rels = cfg.get("deploy", {}).get("helm", {}).get("releases", [])
    for pname in ("kind", "minikube", "eks"):
        if pname not in profiles:
            errors.append(f"module {name}: no {pname} profile"); continue
        targets, relaxed = {}, False
        for patch in profiles[pname].get("patches", []):
            path, value = patch["path"], patch.get("value")
            if m := re.fullmatch(r"/build/artifacts/(\d+)/docker/target", path):
                targets[int(m.group(1))] = value
            if (m := re.fullmatch(r"/build/artifacts/(\d+)/.*", path)) and int(m.group(1)) >= len(arts):
                errors.append(f"module {name} profile {pname}: {path} names no artifact of this module")
            if (m := re.fullmatch(r"/deploy/helm/releases/(\d+)(/.*)?", path)) and int(m.group(1)) >= len(rels):
                errors.append(f"module {name} profile {pname}: {path} names no release of this module")
            for f in value if isinstance(value, list) else []:
                if isinstance(f, str) and f.endswith(".yaml"):
                    if not (root / f).exists():
                        errors.append(f"module {name} profile {pname}: {f} does not exist")
                    elif set(yaml.safe_load((root / f).read_text()) or {}) & {"instance", "scope"}:
                        errors.append(f"{f}: must not set instance or scope (the modules' overrides own them)")
            flat = path + " " + str(value)
            if "readOnlyRootFilesystem" in flat and "false" in flat:
                relaxed = True
        if pname == "eks" and targets:
            errors.append(f"module {name}: profile eks must build the runtime (default) target")
        if pname != "eks":
            if targets != {i: "dev" for i in range(len(arts))}:
                errors.append(f"module {name} profile {pname}: every artifact must build the dev target, got {targets}")
            if arts and not relaxed:
                errors.append(f"module {name} profile {pname}: sync needs a writable /app/src (readOnlyRootFilesystem false in dev)")
    contexts = {p: [a.get("kubeContext") for a in profiles.get(p, {}).get("activation", [])] for p in ("kind", "minikube", "eks")}
    if contexts != {"kind": ["kind-.*"], "minikube": ["minikube"], "eks": ["arn:aws:eks:.*"]}:
        errors.append(f"module {name}: profiles must activate on kubeContext kind-.*, minikube, arn:aws:eks:.* (got {contexts})")

# one shape for the five service modules: equal once the name is a placeholder (port-forwards aside)
def shape(name):
    cfg = copy.deepcopy(modules[name]); cfg.pop("portForward", None)
    text = yaml.safe_dump(cfg, sort_keys=True)
    return text.replace("pulse_" + name.replace("-", "_"), "pulse_@KEY@").replace(name, "@SVC@")
shapes = {s: shape(s) for s in services if s in modules}
if len(set(shapes.values())) > 1:
    ref = services[0]
    errors.append(f"service modules drift from {ref}'s shape: {[s for s, t in shapes.items() if t != shapes[ref]]}")

forwards = {(p["resourceName"], p["port"]) for cfg in modules.values() for p in cfg.get("portForward", [])}
forwards |= {(p["value"]["resourceName"], p["value"]["port"]) for cfg in modules.values() for prof in cfg.get("profiles", [])
             if prof["name"] == "kind" for p in prof.get("patches", []) if p["path"] == "/portForward/-"}
for want_fwd in (("pulse-ingest", 8080), ("pulse-ws-gateway", 8090), ("kube-prometheus-stack-grafana", 80), ("pulse-localstack", 4566)):
    if want_fwd not in forwards:
        errors.append(f"skaffold.yaml: no portForward for {want_fwd}")
for name, port in (("ingest", 8080), ("ws-gateway", 8090)):
    if (f"pulse-{name}", port) not in {(p["resourceName"], p["port"]) for p in modules.get(name, {}).get("portForward", [])}:
        errors.append(f"module {name}: its own portForward for pulse-{name}:{port} (so -m {name} forwards it)")
kind = yaml.safe_load((root / "k8s/kind-cluster.yaml").read_text())
if kind.get("kind") != "Cluster" or not kind.get("apiVersion", "").startswith("kind.x-k8s.io/"):
    errors.append("k8s/kind-cluster.yaml: not a kind Cluster config")
print("\n".join(errors) or f"skaffold: modules {sorted(modules)}, {len(images)} artifacts with sync, {len(releases)} releases")
sys.exit(1 if errors else 0)
PY

# Render every module's Helm release as Skaffold would (its valuesFiles after the profile's
# patches, its overrides, setValues and setValueTemplates with stand-in image names), alone and
# all together, for the dev (kind) and eks profiles.
skaffold_releases_render() { # profile
    "$PY" - "$1" "$HELM" "$WORK" "$KUBE_VERSION" "${API_VERSIONS[@]}" <<'PY'
import collections, pathlib, re, subprocess, sys
import yaml

profile, helm, work, kube = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
api_versions = sys.argv[5:]
errors = []
cfgs = {c["metadata"]["name"]: c for c in yaml.safe_load_all(pathlib.Path("skaffold.yaml").read_text())}
services = list(yaml.safe_load(pathlib.Path("charts/pulse/values.yaml").read_text())["services"])

def apply_patches(cfg):
    """The module after its profile's JSON patches (Skaffold's profile activation)."""
    for prof in cfg.get("profiles", []):
        if prof["name"] != profile:
            continue
        for p in prof.get("patches", []):
            if p.get("op", "add") != "add":
                raise SystemExit(f"unsupported patch op {p['op']}")
            *parents, last = p["path"].strip("/").split("/")
            node = cfg
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), p["value"])
            else:
                node[last] = p["value"]
    return cfg

def render(release):
    args = [helm, "template", release["name"], release["chartPath"], "--namespace", "pulse", "--kube-version", kube, *api_versions]
    for f in release.get("valuesFiles", []):
        args += ["-f", f]
    if "overrides" in release:
        path = work / f"skaffold-{release['name']}-overrides.yaml"
        path.write_text(yaml.safe_dump(release["overrides"]))
        args += ["-f", str(path)]
    for k, v in release.get("setValues", {}).items():
        args += ["--set", f"{k}={v}"]
    for k, v in release.get("setValueTemplates", {}).items():
        v = re.sub(r"\{\{\.IMAGE_REPO_(\w+)\}\}", r"registry.test/\1", v)
        v = re.sub(r"\{\{\.IMAGE_TAG_(\w+)\}\}", "skaffold-tag", v)
        args += ["--set", f"{k}={v}"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        errors.append(f"{profile}: helm template {release['name']} failed: {out.stderr.strip()[-600:]}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]

SHARED_KINDS = {"ConfigMap", "Secret", "Deployment", "Service", "PrometheusRule", "NetworkPolicy"}
everything, owners, text = [], collections.defaultdict(list), []
for name, cfg in cfgs.items():
    cfg = apply_patches(cfg)
    for release in cfg.get("deploy", {}).get("helm", {}).get("releases", []):
        docs = render(release)
        text.append(yaml.safe_dump_all(docs))
        for d in docs:
            owners[(d["kind"], d["metadata"]["name"])].append(release["name"])
            everything.append(d)
        components = {d["metadata"].get("labels", {}).get("app.kubernetes.io/component") for d in docs}
        workloads = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
        if name in services:
            # only its own objects, plus the topology Job it runs (dev) and, for the gateway, helm test
            extra = components - {name, "topology", "test" if name == "ws-gateway" else name}
            if extra:
                errors.append(f"{profile}: release {release['name']} renders objects of {sorted(extra)}, not only {name}'s")
            if workloads != {f"pulse-{name}"}:
                errors.append(f"{profile}: release {release['name']} must deploy pulse-{name} alone, deploys {sorted(workloads)}")
            images = {c["image"] for d in docs if d["kind"] in ("Deployment", "Job") for c in d["spec"]["template"]["spec"]["containers"]}
            if images != {f"registry.test/pulse_{name.replace('-', '_')}:skaffold-tag"}:
                errors.append(f"{profile}: release {release['name']} runs images {sorted(images)}, not only the one Skaffold built")
        elif release["chartPath"] == "charts/pulse":
            if components & set(services):
                errors.append(f"{profile}: release {release['name']} (shared) renders service objects {sorted(components & set(services))}")
            if not {("ConfigMap", "pulse-env")} <= {(d["kind"], d["metadata"]["name"]) for d in docs}:
                errors.append(f"{profile}: release {release['name']} lacks the shared ConfigMap pulse-env")
for key, rels in owners.items():
    if len(rels) > 1:
        errors.append(f"{profile}: {key[0]}/{key[1]} is rendered by releases {rels}: Helm would refuse the second")
deployed = {d["metadata"]["name"] for d in everything if d["kind"] == "Deployment"}
want = {f"pulse-{s}" for s in services} | {"pulse-operator"}
if not want <= deployed:
    errors.append(f"{profile}: all modules together lack {sorted(want - deployed)}")
# every reference between releases resolves: envFrom ConfigMaps/Secrets, secretKeyRefs, Services
names = {(d["kind"], d["metadata"]["name"]) for d in everything}
external = {"pulse-outputs", "pulse-jwt"}  # the operator's outputs (optional), the EKS JWT Secret made apart
for d in everything:
    if d["kind"] not in ("Deployment", "Job"):
        continue
    for c in d["spec"]["template"]["spec"]["containers"]:
        for ref in c.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in ref and (kind, ref[key]["name"]) not in names and ref[key]["name"] not in external:
                    errors.append(f"{profile}: {d['kind']}/{d['metadata']['name']} reads {kind}/{ref[key]['name']}, which no release renders")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ("Secret", ref["name"]) not in names and ref["name"] not in external:
                errors.append(f"{profile}: {d['metadata']['name']} reads Secret/{ref['name']}, which no release renders")
(work / f"skaffold-{profile}.yaml").write_text("---\n".join(text))
print("\n".join(errors) or f"{profile}: {len(owners)} objects from {sum(len(c.get('deploy', {}).get('helm', {}).get('releases', [])) for c in cfgs.values())} releases, each once; each service's release holds only its workload")
sys.exit(1 if errors else 0)
PY
}
run "skaffold modules rendered alone and together (kind profile): only their own objects, none twice" skaffold_releases_render kind
run "skaffold modules rendered alone and together (eks profile): only their own objects, none twice" skaffold_releases_render eks
skaffold_split_matches_single() { # profile, one-release render: the split install has exactly its objects
    "$PY" - "$WORK/skaffold-$1.yaml" "$WORK/$2.yaml" <<'PY'
import pathlib, sys
import yaml
def objects(path, charts_pulse_only):
    out = set()
    for d in yaml.safe_load_all(pathlib.Path(path).read_text()):
        if not d or (charts_pulse_only and d["metadata"].get("labels", {}).get("app.kubernetes.io/name") != "pulse"):
            continue
        name = d["metadata"]["name"]
        if d["kind"] == "Job" and "-topology" in name:
            name = "<topology Job>"  # one per release that has services
        out.add((d["kind"], name))
    return out
split, single = objects(sys.argv[1], True), objects(sys.argv[2], True)
if split != single:
    print(f"split install differs from the one-release install ({sys.argv[2]}): only split {sorted(split - single)}, only single {sorted(single - split)}")
    sys.exit(1)
print(f"{len(split)} objects, the same as one release")
PY
}
run "skaffold modules together install what one release does (kind profile = dev values)" skaffold_split_matches_single kind dev-values
run "skaffold modules together install what one release does (eks profile = eks values)" skaffold_split_matches_single eks eks-values
validate_skaffold_render() { "$VALIDATE" -k "$KUBE_VERSION" --strict --quiet --no-warn "$WORK/skaffold-$1.yaml"; }
run "skaffold modules' renders pass kubernetes-validate --strict (kind, eks)" bash -c "$(declare -f validate_skaffold_render); VALIDATE='$VALIDATE' KUBE_VERSION='$KUBE_VERSION' WORK='$WORK'; validate_skaffold_render kind && validate_skaffold_render eks"

# ---- 8. what the user reads: NOTES.txt and the deploy instructions
# helm template skips NOTES.txt; `helm install --dry-run=client` renders it without a cluster (so
# without the KEDA and Prometheus Operator CRDs: those features are off for this render).
notes_name_real_objects() {
    local no_crds=(--set monitoring.enabled=false --set services.stream-processor.keda.enabled=false
                   --set services.fraud-worker.keda.enabled=false --set services.notify-worker.keda.enabled=false)
    for scenario in dev-values eks-values; do
        "$HELM" install pulse "$CHART" --dry-run=client --namespace pulse -f "$CHART/ci/$scenario.yaml" "${no_crds[@]}" \
            >"$WORK/notes-$scenario.txt" || return 1
    done
    "$HELM" install pulse-ws-gateway "$CHART" --dry-run=client --namespace pulse -f "$CHART/ci/eks-values.yaml" "${no_crds[@]}" \
        --set instance=pulse --set scope.shared=false --set 'scope.services={ws-gateway}' >"$WORK/notes-split.txt" || return 1
    "$PY" - "$WORK" <<'PY'
import pathlib, re, sys
import yaml

work = pathlib.Path(sys.argv[1])
errors = []
for scenario in ("dev-values", "eks-values", "split"):
    text = (work / f"notes-{scenario}.txt").read_text()
    notes = text[text.find("NOTES:"):]
    if not notes:
        errors.append(f"{scenario}: no NOTES printed"); continue
    render = "eks-values" if scenario == "split" else scenario
    objects = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all((work / f"{render}.yaml").read_text()) if d}
    for kind, short in (("Service", "svc"), ("Deployment", "deploy")):
        for name in re.findall(rf"\b{short}/([a-z0-9-]+)", notes):
            if (kind, name) not in objects:
                errors.append(f"{scenario}: NOTES names {short}/{name}, which the install does not create")
    for want in ("pulse token --sub", "helm test pulse", "port-forward svc/pulse-ingest 8080:8080"):
        if want not in notes:
            errors.append(f"{scenario}: NOTES do not say {want!r}")
    if render == "eks-values":
        values = yaml.safe_load(pathlib.Path("charts/pulse/ci/eks-values.yaml").read_text())
        shown = {"ingest"} if scenario != "split" else set()
        shown.add("ws-gateway")
        for svc in shown:
            ing = values["services"][svc]["ingress"]
            scheme = ("wss" if svc == "ws-gateway" else "https") if ing.get("tlsSecretName") else ("ws" if svc == "ws-gateway" else "http")
            if f"{scheme}://{ing['host']}" not in notes:
                errors.append(f"{scenario}: NOTES lack {svc}'s Ingress URL {scheme}://{ing['host']}")
        if "get eventpipelines" not in notes or values["aws"]["resourcePrefix"] not in notes:
            errors.append(f"{scenario}: NOTES must say the operator's EventPipeline (prefix {values['aws']['resourcePrefix']}) creates the resources")
    if scenario == "split" and "helm test pulse-ws-gateway" not in notes:
        errors.append("split: NOTES must name the release that holds the helm test")
print("\n".join(errors) or "NOTES name only objects the install creates, its Ingress URLs and next steps")
sys.exit(1 if errors else 0)
PY
}
run "NOTES.txt (dev, eks, split release): real object names, Ingress URLs, token, helm test" notes_name_real_objects

run "deploy docs: every chart, values file and path they name exists; EKS prefix, ECR names and IRSA roles agree" "$PY" - <<'PY'
import pathlib, re, sys
import yaml

root = pathlib.Path(".")
errors = []
docs = [root / "README.md", root / "k8s/README.md", root / "k8s/iam/README.md",
        *sorted(root.glob("charts/*/README.md")), *sorted(root.glob("charts/*/templates/NOTES.txt"))]
path_re = re.compile(r"(?<![\w./-])((?:charts|k8s|services|scripts)/[A-Za-z0-9_./*-]+)")
for doc in docs:
    text = doc.read_text()
    for raw in sorted(set(path_re.findall(text))):
        path = raw.rstrip(".,:;)")
        if "*" in path:
            if not list(root.glob(path)):
                errors.append(f"{doc}: {path} matches no file")
        elif not (root / path).exists():
            errors.append(f"{doc}: {path} does not exist")
    for chart in re.findall(r"helm (?:upgrade --install|install|template|lint)[^\n]*?\s(charts/[\w-]+)", text):
        if not (root / chart / "Chart.yaml").exists():
            errors.append(f"{doc}: helm command on {chart}, which is no chart")
readme = (root / "README.md").read_text()
deploy = readme[readme.index("## Deploy"):readme.index("## Operate")]
eks = yaml.safe_load((root / "charts/pulse/ci/eks-values.yaml").read_text())
prefix = eks["aws"]["resourcePrefix"]
# the EventPipeline command: its sed must find the example's resourcePrefix line and set eks' prefix
m = re.search(r"sed 's/(\^  resourcePrefix: \.\*)/  resourcePrefix: ([^/]+)/' k8s/examples/eventpipeline\.yaml", deploy)
example = (root / "k8s/examples/eventpipeline.yaml").read_text()
if not m:
    errors.append("README Deploy: no `sed ... k8s/examples/eventpipeline.yaml` setting the EKS resourcePrefix")
else:
    if m.group(2) != prefix:
        errors.append(f"README Deploy: the EventPipeline gets resourcePrefix {m.group(2)}, eks-values has {prefix}")
    if not re.search(r"(?m)^  resourcePrefix: ", example):
        errors.append("k8s/examples/eventpipeline.yaml: no `  resourcePrefix:` line for the README's sed")
if f"{yaml.safe_load(example)['metadata']['name']}-outputs" != eks["pipeline"]["outputsConfigMap"]:
    errors.append("eks-values pipeline.outputsConfigMap is not the example EventPipeline's <name>-outputs")
iam = (root / "k8s/iam/README.md").read_text()
if f"PREFIX={prefix}" not in iam or 's/pulse-/$PREFIX/g' not in iam:
    errors.append(f"k8s/iam/README.md: the policy commands must substitute the resource prefix ({prefix} in eks-values)")
# Skaffold's names for the images under --default-repo (escape / and . to _), as the README lists them
images = [a["image"] for c in yaml.safe_load_all((root / "skaffold.yaml").read_text())
          for a in c.get("build", {}).get("artifacts", [])]
for image in images:
    ecr = re.sub(r"[/.]", "_", image)
    if f"`{ecr}`" not in deploy:
        errors.append(f"README Deploy: the ECR repository {ecr} (Skaffold's name for {image}) is not listed")
op = yaml.safe_load((root / "charts/pulse-operator/ci/eks-values.yaml").read_text())
want_role = f"arn:aws:iam::{eks['aws']['accountId']}:role/pulse-operator"
if op["serviceAccount"]["annotations"].get("eks.amazonaws.com/role-arn") != want_role:
    errors.append(f"charts/pulse-operator/ci/eks-values.yaml: IRSA role must be {want_role} (k8s/iam/README.md's name)")
if not op["image"]["repository"].startswith(eks["global"]["imageRegistry"] + "/"):
    errors.append("charts/pulse-operator/ci/eks-values.yaml: image not in the same registry as charts/pulse's eks values")
print("\n".join(errors) or f"{len(docs)} documents: paths exist, prefix {prefix}, {len(images)} ECR names, roles agree")
sys.exit(1 if errors else 0)
PY

echo
echo "k8s-check summary ($(( $(date +%s) - START ))s):"
printf '  %s\n' "${results[@]}"
if [[ $failed -ne 0 ]]; then
    echo "k8s-check: FAILED" >&2
    exit 1
fi
echo "k8s-check: all passed"
