#!/usr/bin/env python3
"""Checks Warden's deployment files offline: deploy/kubernetes, deploy/systemd,
Dockerfile (+ .dockerignore) and deploy/grafana.

    check_deploy.py [ROOT]                 every check on the real files, then the self-test
    check_deploy.py render-config WHICH [--set KEY=VALUE ...]
                                           print the k8s or systemd warden.toml with some
                                           path keys replaced (tests/deploy.rs feeds it to
                                           `warden check`)

Each check returns a list of problems; the self-test applies one hostile edit at a time
to an in-memory copy (allowPrivilegeEscalation: true, a writable secret, egress opened,
no HEALTHCHECK, MemoryDenyWriteExecute=yes, an unknown metric, ...) and requires that
the matching check reports it, so no check can pass by being blind.

Kubernetes objects are validated against the JSON schemas bundled in the
kubernetes-validate package (strict: unknown fields are errors), with no cluster and no
network. Exit status 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

# Kubernetes versions the manifests must validate against: the oldest we claim to
# support and the newest the bundled schemas know.
K8S_VERSIONS = ["1.31.0", "1.37.0"]

GATEWAY_UID = 5001
BACKEND_UID = 5000
GATEWAY_PORTS = {8443, 9443}
METRICS_PORT = 9180
SOCKET_DIR = "/run/warden"


def registry_metrics(root: Path) -> dict[str, tuple[str, str]]:
    """name -> (type, exported) from the metrics table of docs/metrics.md, which a unit
    test of gateway/src/metrics.rs keeps equal to the gateway's metrics registry."""
    out = {}
    for line in (root / "docs/metrics.md").read_text().splitlines():
        m = re.match(r"\| `([a-z_]+)` \| (counter|gauge|histogram) \| [^|]* \| ([^|]+) \|", line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3).strip())
    return out


# The metrics Warden exports; dashboards may use nothing else, and must show every one
# exported by default (OVMS's optional ones are off unless listed).
REGISTRY = registry_metrics(Path(__file__).resolve().parents[2])
ALLOWED_METRICS = set(REGISTRY)
DEFAULT_METRICS = {n for n, (_, exported) in REGISTRY.items() if not exported.startswith("only when")}
HISTOGRAMS = {n for n, (kind, _) in REGISTRY.items() if kind == "histogram"}

# The root supervisor's capabilities (deploy/systemd/README.md says why each one).
SUPERVISOR_CAPS = {
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_KILL",
}

SYSTEMD_REQUIRED = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "SystemCallArchitectures": "native",
    "RuntimeDirectory": "warden",
    "RuntimeDirectoryMode": "0750",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "30",
    "ExecStart": "/usr/local/bin/warden serve --config /etc/warden/warden.toml",
}

# Final-stage base images that still carry a package manager or a toolchain.
BUILD_OR_DISTRO_IMAGE = re.compile(
    r"^(?:[\w.-]+(?::\d+)?/)*(?:rust|golang|gcc|python|node|buildpack-deps|maven|openjdk|"
    r"debian|ubuntu|alpine|fedora|centos|rockylinux|almalinux|amazonlinux|archlinux|"
    r"opensuse|busybox)(?:[:@].*)?$"
)
BUILD_TOOLS = re.compile(r"\b(?:apt|apt-get|dpkg|pip3?|python3?|cargo|rustc|rustup|gcc|g\+\+|cc|make|cmake|apk|yum|dnf)\b")


# ----------------------------------------------------------------------- loading

def load_k8s(root: Path) -> dict[str, list[dict]]:
    """Every YAML file of deploy/kubernetes, as a list of documents per file name."""
    out = {}
    for path in sorted((root / "deploy/kubernetes").glob("*.y*ml")):
        with open(path) as f:
            out[path.name] = [d for d in yaml.safe_load_all(f) if d]
    return out


def documented_toml_keys(root: Path) -> set[str]:
    """`section.key` names from the table in docs/configuration.md."""
    keys = set()
    for line in (root / "docs/configuration.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        keys.update(re.findall(r"`([a-z_]+\.[a-z_]+)`", first))
    return keys


def flatten_toml(data: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten_toml(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"unit: cannot parse line {line!r}")
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_dockerfile(text: str) -> list[dict]:
    """Stages of a Dockerfile: [{"from": image, "name": alias, "instructions": [(KW, args)]}]."""
    logical = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    stages = []
    # Global ARGs (before the first FROM) may name base images: FROM ${RUNTIME_BASE}
    # is checked as the default it expands to, the image a plain `docker build` uses.
    global_args: dict[str, str] = {}

    def expand(word: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)), word)

    for line in logical:
        kw, _, args = line.partition(" ")
        kw = kw.upper()
        args = args.strip()
        if kw == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"from": expand(words[0]), "name": name, "instructions": []})
        elif kw == "ARG" and not stages:
            key, _, default = args.partition("=")
            if default:
                global_args[key.strip()] = default.strip().strip('"')
            continue
        else:
            if not stages:
                raise ValueError(f"Dockerfile: {kw} before FROM")
            stages[-1]["instructions"].append((kw, args))
    return stages


# ----------------------------------------------------------------- kubernetes

