#!/usr/bin/env python3
"""Checks Warden's KServe runtime (deploy/kserve) offline, and scans every deployment file
with checkov.

    check_kserve.py [ROOT]          the KServe checks, then their self-test of hostile edits
    check_kserve.py render [ROOT]   print, as YAML, the Deployment KServe's RawDeployment
                                    mode makes of inferenceservice.yaml on the runtime
    check_kserve.py args [ROOT]     print the runtime's arguments as JSON, with {{.Name}}
                                    filled in (tests/deploy.rs feeds them to `warden check`)
    check_kserve.py scan [ROOT]     run checkov on deploy/, the rendered Deployment and the
                                    Dockerfile; every finding must be in deploy/checkov-skips.yaml
                                    with a reason, and every entry there must still be found

Schemas:
- ServingRuntime, ClusterServingRuntime and InferenceService are checked field by field
  (strict: an unknown field is an error, and so is a wrong type) against the models
  KServe's Python SDK (`kserve` on PyPI) generates from KServe's Go types, down into the
  Kubernetes types they embed (the `kubernetes` client's models). No PyPI package ships
  KServe's CRD OpenAPI schemas themselves, so enum values, patterns and required fields
  that only the CRDs carry are not checked here (the conventions below cover the ones
  that matter to Warden).
- The pod KServe would run (render) is validated against the Kubernetes JSON schemas of
  kubernetes-validate, strict, like deploy/kubernetes.
Runs in .venv-deploy (scripts/requirements-deploy.txt). Exit status 0 when all holds.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

K8S_VERSIONS = ["1.31.0", "1.37.0"]
RUNTIME_NAME = "kserve-warden"
CONTAINER = "kserve-container"
REST_PORT = 8080
GRPC_PORT = 8081
MODEL_DIR = "/mnt/models"
FORMATS = {"openvino_ir", "onnx", "tflite"}
PROTOCOLS = ["v2", "grpc-v2"]
CERTS_DIR = "/etc/warden/certs"


def load(root: Path) -> dict[str, dict]:
    out = {}
    for name in ("servingruntime.yaml", "clusterservingruntime.yaml", "inferenceservice.yaml", "networkpolicy.yaml"):
        docs = [d for d in yaml.safe_load_all((root / "deploy/kserve" / name).read_text()) if d]
        if len(docs) != 1:
            raise SystemExit(f"deploy/kserve/{name}: expected one object, found {len(docs)}")
        out[name] = docs[0]
    return out


# ------------------------------------------------------------- KServe SDK types

def sdk_class(name: str):
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    return None


CLASSES = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}


def check_type(value, typ: str, path: str, errors: list[str]) -> None:
    """`value` (parsed YAML) against an SDK type string ('str', 'list[V1Container]', ...)."""
    if value is None:
        return
    # The kserve models write list[X] and dict(str, X); the kubernetes client's newer
    # ones List[X] and Dict[str, X].
    if typ.startswith("List["):
        typ = "list[" + typ[5:]
    if typ.startswith("Dict["):
        typ = "dict(" + typ[5:-1] + ")"
    if typ.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check_type(item, typ[5:-1], f"{path}[{i}]", errors)
        return
    if typ.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        inner = typ[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            check_type(v, inner, f"{path}.{k}", errors)
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str, "date": str}
    if typ in simple:
        ok = isinstance(value, simple[typ]) and not (typ in ("int", "float") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected {typ}, got {type(value).__name__} {value!r}")
        return
    if typ == "object":  # IntOrString, free-form
        return
    cls = sdk_class(typ)
    if cls is None:
        errors.append(f"{path}: unknown SDK type {typ}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {typ} object, got {type(value).__name__}")
        return
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            errors.append(f"{path}.{key}: unknown field (not in {typ})")
            continue
        check_type(v, cls.openapi_types[attr], f"{path}.{key}", errors)


def check_sdk_types(docs: dict[str, dict]) -> list[str]:
    errors = []
    for name, doc in docs.items():
        if doc.get("apiVersion") == "networking.k8s.io/v1":
            continue  # a core type: kubernetes-validate (check_rendered)
        cls = CLASSES.get((doc.get("apiVersion"), doc.get("kind")))
        if cls is None:
            errors.append(f"{name}: {doc.get('apiVersion')} {doc.get('kind')} is not a KServe type this runtime uses")
            continue
        check_type(doc, cls, name, errors)
    return errors


# ------------------------------------------------------------------ conventions

def runtime_container(rt: dict) -> dict:
    return next((c for c in rt["spec"].get("containers", []) if c.get("name") == CONTAINER), {})


def flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def check_conventions(docs: dict[str, dict]) -> list[str]:
    errors = []
    rt, crt, isvc = docs["servingruntime.yaml"], docs["clusterservingruntime.yaml"], docs["inferenceservice.yaml"]
    if rt["spec"] != crt["spec"]:
        errors.append("ServingRuntime and ClusterServingRuntime specs differ")
    for doc in (rt, crt):
        if doc["metadata"].get("name") != RUNTIME_NAME:
            errors.append(f"{doc['kind']} is not named {RUNTIME_NAME}")
    spec = rt["spec"]
    if spec.get("protocolVersions") != PROTOCOLS:
        errors.append(f"protocolVersions {spec.get('protocolVersions')} is not {PROTOCOLS}")
    formats = {f.get("name") for f in spec.get("supportedModelFormats", [])}
    if not FORMATS <= formats:
        errors.append(f"supportedModelFormats lacks {sorted(FORMATS - formats)}")
    if spec.get("multiModel"):
        errors.append("multiModel: Warden's runtime serves one model per InferenceService")
    containers = spec.get("containers", [])
    if [c.get("name") for c in containers] != [CONTAINER]:
        errors.append(f"the runtime must have exactly one container named {CONTAINER}, found {[c.get('name') for c in containers]}")
    c = runtime_container(rt)
    args = c.get("args", [])
    want = {"model_name": "{{.Name}}", "model_path": MODEL_DIR, "rest_port": str(REST_PORT), "port": str(GRPC_PORT)}
    for k, v in want.items():
        if flag(args, k) != v:
            errors.append(f"{CONTAINER}: --{k}={v} missing (got {flag(args, k)!r})")
    ports = {p.get("containerPort"): p for p in c.get("ports", [])}
    if set(ports) != {REST_PORT, GRPC_PORT}:
        errors.append(f"{CONTAINER}: ports {sorted(ports)} are not REST {REST_PORT} and gRPC {GRPC_PORT}")
    if ports.get(REST_PORT, {}) is not c.get("ports", [{}])[0]:
        errors.append(f"{CONTAINER}: the REST port {REST_PORT} must come first (KServe maps the first port to the Service's 80)")
    for port, p in ports.items():
        word = str(p.get("name", "")).split("-")[0]
        if word in ("h2c", "http", "http2", "grpc", "http1"):
            errors.append(f"{CONTAINER}: port {port} is named {p.get('name')!r}, which says plain text; Warden serves TLS")

    sc = c.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        errors.append(f"{CONTAINER}: runAsNonRoot is not true")
    if sc.get("runAsUser") == 0:
        errors.append(f"{CONTAINER}: runAsUser 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{CONTAINER}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{CONTAINER}: allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        errors.append(f"{CONTAINER}: privileged")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
        errors.append(f"{CONTAINER}: capabilities are not drop ALL with nothing added")
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append(f"{CONTAINER}: seccompProfile is not RuntimeDefault")
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in c.get("resources", {}).get(kind, {}):
                errors.append(f"{CONTAINER}: no resources.{kind}.{r}")
    for probe, path in (("livenessProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("scheme") != "HTTPS" or get.get("path") != path or get.get("port") not in (REST_PORT, "https"):
            errors.append(f"{CONTAINER}: {probe} is not httpGet HTTPS {path} on {REST_PORT}")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    certs = mounts.get(CERTS_DIR)
    if not certs:
        errors.append(f"{CONTAINER}: nothing mounted at {CERTS_DIR} (the image's warden.toml reads its keys there)")
    else:
        if certs.get("readOnly") is not True:
            errors.append(f"{CONTAINER}: {CERTS_DIR} is not mounted readOnly")
        vol = volumes.get(certs["name"], {})
        src = vol.get("projected") or vol.get("secret") or {}
        modes = [src.get("defaultMode", 0o644)] + [
            i["mode"] for s in src.get("sources", [src]) for inner in (s.get("secret", s),) for i in inner.get("items", []) if "mode" in i
        ]
        if any(m & ~0o440 for m in modes):
            errors.append(f"volume {certs['name']}: secret file mode wider than 0440")
        paths = {i.get("path") for s in src.get("sources", [src]) for i in s.get("secret", s).get("items", [])}
        for need in ("server.pem", "server.key", "jwt.pub.pem"):
            if need not in paths:
                errors.append(f"volume {certs['name']}: no {need} (the image's warden.toml reads it)")
    tmp = mounts.get("/tmp")
    if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
        errors.append(f"{CONTAINER}: no emptyDir at /tmp (the socket directory /tmp/warden on a read-only root)")
    if MODEL_DIR in mounts:
        errors.append(f"{CONTAINER}: mounts {MODEL_DIR} itself; KServe mounts the storage initializer's volume there")

    pod_labels = spec.get("labels", {})
    if not pod_labels:
        errors.append("the runtime sets no pod labels (spec.labels) for its NetworkPolicy to select")
    np = docs["networkpolicy.yaml"]
    sel = np["spec"].get("podSelector", {}).get("matchLabels", {})
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        errors.append("networkpolicy.yaml does not select the runtime's pods")
    if set(np["spec"].get("policyTypes", [])) != {"Ingress", "Egress"}:
        errors.append("networkpolicy.yaml: policyTypes must be Ingress and Egress")
    for rule in np["spec"].get("ingress", []):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if not ports or set(ports) - {REST_PORT, GRPC_PORT}:
            errors.append(f"networkpolicy.yaml: ingress beyond Warden's ports: {rule}")
    for rule in np["spec"].get("egress", []):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if not ports or set(ports) - {53, 443}:
            errors.append(f"networkpolicy.yaml: egress beyond DNS and the storage initializer's HTTPS: {rule}")

    pred = isvc["spec"]["predictor"]
    model = pred.get("model", {})
    if model.get("runtime") != RUNTIME_NAME:
        errors.append(f"InferenceService: runtime {model.get('runtime')!r} is not {RUNTIME_NAME}")
    if model.get("modelFormat", {}).get("name") not in formats:
        errors.append(f"InferenceService: model format {model.get('modelFormat')} is not one the runtime supports")
    if model.get("protocolVersion", "v2") not in PROTOCOLS:
        errors.append(f"InferenceService: protocolVersion {model.get('protocolVersion')!r}")
    if not str(model.get("storageUri", "")).split("://")[0] in ("s3", "gs", "https", "pvc", "hf", "oci"):
        errors.append(f"InferenceService: storageUri {model.get('storageUri')!r} is not one the storage initializer fetches")
    if isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode") != "RawDeployment":
        errors.append("InferenceService: not RawDeployment (Knative's queue-proxy cannot speak TLS to Warden)")
    psc = pred.get("securityContext", {})
    if not isinstance(psc.get("fsGroup"), int) or psc["fsGroup"] <= 0:
        errors.append("InferenceService: no non-root fsGroup (the 0440 secret files need it)")
    if psc.get("runAsNonRoot") is not True:
        errors.append("InferenceService: pod runAsNonRoot is not true")
    if pred.get("automountServiceAccountToken") is not False:
        errors.append("InferenceService: automountServiceAccountToken is not false")
    return errors


# --------------------------------------------------------------------- rendering

def render(docs: dict[str, dict]) -> dict:
    """The Deployment KServe's RawDeployment mode makes of the InferenceService on the
    runtime: the runtime's container merged with the predictor's model fields, {{.Name}}
    filled in, the storage initializer's volume at /mnt/models (read-only), the runtime's
    volumes and the predictor's pod fields. KServe's own init container is left out: it is
    KServe's image and configuration, not this repository's."""
    rt, isvc = docs["servingruntime.yaml"], docs["inferenceservice.yaml"]
    name = isvc["metadata"]["name"]
    pred = isvc["spec"]["predictor"]
    model = pred.get("model", {})
    c = copy.deepcopy(runtime_container(rt))
    c["args"] = [a.replace("{{.Name}}", name) for a in c.get("args", [])] + list(model.get("args", []))
    if "resources" in model:
        c["resources"] = copy.deepcopy(model["resources"])
    c.setdefault("volumeMounts", []).append({"name": "kserve-provision-location", "mountPath": MODEL_DIR, "readOnly": True})
    pod = {
        "containers": [c],
        "volumes": copy.deepcopy(rt["spec"].get("volumes", [])) + [{"name": "kserve-provision-location", "emptyDir": {}}],
    }
    for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "nodeSelector", "tolerations", "affinity"):
        if key in pred:
            pod[key] = copy.deepcopy(pred[key])
    labels = {"app": f"isvc.{name}-predictor", "serving.kserve.io/inferenceservice": name, "component": "predictor"}
    labels.update(rt["spec"].get("labels", {}))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-predictor", "namespace": isvc["metadata"].get("namespace", "default"), "labels": labels},
        "spec": {
            "replicas": pred.get("minReplicas", 1),
            "selector": {"matchLabels": {"app": labels["app"]}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def check_rendered(docs: dict[str, dict]) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    errors = []
    for what, doc in (("rendered Deployment", render(docs)), ("networkpolicy.yaml", docs["networkpolicy.yaml"])):
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{what} invalid for Kubernetes {version}: {path}: {e.message}")
            except Exception as e:  # a broken document must fail, never be skipped
                errors.append(f"{what}: cannot validate: {e}")
    return errors


def run_all(docs: dict[str, dict], only: str | None = None) -> dict[str, list[str]]:
    groups = {
        "KServe types": lambda: check_sdk_types(docs),
        "KServe conventions": lambda: check_conventions(docs),
        "rendered pod schemas": lambda: check_rendered(docs),
    }
    return {g: run() for g, run in groups.items() if only in (None, g)}


# --------------------------------------------------------------------- self-test

def rt_c(d):
    return runtime_container(d["servingruntime.yaml"])


def both(fn):
    """The same edit to the ServingRuntime and the ClusterServingRuntime."""
    def apply(d):
        fn(d["servingruntime.yaml"])
        fn(d["clusterservingruntime.yaml"])
    return apply


MUTATIONS = [
    ("unknown spec field", "KServe types", "unknown field",
     both(lambda r: r["spec"].update(protocolVersion=["v2"]))),
    ("unknown container field", "KServe types", "unknown field",
     both(lambda r: runtime_container(r).update(securityContxt={}))),
    ("wrong type", "KServe types", "expected bool",
     both(lambda r: r["spec"].update(multiModel="no"))),
    ("isvc unknown field", "KServe types", "unknown field",
     lambda d: d["inferenceservice.yaml"]["spec"]["predictor"]["model"].update(storageURI="s3://x")),
    ("runtime and cluster runtime drift", "KServe conventions", "differ",
     lambda d: rt_c(d).update(image="warden:other")),
    ("container renamed", "KServe conventions", CONTAINER,
     both(lambda r: runtime_container(r).update(name="warden"))),
    ("grpc-v2 dropped", "KServe conventions", "protocolVersions",
     both(lambda r: r["spec"].update(protocolVersions=["v2"]))),
    ("tflite dropped", "KServe conventions", "supportedModelFormats",
     both(lambda r: r["spec"]["supportedModelFormats"].pop())),
    ("model elsewhere", "KServe conventions", "model_path",
     both(lambda r: runtime_container(r)["args"].__setitem__(1, "--model_path=/models"))),
    ("REST port moved", "KServe conventions", "ports",
     both(lambda r: runtime_container(r)["ports"][0].update(containerPort=8443))),
    ("gRPC port called h2c", "KServe conventions", "plain text",
     both(lambda r: runtime_container(r)["ports"][1].update(name="h2c"))),
    ("privilege escalation", "KServe conventions", "allowPrivilegeEscalation",
     both(lambda r: runtime_container(r)["securityContext"].update(allowPrivilegeEscalation=True))),
    ("writable root", "KServe conventions", "readOnlyRootFilesystem",
     both(lambda r: runtime_container(r)["securityContext"].update(readOnlyRootFilesystem=False))),
    ("capability added", "KServe conventions", "capabilities",
     both(lambda r: runtime_container(r)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]))),
    ("keys writable", "KServe conventions", "readOnly",
     both(lambda r: next(m for m in runtime_container(r)["volumeMounts"] if m["mountPath"] == CERTS_DIR).update(readOnly=False))),
    ("keys world-readable", "KServe conventions", "wider than 0440",
     both(lambda r: r["spec"]["volumes"][0]["projected"].update(defaultMode=0o644))),
    ("readiness over HTTP", "KServe conventions", "readinessProbe",
     both(lambda r: runtime_container(r)["readinessProbe"]["httpGet"].update(scheme="HTTP"))),
    ("Serverless mode", "KServe conventions", "RawDeployment",
     lambda d: d["inferenceservice.yaml"]["metadata"]["annotations"].clear()),
    ("no fsGroup", "KServe conventions", "fsGroup",
     lambda d: d["inferenceservice.yaml"]["spec"]["predictor"]["securityContext"].pop("fsGroup")),
    ("isvc on another runtime", "KServe conventions", "runtime",
     lambda d: d["inferenceservice.yaml"]["spec"]["predictor"]["model"].update(runtime="kserve-ovms")),
    ("egress opened", "KServe conventions", "egress beyond",
     lambda d: d["networkpolicy.yaml"]["spec"]["egress"].append({})),
    ("policy misses the pods", "KServe conventions", "does not select",
     lambda d: d["networkpolicy.yaml"]["spec"]["podSelector"]["matchLabels"].update(app="other")),
    ("policy unknown field (schema)", "rendered pod schemas", "invalid",
     lambda d: d["networkpolicy.yaml"]["spec"].update(egres=[])),
    ("bad probe port (pod schema)", "rendered pod schemas", "invalid",
     both(lambda r: runtime_container(r)["readinessProbe"]["httpGet"].update(port=[8080]))),
    ("bad resource (pod schema)", "rendered pod schemas", "invalid",
     lambda d: d["inferenceservice.yaml"]["spec"]["predictor"]["model"]["resources"].update(limits=["2"])),
]


def self_test(docs: dict[str, dict]) -> list[str]:
    failures = []
    for desc, group, needle, edit in MUTATIONS:
        mutated = copy.deepcopy(docs)
        edit(mutated)
        results = run_all(mutated, only=group)[group]
        if not any(needle in e for e in results):
            failures.append(f"self-test: {desc!r} was not reported by {group!r} (got {results})")
    return failures


# --------------------------------------------------------------------- checkov

def scan(root: Path) -> int:
    """checkov on deploy/ (Kubernetes), the rendered KServe pod and the Dockerfile; each
    finding must be explained in deploy/checkov-skips.yaml, and each entry there must
    still match a finding (no stale excuses)."""
    skips = yaml.safe_load((root / "deploy/checkov-skips.yaml").read_text())["skips"]
    for s in skips:
        if not s.get("reason") or len(s["reason"].split()) < 5:
            print(f"FAIL [checkov] skip {s.get('id')} on {s.get('resource')} has no real reason")
            return 1
    checkov = Path(sys.executable).parent / "checkov"
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "kserve-rendered"
        rendered.mkdir()
        (rendered / "deployment.yaml").write_text(yaml.safe_dump(render(load(root)), sort_keys=False))
        (rendered / "networkpolicy.yaml").write_text((root / "deploy/kserve/networkpolicy.yaml").read_text())
        dockerdir = Path(tmp) / "dockerfile"
        dockerdir.mkdir()
        (dockerdir / "Dockerfile").write_text((root / "Dockerfile").read_text())
        runs = [
            ("kubernetes", root / "deploy/kubernetes", "deploy/kubernetes"),
            ("kubernetes", root / "deploy/kserve", "deploy/kserve"),
            ("kubernetes", rendered, "kserve-rendered"),
            ("dockerfile", dockerdir, "Dockerfile"),
        ]
        findings, passed = [], 0
        for framework, directory, label in runs:
            r = subprocess.run(
                [str(checkov), "--compact", "--skip-download", "--framework", framework,
                 "-d", str(directory), "-o", "json"],
                capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
            )
            if r.returncode not in (0, 1):
                print(f"FAIL [checkov] checkov exited {r.returncode} on {directory}: {r.stderr[-2000:]}")
                return 1
            out = r.stdout.strip()
            reports = json.loads(out) if out.startswith(("[", "{")) else []
            if isinstance(reports, dict):
                reports = [reports]
            for rep in reports:
                res = rep.get("results", {})
                passed += len(res.get("passed_checks", []))
                for f in res.get("failed_checks", []):
                    findings.append((label, f["check_id"], f.get("resource", ""), f.get("check_name", "")))
    used = set()
    unexplained = []
    for where, cid, resource, name in findings:
        match = [i for i, s in enumerate(skips)
                 if s["id"] == cid and s["where"] == where and re.fullmatch(s.get("resource", ".*"), resource)]
        if match:
            used.update(match)
        else:
            unexplained.append(f"{where}: {cid} {name} on {resource}")
    for u in unexplained:
        print(f"FAIL [checkov] unexplained finding: {u}")
    stale = [s for i, s in enumerate(skips) if i not in used]
    for s in stale:
        print(f"FAIL [checkov] stale skip (no longer found): {s['id']} in {s['where']}")
    print(f"checkov: {passed} checks passed, {len(findings)} findings, all explained in deploy/checkov-skips.yaml"
          if not unexplained and not stale else f"checkov: {len(unexplained)} unexplained, {len(stale)} stale")
    return 1 if unexplained or stale else 0


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 and argv[1] in ("render", "args", "scan") else None
    rest = argv[2:] if cmd else argv[1:]
    root = Path(rest[0]) if rest else Path(__file__).resolve().parents[2]
    if cmd == "render":
        sys.stdout.write(yaml.safe_dump(render(load(root)), sort_keys=False))
        return 0
    if cmd == "args":
        dep = render(load(root))
        print(json.dumps(dep["spec"]["template"]["spec"]["containers"][0]["args"]))
        return 0
    if cmd == "scan":
        return scan(root)
    docs = load(root)
    problems = 0
    for group, errors in run_all(docs).items():
        for e in errors:
            print(f"FAIL [{group}] {e}")
        problems += len(errors)
        if not errors:
            print(f"ok   [{group}]")
    failures = self_test(docs)
    for f in failures:
        print(f"FAIL {f}")
    print(f"self-test: {len(MUTATIONS) - len(failures)} of {len(MUTATIONS)} hostile edits caught")
    print(f"KServe types: kserve SDK models; rendered pod: kubernetes-validate, Kubernetes {', '.join(K8S_VERSIONS)}, strict")
    return 1 if problems or failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