def check_k8s_schemas(docs: dict[str, list[dict]]) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    errors = []
    for name, items in docs.items():
        if name == "kustomization.yaml":
            continue
        if not items:
            errors.append(f"{name}: no Kubernetes object")
        for doc in items:
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    errors.append(f"{name}: {doc.get('kind')} invalid for Kubernetes {version}: {path}: {e.message}")
                except SchemaNotFoundError as e:
                    errors.append(f"{name}: {e.message}")
                except Exception as e:  # a broken document must fail, never be skipped
                    errors.append(f"{name}: cannot validate {doc.get('kind')}: {e}")
    return errors


def objects(docs: dict[str, list[dict]], kind: str) -> list[dict]:
    return [d for name, items in docs.items() if name != "kustomization.yaml" for d in items if d.get("kind") == kind]


def check_kustomization(docs: dict[str, list[dict]]) -> list[str]:
    k = docs.get("kustomization.yaml")
    if not k:
        return ["kustomization.yaml is missing"]
    listed = set(k[0].get("resources", []))
    errors = []
    for name in docs:
        if name != "kustomization.yaml" and name not in listed:
            errors.append(f"kustomization.yaml does not list {name}")
    for name in listed - set(docs):
        errors.append(f"kustomization.yaml lists {name}, which does not exist")
    return errors


def role(container: dict) -> str:
    """`gateway` or `backend`: the warden subcommand the container runs."""
    argv = list(container.get("command", [])) + list(container.get("args", []))
    for word in argv:
        if word in ("gateway", "backend", "serve"):
            return word
    return "?"


def secret_volume_names(pod: dict) -> set[str]:
    names = set()
    for v in pod.get("volumes", []):
        if "secret" in v:
            names.add(v["name"])
        elif "projected" in v and any("secret" in s for s in v["projected"].get("sources", [])):
            names.add(v["name"])
    return names


def modes_of(volume: dict) -> list[int]:
    """Every file mode a secret-bearing volume can produce (None = the 0644 default)."""
    if "secret" in volume:
        src = volume["secret"]
        modes = [src.get("defaultMode", 0o644)]
        modes += [i["mode"] for i in src.get("items", []) if "mode" in i]
        return modes
    proj = volume["projected"]
    modes = [proj.get("defaultMode", 0o644)]
    for s in proj.get("sources", []):
        for inner in s.values():
            if isinstance(inner, dict):
                modes += [i["mode"] for i in inner.get("items", []) if "mode" in i]
    return modes


def check_k8s_security(docs: dict[str, list[dict]]) -> list[str]:
    errors = []
    deployments = objects(docs, "Deployment")
    if len(deployments) != 1:
        return [f"expected one Deployment, found {len(deployments)}"]
    dep = deployments[0]
    tmpl = dep["spec"]["template"]
    pod = tmpl["spec"]
    labels = tmpl["metadata"].get("labels", {})
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        errors.append("pod securityContext.runAsNonRoot is not true")
    if not isinstance(psc.get("fsGroup"), int) or psc.get("fsGroup", 0) <= 0:
        errors.append("pod securityContext.fsGroup is not a non-root group (the socket directory needs it)")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append("pod securityContext.seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            errors.append(f"pod sets {key}")
    if pod.get("automountServiceAccountToken") is not False:
        errors.append("pod mounts a service account token (automountServiceAccountToken is not false)")

    containers = pod.get("containers", []) + pod.get("initContainers", [])
    roles = {role(c): c for c in pod.get("containers", [])}
    if set(roles) != {"gateway", "backend"} or len(pod.get("containers", [])) != 2:
        errors.append(f"the pod must run exactly `warden gateway` and `warden backend`, found {sorted(roles)}")
    uids = []
    for c in containers:
        n = c.get("name")
        sc = c.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True:
            errors.append(f"container {n}: runAsNonRoot is not true")
        uid = sc.get("runAsUser")
        if not isinstance(uid, int) or uid <= 0:
            errors.append(f"container {n}: runAsUser {uid!r} is not a non-zero uid")
        uids.append(uid)
        if sc.get("runAsGroup") != uid:
            errors.append(f"container {n}: runAsGroup {sc.get('runAsGroup')!r} does not match runAsUser {uid!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"container {n}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"container {n}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            errors.append(f"container {n}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            errors.append(f"container {n}: capabilities.drop lacks ALL")
        if caps.get("add"):
            errors.append(f"container {n}: adds capabilities {caps['add']}")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errors.append(f"container {n}: seccompProfile is not RuntimeDefault")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    errors.append(f"container {n}: no resources.{kind}.{r}")
    if len(set(uids)) != len(uids):
        errors.append(f"containers share a uid: {uids}")
    expected = {"gateway": GATEWAY_UID, "backend": BACKEND_UID}
    for r, c in roles.items():
        if r in expected and c.get("securityContext", {}).get("runAsUser") != expected[r]:
            errors.append(f"the {r} container must run as uid {expected[r]}")

    # Secrets: read-only, group/owner-read only, not through subPath (which the kubelet
    # never updates), and only in the gateway.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_vols = secret_volume_names(pod)
    if not secret_vols:
        errors.append("no secret volume (TLS certificate and JWT key) in the pod")
    for name in secret_vols:
        for mode in modes_of(volumes[name]):
            if mode & ~0o440:
                errors.append(f"volume {name}: secret file mode {mode:#o} is wider than 0440")
    for c in containers:
        for m in c.get("volumeMounts", []):
            if m["name"] in secret_vols:
                if m.get("readOnly") is not True:
                    errors.append(f"container {c.get('name')}: secret volume {m['name']} is not mounted readOnly")
                if m.get("subPath") or m.get("subPathExpr"):
                    errors.append(f"container {c.get('name')}: secret volume {m['name']} uses subPath (no rotation)")
                if role(c) != "gateway":
                    errors.append(f"container {c.get('name')}: mounts secret volume {m['name']}; only the gateway needs secrets")

    # Models: read-only, backend only.
    for name, v in volumes.items():
        if "persistentVolumeClaim" in v or "image" in v:
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("readOnly") is not True:
                errors.append(f"volume {name}: the models claim is not readOnly")
            for c in containers:
                for m in c.get("volumeMounts", []):
                    if m["name"] == name and m.get("readOnly") is not True:
                        errors.append(f"container {c.get('name')}: models volume {name} is not mounted readOnly")

    # The socket: one emptyDir at the same path in both containers.
    empties = [n for n, v in volumes.items() if "emptyDir" in v]
    shared = [
        n for n in empties
        if all(any(m["name"] == n and m["mountPath"] == SOCKET_DIR for m in c.get("volumeMounts", [])) for c in roles.values())
    ]
    if not shared:
        errors.append(f"no emptyDir mounted at {SOCKET_DIR} in both containers (the socket)")

    # Probes: the gateway is the only container with a port.
    gw = roles.get("gateway", {})
    for probe, path in (("livenessProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready")):
        get = gw.get(probe, {}).get("httpGet", {})
        if get.get("scheme") != "HTTPS" or get.get("path") != path or get.get("port") not in ("https", 8443):
            errors.append(f"gateway {probe} is not httpGet HTTPS {path} on 8443")
    for c in containers:
        for p in c.get("ports", []):
            if p.get("containerPort") == METRICS_PORT:
                errors.append(f"container {c.get('name')} exposes the metrics port {METRICS_PORT}")

    # Service: the two TLS ports, never the metrics listener.
    for svc in objects(docs, "Service"):
        ports = {p["port"] for p in svc["spec"].get("ports", [])}
        if ports != GATEWAY_PORTS:
            errors.append(f"Service {svc['metadata']['name']} ports {sorted(ports)} are not exactly {sorted(GATEWAY_PORTS)}")
        if not labels or any(labels.get(k) != v for k, v in svc["spec"].get("selector", {}).items()):
            errors.append(f"Service {svc['metadata']['name']} does not select the pod")

    # NetworkPolicy: ingress only to the gateway ports; no egress (DNS alone tolerated).
    policies = [p for p in objects(docs, "NetworkPolicy")
                if all(labels.get(k) == v for k, v in p["spec"].get("podSelector", {}).get("matchLabels", {}).items())]
    if not policies:
        errors.append("no NetworkPolicy selects the pod")
    for p in policies:
        spec = p["spec"]
        types = set(spec.get("policyTypes", []))
        if types != {"Ingress", "Egress"}:
            errors.append(f"NetworkPolicy {p['metadata']['name']}: policyTypes {sorted(types)} must be Ingress and Egress")
        for rule in spec.get("egress", []):
            ports = rule.get("ports")
            if not ports or any(pp.get("port") != 53 for pp in ports):
                errors.append(f"NetworkPolicy {p['metadata']['name']}: allows egress beyond DNS: {rule}")
        for rule in spec.get("ingress", []):
            ports = rule.get("ports")
            if not ports:
                errors.append(f"NetworkPolicy {p['metadata']['name']}: an ingress rule allows every port")
            for pp in ports or []:
                if pp.get("port") not in GATEWAY_PORTS and pp.get("port") not in ("https", "grpc"):
                    errors.append(f"NetworkPolicy {p['metadata']['name']}: ingress to port {pp.get('port')}")

    pdbs = objects(docs, "PodDisruptionBudget")
    if not pdbs or pdbs[0]["spec"].get("minAvailable") != 1:
        errors.append("no PodDisruptionBudget with minAvailable 1")
    hpas = [h for h in objects(docs, "HorizontalPodAutoscaler") if h.get("apiVersion") == "autoscaling/v2"]
    if not hpas:
        errors.append("no autoscaling/v2 HorizontalPodAutoscaler")
    for h in hpas:
        ref = h["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
            errors.append("the HPA does not target the Deployment")
        if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
                   and m["resource"]["target"].get("type") == "Utilization" for m in h["spec"].get("metrics", [])):
            errors.append("the HPA does not scale on CPU utilization")
        if h["spec"].get("minReplicas", 1) < 2:
            errors.append("HPA minReplicas below 2 makes the PDB block every drain")
    return errors


def check_k8s_config(docs: dict[str, list[dict]], documented: set[str]) -> list[str]:
    """warden.toml in the ConfigMap: documented keys only, consistent with the pod."""
    errors = []
    maps = [m for m in objects(docs, "ConfigMap") if "warden.toml" in m.get("data", {})]
    if not maps:
        return ["no ConfigMap carries warden.toml"]
    try:
        conf = tomllib.loads(maps[0]["data"]["warden.toml"])
    except tomllib.TOMLDecodeError as e:
        return [f"ConfigMap warden.toml does not parse: {e}"]
    flat = flatten_toml(conf)
    for key in flat:
        if key not in documented:
            errors.append(f"ConfigMap warden.toml: {key} is not a documented key (docs/configuration.md)")
    dep = objects(docs, "Deployment")
    if dep:
        pod = dep[0]["spec"]["template"]["spec"]
        roles = {role(c): c for c in pod.get("containers", [])}
        uid_of = lambda r: roles.get(r, {}).get("securityContext", {}).get("runAsUser")  # noqa: E731
        if flat.get("gateway.uid") != uid_of("gateway"):
            errors.append(f"warden.toml gateway.uid {flat.get('gateway.uid')} is not the gateway container's uid {uid_of('gateway')}")
        if flat.get("backend.uid", BACKEND_UID) != uid_of("backend"):
            errors.append("warden.toml backend.uid is not the backend container's uid")
        if flat.get("backend.socket_dir", SOCKET_DIR) != SOCKET_DIR:
            errors.append(f"warden.toml backend.socket_dir is not {SOCKET_DIR}")
        gw_mounts = {m["name"]: m["mountPath"] for m in roles.get("gateway", {}).get("volumeMounts", [])}
        secret_paths = [gw_mounts[n] for n in secret_volume_names(pod) if n in gw_mounts]
        for key in ("tls.cert", "tls.key", "auth.jwt_key"):
            value = str(flat.get(key, ""))
            if not any(value.startswith(p.rstrip("/") + "/") for p in secret_paths):
                errors.append(f"warden.toml {key} = {value!r} is not inside the gateway's secret mount")
    return errors


def check_kustomize_render(root: Path) -> list[str]:
    """If kubectl is installed, the base must render with its built-in kustomize."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("note: kubectl not installed; kustomize render not checked")
        return []
    r = subprocess.run([kubectl, "kustomize", str(root / "deploy/kubernetes")], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return [f"kubectl kustomize failed: {r.stderr.strip()}"]
    rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
    errors = check_k8s_schemas({"rendered": rendered})
    errors += check_k8s_security({"rendered": rendered})
    return [f"kustomize output: {e}" for e in errors]


# --------------------------------------------------------------------- Dockerfile

def check_dockerfile(text: str, dockerignore: str) -> list[str]:
    errors = []
    try:
        stages = parse_dockerfile(text)
    except ValueError as e:
        return [str(e)]
    if len(stages) < 2:
        errors.append("the Dockerfile is not multi-stage")
    final = stages[-1]
    names = {s["name"] for s in stages[:-1] if s["name"]}
    base = final["from"]
    if base in names or BUILD_OR_DISTRO_IMAGE.match(base):
        errors.append(f"final stage FROM {base}: a toolchain or package-manager image")
    users = [a for k, a in final["instructions"] if k == "USER"]
    if not users:
        errors.append("final stage has no USER")
    else:
        user = users[-1].split(":")[0]
        if user in ("0", "root") or not user.isdigit() or int(user) < 1000:
            errors.append(f"final stage USER {users[-1]} is not a numeric non-root uid")
        group = users[-1].split(":")[1] if ":" in users[-1] else None
        if group in ("0", "root"):
            errors.append(f"final stage USER {users[-1]} runs with group root")
    checks = [a for k, a in final["instructions"] if k == "HEALTHCHECK"]
    if not checks or checks[-1].upper().startswith("NONE"):
        errors.append("final stage has no HEALTHCHECK")
    elif "health" not in checks[-1] or "CMD" not in checks[-1]:
        errors.append("HEALTHCHECK does not run `warden health`")
    for kw, args in final["instructions"]:
        if kw == "RUN" and BUILD_TOOLS.search(args):
            errors.append(f"final stage runs a build or package tool: RUN {args}")
        if kw == "RUN":
            errors.append(f"final stage has a RUN step (it has no shell): RUN {args}")
        if kw == "ADD":
            errors.append(f"final stage uses ADD: {args}")
        if kw == "COPY":
            m = re.search(r"--from=(\S+)", args)
            if not m:
                errors.append(f"final stage copies from the build context: COPY {args}")
            elif m.group(1) not in names:
                errors.append(f"final stage copies from an image that is not a stage: COPY {args}")
            elif BUILD_TOOLS.search(" ".join(w for w in args.split() if not w.startswith("--"))):
                errors.append(f"final stage copies a build tool: COPY {args}")
    if not any(k == "ENTRYPOINT" for k, _ in final["instructions"]):
        errors.append("final stage has no ENTRYPOINT")
    ignored = {line.strip().strip("/") for line in dockerignore.splitlines() if line.strip() and not line.startswith("#")}
    for entry in ("target", ".runtime", ".models", ".venv", ".venv-deploy", ".cache", ".demo"):
        if entry not in ignored:
            errors.append(f".dockerignore does not exclude {entry}")
    return errors


# ------------------------------------------------------------------------ systemd

def check_systemd(unit_text: str, toml_text: str, documented: set[str]) -> list[str]:
    errors = []
    try:
        unit = parse_unit(unit_text)
    except ValueError as e:
        return [str(e)]
    svc = unit.get("Service", {})
    last = {k: v[-1] for k, v in svc.items()}
    for key, want in SYSTEMD_REQUIRED.items():
        if last.get(key) != want:
            errors.append(f"warden.service: {key}={last.get(key)!r}, expected {want!r}")
    caps = set(" ".join(svc.get("CapabilityBoundingSet", [])).split())
    if not caps:
        errors.append("warden.service: no CapabilityBoundingSet")
    try:
        conf = flatten_toml(tomllib.loads(toml_text))
    except tomllib.TOMLDecodeError as e:
        return errors + [f"deploy/systemd/warden.toml does not parse: {e}"]
    low_port = any(conf.get(k, d) < 1024 for k, d in (("gateway.rest_port", 8443), ("gateway.grpc_port", 9443)) if conf.get(k, d))
    allowed = SUPERVISOR_CAPS | ({"CAP_NET_BIND_SERVICE"} if low_port else set())
    if caps - allowed:
        errors.append(f"warden.service: CapabilityBoundingSet grants {sorted(caps - allowed)} beyond what the supervisor needs")
    if caps and SUPERVISOR_CAPS - caps:
        errors.append(f"warden.service: CapabilityBoundingSet lacks {sorted(SUPERVISOR_CAPS - caps)}")
    if svc.get("AmbientCapabilities", [""])[-1]:
        errors.append("warden.service: AmbientCapabilities must be empty")
    families = set(" ".join(svc.get("RestrictAddressFamilies", [])).split())
    if families != {"AF_INET", "AF_INET6", "AF_UNIX"}:
        errors.append(f"warden.service: RestrictAddressFamilies={sorted(families)}")
    filters = " ".join(svc.get("SystemCallFilter", [])).split()
    if "@system-service" not in filters or any(f.startswith("~") for f in filters):
        errors.append(f"warden.service: SystemCallFilter={filters} is not an allow-list based on @system-service")
    for call in ("seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"):
        if call not in filters:
            errors.append(f"warden.service: SystemCallFilter lacks {call}; the backend cannot build its sandbox")
    for key in ("MemoryDenyWriteExecute", "RestrictSUIDSGID", "PrivateUsers"):
        if last.get(key, "no").lower() in ("yes", "true", "1", "on", "self", "identity"):
            errors.append(f"warden.service: {key}=yes breaks Warden (see the unit's comments)")
    if "MemoryDenyWriteExecute" not in unit_text:
        errors.append("warden.service: no comment explains why MemoryDenyWriteExecute is off")
    for key, want in (("ReadWritePaths", "/var/log/warden"), ("ReadOnlyPaths", "/var/lib/warden/models")):
        if want not in " ".join(svc.get(key, [])).split():
            errors.append(f"warden.service: {key} lacks {want}")
    if conf.get("backend.socket_dir") != "/run/warden":
        errors.append("deploy/systemd/warden.toml: backend.socket_dir is not the unit's RuntimeDirectory /run/warden")
    models = str(conf.get("models.config_path") or conf.get("models.model_path") or "")
    if not models.startswith("/var/lib/warden/models"):
        errors.append(f"deploy/systemd/warden.toml: models ({models!r}) are outside the unit's ReadOnlyPaths")
    for key in conf:
        if key not in documented:
            errors.append(f"deploy/systemd/warden.toml: {key} is not a documented key")
    return errors


def check_systemd_analyze(unit_path: Path) -> list[str]:
    """`systemd-analyze verify`, when installed: anything but the missing binary fails."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        print("note: systemd-analyze not installed; unit not verified by systemd")
        return []
    with tempfile.TemporaryDirectory() as d:
        copy_path = Path(d) / "warden.service"
        shutil.copy(unit_path, copy_path)
        r = subprocess.run([tool, "verify", "--man=no", str(copy_path)], capture_output=True, text=True, timeout=60)
    problems = [
        line for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "/usr/local/bin/warden" not in line and "is not executable" not in line
    ]
    return [f"systemd-analyze verify: {p}" for p in problems]


# ------------------------------------------------------------------------ Grafana

PROMQL_WORDS = {
    # functions
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max",
    "clamp_min", "count_over_time", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "histogram_count", "histogram_sum", "histogram_fraction", "holt_winters", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10",
    "max_over_time", "min_over_time", "predict_linear", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "time", "timestamp", "vector", "present_over_time",
    # aggregations and keywords
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
    # Grafana templating
    "label_values", "query_result", "metrics", "label_names",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords,
    label names (inside {} or by/without/on/ignoring lists) or Grafana variables."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)         # string literals
    s = re.sub(r"\{[^}]*\}", "{}", s)                        # label matchers
    s = re.sub(r"\[[^\]]*\]", "[]", s)                       # ranges
    s = re.sub(r"\$\{?\w+(?::\w+)?\}?", "", s)               # $__rate_interval, ${datasource}
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", s)
    s = re.sub(r"(label_values\s*\(\s*[A-Za-z_:][\w:]*\s*),\s*\w+\s*\)", r"\1)", s)  # label_values(m, label)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)", s):
        word = m.group(1)
        if word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+(\.\d+)?", word):
            continue
        names.add(word)
    return names


def base_metric(name: str) -> str | None:
    if name in ALLOWED_METRICS:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return None


def check_grafana(text: str) -> list[str]:
    errors = []
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"warden.json does not parse: {e}"]
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append(f"schemaVersion {dash.get('schemaVersion')!r} is below 36")
    variables = dash.get("templating", {}).get("list", [])
    if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" for v in variables):
        errors.append("no Prometheus datasource variable")
    exprs = []
    for v in variables:
        q = v.get("query")
        if v.get("type") == "query":
            exprs.append(("variable " + v.get("name", "?"), q.get("query") if isinstance(q, dict) else q))
    panels = []
    stack = list(dash.get("panels", []))
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))
        if p.get("type") != "row":
            panels.append(p)
    used = set()
    for p in panels:
        targets = [t for t in p.get("targets", []) if t.get("expr")]
        if not targets:
            errors.append(f"panel {p.get('title')!r} has no PromQL target")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {p.get('title')!r} does not use the datasource variable")
        exprs += [(f"panel {p.get('title')!r}", t["expr"]) for t in targets]
    for where, expr in exprs:
        names = promql_metrics(expr or "")
        if not names:
            errors.append(f"{where}: expression selects no metric: {expr}")
        for name in names:
            base = base_metric(name)
            if base is None:
                errors.append(f"{where}: unknown metric {name!r} in {expr}")
            else:
                used.add(base)
        gauges = "|".join(n for n, (kind, _) in REGISTRY.items() if kind == "gauge")
        if re.search(rf"\b(rate|increase|irate)\(\s*({gauges})\b", expr or ""):
            errors.append(f"{where}: rate() of a gauge: {expr}")
    for missing in sorted(DEFAULT_METRICS - used):
        errors.append(f"no panel shows {missing}")
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        errors.append("panel ids are not unique")
    return errors


# ------------------------------------------------------------------------- driver

def run_all(root: Path, only: str | None = None, k8s=None, dockerfile=None, dockerignore=None,
            unit=None, unit_toml=None, grafana=None) -> dict[str, list[str]]:
    """Every check group (or just `only`), on the real files unless a copy is given."""
    documented = documented_toml_keys(root)
    k8s = k8s if k8s is not None else load_k8s(root)
    read = lambda given, rel: given if given is not None else (root / rel).read_text()  # noqa: E731
    groups = {
        "kubernetes schemas": lambda: check_k8s_schemas(k8s),
        "kustomization": lambda: check_kustomization(k8s),
        "kubernetes security": lambda: check_k8s_security(k8s),
        "kubernetes warden.toml": lambda: check_k8s_config(k8s, documented),
        "Dockerfile": lambda: check_dockerfile(read(dockerfile, "Dockerfile"), read(dockerignore, ".dockerignore")),
        "systemd": lambda: check_systemd(
            read(unit, "deploy/systemd/warden.service"), read(unit_toml, "deploy/systemd/warden.toml"), documented
        ),
        "Grafana": lambda: check_grafana(read(grafana, "deploy/grafana/warden.json")),
    }
    return {g: run() for g, run in groups.items() if only in (None, g)}


def pod_of(docs):
    for items in docs.values():
        for d in items:
            if d.get("kind") == "Deployment":
                return d["spec"]["template"]["spec"]
    raise KeyError("Deployment")


def container(docs, r):
    return next(c for c in pod_of(docs)["containers"] if role(c) == r)


def mutate_k8s(fn):
    def apply(docs):
        docs = copy.deepcopy(docs)
        fn(docs)
        return docs
    return apply


def by_kind(docs, kind):
    return next(d for items in docs.values() for d in items if d.get("kind") == kind)


# (description, check group that must complain, substring of the complaint, edit)
K8S_MUTATIONS = [
    ("allowPrivilegeEscalation: true", "kubernetes security", "allowPrivilegeEscalation",
     lambda d: container(d, "backend")["securityContext"].update(allowPrivilegeEscalation=True)),
    ("runAsUser: 0", "kubernetes security", "runAsUser",
     lambda d: container(d, "gateway")["securityContext"].update(runAsUser=0, runAsGroup=0)),
    ("both containers uid 5000", "kubernetes security", "share a uid",
     lambda d: container(d, "gateway")["securityContext"].update(runAsUser=5000, runAsGroup=5000)),
    ("runAsNonRoot removed", "kubernetes security", "runAsNonRoot",
     lambda d: container(d, "gateway")["securityContext"].pop("runAsNonRoot")),
    ("writable root filesystem", "kubernetes security", "readOnlyRootFilesystem",
     lambda d: container(d, "backend")["securityContext"].update(readOnlyRootFilesystem=False)),
    ("capabilities kept", "kubernetes security", "drop lacks ALL",
     lambda d: container(d, "gateway")["securityContext"]["capabilities"].update(drop=["NET_RAW"])),
    ("NET_ADMIN added", "kubernetes security", "adds capabilities",
     lambda d: container(d, "gateway")["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
    ("seccomp Unconfined", "kubernetes security", "seccompProfile",
     lambda d: container(d, "backend")["securityContext"].update(seccompProfile={"type": "Unconfined"})),
    ("secret mounted writable", "kubernetes security", "not mounted readOnly",
     lambda d: next(m for m in container(d, "gateway")["volumeMounts"] if m["mountPath"] == "/etc/warden").update(readOnly=False)),
    ("secret world-readable", "kubernetes security", "wider than 0440",
     lambda d: next(v for v in pod_of(d)["volumes"] if v["name"] == "gateway-files")["projected"].update(defaultMode=0o644)),
    ("secret in the backend", "kubernetes security", "only the gateway needs secrets",
     lambda d: container(d, "backend")["volumeMounts"].append({"name": "gateway-files", "mountPath": "/srv", "readOnly": True})),
    ("models writable", "kubernetes security", "models",
     lambda d: next(m for m in container(d, "backend")["volumeMounts"] if m["mountPath"] == "/models").update(readOnly=False)),
    ("no readiness probe", "kubernetes security", "readinessProbe",
     lambda d: container(d, "gateway").pop("readinessProbe")),
    ("liveness over HTTP", "kubernetes security", "livenessProbe",
     lambda d: container(d, "gateway")["livenessProbe"]["httpGet"].update(scheme="HTTP")),
    ("egress opened", "kubernetes security", "egress",
     lambda d: by_kind(d, "NetworkPolicy")["spec"].update(egress=[{}])),
    ("Egress policy type dropped", "kubernetes security", "policyTypes",
     lambda d: by_kind(d, "NetworkPolicy")["spec"].update(policyTypes=["Ingress"])),
    ("metrics port in the Service", "kubernetes security", "ports",
     lambda d: by_kind(d, "Service")["spec"]["ports"].append({"name": "metrics", "port": METRICS_PORT})),
    ("no memory limit", "kubernetes security", "resources.limits.memory",
     lambda d: container(d, "backend")["resources"]["limits"].pop("memory")),
    ("hostNetwork", "kubernetes security", "hostNetwork",
     lambda d: pod_of(d).update(hostNetwork=True)),
    ("unknown field (schema)", "kubernetes schemas", "invalid",
     lambda d: container(d, "gateway").update(securityContxt={})),
    ("wrong type (schema)", "kubernetes schemas", "invalid",
     lambda d: by_kind(d, "Deployment")["spec"].update(replicas="two")),
    ("unknown warden.toml key", "kubernetes warden.toml", "not a documented key",
     lambda d: by_kind(d, "ConfigMap")["data"].update({"warden.toml": by_kind(d, "ConfigMap")["data"]["warden.toml"] + "\n[limits2]\nx = 1\n"})),
    ("gateway uid mismatch in warden.toml", "kubernetes warden.toml", "gateway.uid",
     lambda d: by_kind(d, "ConfigMap")["data"].update({"warden.toml": by_kind(d, "ConfigMap")["data"]["warden.toml"].replace("uid = 5001", "uid = 5005")})),
    ("file left out of kustomization", "kustomization", "does not list",
     lambda d: d["kustomization.yaml"][0]["resources"].remove("networkpolicy.yaml")),
]


def text_mutations():
    return [
        ("Dockerfile", "no HEALTHCHECK", "no HEALTHCHECK",
         lambda t: re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*\n", "", t)),
        ("Dockerfile", "runs as root", "USER",
         lambda t: t.replace("USER 5000:5000", "USER root")),
        ("Dockerfile", "no USER", "no USER",
         lambda t: t.replace("USER 5000:5000\n", "")),
        ("Dockerfile", "final stage on the Rust toolchain", "toolchain",
         lambda t: t.replace("ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12", "ARG RUNTIME_BASE=rust:1.95-bookworm")),
        ("Dockerfile", "final stage on Debian with apt", "package-manager",
         lambda t: t.replace("ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12", "ARG RUNTIME_BASE=debian:bookworm-slim")),
        ("Dockerfile", "final stage FROM a build stage", "toolchain",
         lambda t: t.replace("FROM ${RUNTIME_BASE}\n", "FROM build-source\n")),
        ("Dockerfile", "final stage copies the build context", "build context",
         lambda t: t.replace("ENV WARDEN_OPENVINO_DIR", "COPY certs-dev /etc/warden/certs\nENV WARDEN_OPENVINO_DIR")),
        ("Dockerfile", "gcc installed in the final stage", "build or package tool",
         lambda t: t.replace("ENV WARDEN_OPENVINO_DIR", "RUN apt-get install -y gcc\nENV WARDEN_OPENVINO_DIR")),
        ("Dockerfile", "cargo copied into the final stage", "build tool",
         lambda t: t.replace("ENV WARDEN_OPENVINO_DIR", "COPY --from=build /usr/local/cargo/bin/cargo /usr/local/bin/cargo\nENV WARDEN_OPENVINO_DIR")),
        ("dockerignore", ".venv not ignored", ".venv",
         lambda t: t.replace(".venv\n", "")),
        ("unit", "ProtectSystem removed", "ProtectSystem",
         lambda t: t.replace("ProtectSystem=strict\n", "")),
        ("unit", "NoNewPrivileges=no", "NoNewPrivileges",
         lambda t: t.replace("NoNewPrivileges=yes", "NoNewPrivileges=no")),
        ("unit", "MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute",
         lambda t: t + "\n[Service]\nMemoryDenyWriteExecute=yes\n"),
        ("unit", "CAP_SYS_ADMIN granted", "beyond what the supervisor needs",
         lambda t: t.replace("CapabilityBoundingSet=CAP_CHOWN", "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_CHOWN")),
        ("unit", "CAP_NET_BIND_SERVICE with high ports", "beyond what the supervisor needs",
         lambda t: t.replace("CapabilityBoundingSet=CAP_CHOWN", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_CHOWN")),
        ("unit", "CAP_FSETID missing", "lacks",
         lambda t: t.replace(" CAP_FSETID", "")),
        ("unit", "AF_NETLINK allowed", "RestrictAddressFamilies",
         lambda t: t.replace("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK")),
        ("unit", "landlock calls filtered", "landlock",
         lambda t: t.replace(" landlock_restrict_self", "")),
        ("unit", "no audit log path", "ReadWritePaths",
         lambda t: t.replace("ReadWritePaths=/var/log/warden\n", "")),
        ("grafana", "unknown metric", "unknown metric",
         lambda t: t.replace("ovms_requests_fail{", "ovms_request_failures{", 1)),
        ("grafana", "histogram suffix on a counter", "unknown metric",
         lambda t: t.replace("warden_rate_limited_total[", "warden_rate_limited_total_bucket[", 1)),
        ("grafana", "old schema", "schemaVersion",
         lambda t: t.replace('"schemaVersion": 39', '"schemaVersion": 27')),
        ("grafana", "not JSON", "does not parse",
         lambda t: t[:-5]),
    ]


def self_test(root: Path) -> list[str]:
    failures = []
    k8s = load_k8s(root)
    for desc, group, needle, edit in K8S_MUTATIONS:
        results = run_all(root, only=group, k8s=mutate_k8s(edit)(k8s))
        if not any(needle in e for e in results[group]):
            failures.append(f"self-test: {desc!r} was not reported by {group!r} (got {results[group]})")
    texts = {
        "Dockerfile": (root / "Dockerfile").read_text(),
        "dockerignore": (root / ".dockerignore").read_text(),
        "unit": (root / "deploy/systemd/warden.service").read_text(),
        "grafana": (root / "deploy/grafana/warden.json").read_text(),
    }
    groups = {"Dockerfile": "Dockerfile", "dockerignore": "Dockerfile", "unit": "systemd", "grafana": "Grafana"}
    kw = {"Dockerfile": "dockerfile", "dockerignore": "dockerignore", "unit": "unit", "grafana": "grafana"}
    for which, desc, needle, edit in text_mutations():
        mutated = edit(texts[which])
        if mutated == texts[which]:
            failures.append(f"self-test: edit {desc!r} changed nothing (the file moved on; update the self-test)")
            continue
        group = groups[which]
        results = run_all(root, only=group, k8s=k8s, **{kw[which]: mutated})
        if not any(needle in e for e in results[group]):
            failures.append(f"self-test: {desc!r} was not reported by {group!r} (got {results[group]})")
    if shutil.which("systemd-analyze"):
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "warden.service"
            bad.write_text(texts["unit"].replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes"))
            if not check_systemd_analyze(bad):
                failures.append("self-test: systemd-analyze verify did not report a misspelt key")
    return failures


def render_config(root: Path, which: str, sets: list[str]) -> str:
    if which == "kubernetes":
        text = by_kind(load_k8s(root), "ConfigMap")["data"]["warden.toml"]
    elif which == "systemd":
        text = (root / "deploy/systemd/warden.toml").read_text()
    else:
        raise SystemExit(f"render-config: unknown {which!r} (kubernetes or systemd)")
    for item in sets:
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        pattern = re.compile(rf"(^\[{re.escape(section)}\][^\[]*?^){re.escape(key)}\s*=[^\n#]*", re.M | re.S)
        text, n = pattern.subn(lambda m: m.group(1) + f"{key} = {json.dumps(value)}", text)
        if n != 1:
            raise SystemExit(f"render-config: {dotted} not found in the {which} warden.toml")
    return text


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "render-config":
        root = Path(os.environ.get("WARDEN_ROOT", Path(__file__).resolve().parents[2]))
        sets = [a for a in argv[3:] if a != "--set"]
        sys.stdout.write(render_config(root, argv[2], sets))
        return 0
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2]
    results = run_all(root)
    results["kustomize render"] = check_kustomize_render(root)
    results["systemd-analyze"] = check_systemd_analyze(root / "deploy/systemd/warden.service")
    problems = 0
    for group, errors in results.items():
        for e in errors:
            print(f"FAIL [{group}] {e}")
        problems += len(errors)
        if not errors:
            print(f"ok   [{group}]")
    failures = self_test(root)
    for f in failures:
        print(f"FAIL {f}")
    n = len(K8S_MUTATIONS) + len(text_mutations())
    print(f"self-test: {n - len(failures)} of {n} hostile edits caught")
    print(f"kubernetes schemas: kubernetes-validate, Kubernetes {', '.join(K8S_VERSIONS)}, strict")
    return 1 if problems or failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
