"""Checks of the Helm chart deploy/helm/openclaw-csi-provider, with real Helm (PyPI helm-python-sdk) and the
Kubernetes schemas (PyPI kubernetes-validate), both installed by scripts/test-requirements.txt:

    target/test-tools/venv/bin/python tests/helm/check_chart.py

For the default values and for each feature switched on it renders the chart, runs `helm lint --strict`,
validates every rendered object against the Kubernetes 1.29 schemas and the newest ones kubernetes-validate
ships (strict: unknown fields are errors; kinds it has no schema for, such as the ServiceMonitor, are skipped and
named), and asserts what the chart promises: the RBAC split (the DaemonSet gets `get` on its one key Secret and
only the rules its features need; the sync controller's Secret writes, workload patches and tokens never reach
the DaemonSet), the flags, volumes, probes, security contexts and resources, and the NOTES' audiences. It also
checks that deploy/manifests/*.yaml are the chart rendered (scripts/render-manifests.sh) and that the chart's CRD
is deploy/crds/secretsync.yaml. Exits non-zero on any failure; the last line counts the checks.
"""

from __future__ import annotations

import base64
import copy
import difflib
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
import chartlib  # noqa: E402
from chartlib import CHART, CRD_COPY, CRD_SOURCE, MANIFESTS, NAMESPACE, RELEASE, REPO  # noqa: E402

KUBE_VERSIONS = ["1.29", kv_utils.major_minor(kv_utils.latest_version())]
SOCKET_DIR = "/var/run/secrets-store-csi-providers"
FULLNAME = RELEASE
KEY_SECRET = f"{FULLNAME}-hmac-key"
SYNC = f"{FULLNAME}-sync"
SYNC_KEY_SECRET = f"{SYNC}-hmac-key"
MAX_PROVIDER_MEMORY_LIMIT = 100 * 1024 * 1024

passed = 0
failed = 0


def check(name: str, fn: Callable[[], None]) -> None:
    global passed, failed
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
        failed += 1
        print(f"FAIL {name}: {e}")
        if not isinstance(e, AssertionError):
            traceback.print_exc()
    else:
        passed += 1
        print(f"ok   {name}")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


ONLY = {
    "file": {"backends": {"file": {"enabled": True}, "vault": {"enabled": False}, "aws": {"enabled": False},
                          "gcp": {"enabled": False}}},
    "vault": {"backends": {"vault": {"enabled": True}, "aws": {"enabled": False}, "gcp": {"enabled": False}}},
    "aws": {"backends": {"vault": {"enabled": False}, "aws": {"enabled": True}, "gcp": {"enabled": False}}},
    "gcp": {"backends": {"vault": {"enabled": False}, "aws": {"enabled": False}, "gcp": {"enabled": True}}},
}

# Every feature switched on, one scenario each (plus the defaults and everything at once).
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "vault (TLS from a ConfigMap and a Secret)": merge(ONLY["vault"], {"backends": {"vault": {
        "address": "https://vault.vault.svc:8200", "allowedAddresses": ["https://vault-dr.vault.svc:8200"],
        "namespace": "team-a", "authMount": "k8s-prod",
        "tls": {"caCert": {"configMap": "vault-ca", "key": "ca.pem"},
                "clientCert": {"secret": "vault-client"}, "serverName": "vault.internal",
                "filesDir": "/etc/openclaw-tls", "allowInsecureFromPods": True},
    }}, "extraVolumes": [{"name": "tls-files", "configMap": {"name": "openclaw-tls"}}],
        "extraVolumeMounts": [{"name": "tls-files", "mountPath": "/etc/openclaw-tls", "readOnly": True}]}),
    "vault (CA from a Secret, skip verify)": merge(ONLY["vault"], {"backends": {"vault": {
        "address": "https://vault:8200", "tls": {"caCert": {"secret": "vault-ca-secret"}, "skipVerify": True}}}}),
    "aws (region set)": merge(ONLY["aws"], {"backends": {"aws": {
        "region": "eu-west-1", "podIdentity": False, "podIdentityEndpoint": "http://169.254.170.23/v1/credentials"}}}),
    "aws (region from the node)": merge(ONLY["aws"], {}),
    "gcp (GKE pool, endpoints, credentials file)": merge(ONLY["gcp"], {"backends": {"gcp": {
        "project": "acme-prod", "clusterLocation": "europe-west4", "clusterName": "openclaw",
        "credentials": {"configMap": "gcp-wif"}, "allowProviderADC": True,
        "endpoints": {"sts": "https://sts.example/v1/token", "iamCredentials": "https://iam.example",
                      "secretManager": "https://sm.example", "parameterManager": "https://pm.example",
                      "metadata": "http://metadata.example"}}}}),
    "gcp (audience of a credentials file)": merge(ONLY["gcp"], {"backends": {"gcp": {
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"}}}),
    "file root": merge(ONLY["file"], {"backends": {"file": {"layout": "shared", "hostPath": "/srv/keys"}}}),
    "compat sockets and default backend": {"compat": ["vault", "aws", "gcp"], "defaultBackend": "vault",
                                           "backends": {"vault": {"address": "https://vault:8200"}},
                                           "socketDir": {"hostPath": "/var/run/secrets-store-csi-providers"}},
    "sync": {"sync": {"enabled": True}},
    "sync (one namespace, no CRD keep)": {"sync": {"enabled": True, "watchNamespace": "team-a",
                                                   "crd": {"keep": False}}},
    "sync (vault only)": merge(ONLY["vault"], {"sync": {"enabled": True},
                                               "backends": {"vault": {"address": "https://vault:8200"}}}),
    "ServiceMonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                       "sync": {"enabled": True}},
    "token request fallback": {"tokenRequestFallback": True},
    "non-root with the chown init container": {"nonRoot": {"enabled": True}, "compat": ["vault"],
                                                "backends": {"vault": {"address": "https://vault:8200"}}},
    "non-root without the init container": {"nonRoot": {"enabled": True, "runAsUser": 1000, "runAsGroup": 1000,
                                                        "chownInit": {"enabled": False}}},
    "image, scheduling and pod metadata": {
        "image": {"repository": "registry.example/openclaw-csi-provider", "tag": "0.1.0",
                  "digest": "sha256:" + "a" * 64, "pullPolicy": "Always", "pullSecrets": ["regcred"]},
        "priorityClassName": "system-node-critical", "tolerations": [{"key": "a", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}]}}},
        "podAnnotations": {"a": "b"}, "podLabels": {"team": "platform"},
        "logFormat": "text", "logLevel": "openclaw_csi_provider=debug",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
        "extraArgs": ["--cache-ttl=10"], "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "p@acme.iam.gserviceaccount.com"}},
        "sync": {"enabled": True, "replicas": 3, "priorityClassName": "high",
                 "extraArgs": ["--sync-concurrency=4"], "podLabels": {"team": "platform"}}},
    "everything on": merge(
        {"backends": {"file": {"enabled": True}, "vault": {"address": "https://vault:8200",
                                                            "tls": {"caCert": {"configMap": "vault-ca"}}},
                      "gcp": {"project": "acme-prod", "credentials": {"configMap": "gcp-wif"}}},
         "compat": ["vault", "aws", "gcp"], "defaultBackend": "file", "tokenRequestFallback": True,
         "nonRoot": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}},
         "sync": {"enabled": True}}, {}),
    "static manifest values (no key Secrets)": MANIFESTS["deploy/manifests/openclaw-csi-provider-sync.yaml"],
}

# Values the chart must refuse, with a part of the message.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "compat names an unknown backend": ({"compat": ["azure"]}, "compat"),
    "compat names a disabled backend": (merge(ONLY["vault"], {"compat": ["aws"]}), "backends.aws.enabled"),
    "defaultBackend unknown": ({"defaultBackend": "azure"}, "defaultBackend"),
    "defaultBackend disabled": ({"defaultBackend": "file"}, "backends.file.enabled"),
    "maxSurge on the DaemonSet": ({"updateStrategy": {"type": "RollingUpdate",
                                                      "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
                                  "maxSurge"),
    "vault CA from both a ConfigMap and a Secret": (
        {"backends": {"vault": {"tls": {"caCert": {"configMap": "a", "secret": "b"}}}}}, "caCert"),
    "logFormat unknown": ({"logFormat": "xml"}, "logFormat"),
    "non-root as uid 0": ({"nonRoot": {"enabled": True, "runAsUser": 0}}, "runAsUser"),
    "ServiceMonitor without a Service": ({"metrics": {"serviceMonitor": {"enabled": True},
                                                      "service": {"enabled": False}}}, "serviceMonitor"),
    "no backend enabled": ({"backends": {b: {"enabled": False} for b in ("file", "vault", "aws", "gcp")}},
                           "at least one backend"),
    "sync with the file backend only": ({"sync": {"enabled": True}, "backends": {
        "file": {"enabled": True}, "vault": {"enabled": False}, "aws": {"enabled": False},
        "gcp": {"enabled": False}}}, "sync.enabled"),
    "sync sharing the provider's service account": ({"sync": {"enabled": True, "serviceAccount": {
        "name": "shared"}}, "serviceAccount": {"name": "shared"}}, "must differ"),
}


# ---------------------------------------------------------------------------------------------------------------
# Helpers over rendered objects


class Render:
    def __init__(self, values: dict[str, Any]):
        self.values = values
        self.merged = chart_values(values)
        self.raw = chartlib.render(values)
        self.docs = chartlib.documents(self.raw)
        self.objects = [obj for _, _, obj in self.docs]
        self.notes = chartlib.notes(self.raw)

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.find(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def daemonset(self) -> dict[str, Any]:
        return self.one("DaemonSet", FULLNAME)

    def provider(self) -> dict[str, Any]:
        return container(self.daemonset(), "provider")


_default_values: dict[str, Any] | None = None


def chart_values(values: dict[str, Any]) -> dict[str, Any]:
    global _default_values
    if _default_values is None:
        with helm.Chart.load(CHART) as chart:
            _default_values = chart.values
    return merge(_default_values, values)


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def flags(c: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for arg in c["args"][1:]:
        assert arg.startswith("--"), f"argument {arg!r} is not a flag"
        name, _, value = arg.partition("=")
        out[name] = value if "=" in arg else None
    return out


def quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m, f"bad quantity {q!r}"
    return float(m.group(1)) * units.get(m.group(2), 1) if m.group(2) else float(m.group(1))


Rule = tuple[str | None, str, str, str, tuple[str, ...]]  # (namespace or None = cluster, group, resource, verb, names)


def permissions(r: Render, namespace: str, sa: str) -> set[Rule]:
    """Every (scope, apiGroup, resource, verb, resourceNames) the rendered RBAC grants this ServiceAccount."""
    roles = {("ClusterRole", o["metadata"]["name"], None): o for o in r.find("ClusterRole")}
    roles.update({("Role", o["metadata"]["name"], o["metadata"]["namespace"]): o for o in r.find("Role")})
    grants: set[Rule] = set()
    for binding in r.find("ClusterRoleBinding") + r.find("RoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == namespace
                   for s in binding["subjects"]):
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        key = (ref["kind"], ref["name"], scope if ref["kind"] == "Role" else None)
        assert key in roles, f"{binding['kind']} {binding['metadata']['name']} refers to a missing {key}"
        for rule in roles[key].get("rules") or []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {roles[key]['metadata']['name']}"
                        grants.add((scope, group, resource, verb, tuple(sorted(rule.get("resourceNames", [])))))
    return grants


def expected_provider_rules(v: dict[str, Any]) -> set[Rule]:
    b = v["backends"]
    want: set[Rule] = {(NAMESPACE, "", "secrets", "get", (KEY_SECRET,))}
    if b["aws"]["enabled"] or b["gcp"]["enabled"]:
        want.add((None, "", "serviceaccounts", "get", ()))
    if b["aws"]["enabled"] and b["aws"]["regionFromNode"] and not b["aws"]["region"]:
        want.add((None, "", "nodes", "get", ()))
    if v["tokenRequestFallback"]:
        want.add((None, "", "serviceaccounts/token", "create", ()))
    return want


def expected_sync_rules(v: dict[str, Any]) -> set[Rule]:
    """deploy/sync.yaml's rules for the sync ServiceAccount, renamed for this release, without its `create` on
    secrets in its own namespace (the chart creates the key Secret) and with serviceaccounts get only for aws/gcp.
    """
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "sync.yaml").read_text()) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    watch_ns = v["sync"]["watchNamespace"] or None
    rename = {"openclaw-sync": SYNC, "openclaw-sync-hmac-key": SYNC_KEY_SECRET}
    want: set[Rule] = set()
    for kind, name, scope in [("ClusterRole", "openclaw-sync-watch", watch_ns),
                              ("ClusterRole", "openclaw-sync", watch_ns),
                              ("Role", "openclaw-sync", NAMESPACE)]:
        for rule in by_name[(kind, name)]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = tuple(sorted(rename.get(n, n) for n in rule.get("resourceNames", [])))
                        if kind == "Role" and resource == "secrets" and verb == "create":
                            continue
                        if resource == "serviceaccounts" and not (v["backends"]["aws"]["enabled"]
                                                                  or v["backends"]["gcp"]["enabled"]):
                            continue
                        want.add((scope, group, resource, verb, names))
    return want


def fmt(rules: set[Rule]) -> str:
    return "\n      ".join(sorted(str(r) for r in rules)) or "(none)"


# ---------------------------------------------------------------------------------------------------------------
# Checks run on every scenario


def validate_schemas(r: Render) -> list[str]:
    """Strict schema validation for each Kubernetes version; returns the kinds skipped for lack of a schema."""
    skipped = []
    for version in KUBE_VERSIONS:
        for source, _, obj in r.docs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                skipped.append(f"{obj['apiVersion']} {obj['kind']} ({version})")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise AssertionError(f"{source}: {obj['kind']} {obj['metadata']['name']} is not valid for "
                                     f"Kubernetes {version}: {path}: {e.message}") from None
    return skipped


def check_lint(values: dict[str, Any]) -> None:
    for version in KUBE_VERSIONS:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
        assert not problems, f"helm lint --strict (Kubernetes {version}): {problems}"


def check_common(r: Render) -> None:
    v = r.merged
    b = v["backends"]
    ds = r.daemonset()
    pod = ds["spec"]["template"]["spec"]
    c = r.provider()
    f = flags(c)
    assert c["args"][0] == "serve"
    assert f["--socket"] == f"{SOCKET_DIR}/openclaw.sock", f["--socket"]
    assert f["--health-addr"] == "0.0.0.0:8080"
    assert f["--hmac-key-secret"] == f"{NAMESPACE}/{KEY_SECRET}"
    assert f["--log-format"] == v["logFormat"] and f["--log-level"] == v["logLevel"]
    assert ("--file-root" in f) == b["file"]["enabled"], "--file-root only with backends.file.enabled"
    assert ("--compat" in f) == bool(v["compat"]) and (f.get("--compat") or "") == ",".join(v["compat"])
    assert (f.get("--default-backend") or "") == v["defaultBackend"]
    assert ("--token-request-fallback" in f) == v["tokenRequestFallback"]
    assert ("--vault-addr" in f) == bool(b["vault"]["enabled"] and b["vault"]["address"])
    for prefix, backend in [("--vault-", "vault"), ("--aws-", "aws"), ("--gcp-", "gcp")]:
        if not b[backend]["enabled"]:
            assert not [k for k in f if k.startswith(prefix)], f"{prefix}* flags with {backend} disabled"
    # The socket directory.
    volumes = {vol["name"]: vol for vol in pod["volumes"]}
    assert volumes["provider-socket"]["hostPath"] == {"path": v["socketDir"]["hostPath"], "type": "DirectoryOrCreate"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["provider-socket"]["mountPath"] == SOCKET_DIR
    assert ("file-root" in volumes) == b["file"]["enabled"]
    if b["file"]["enabled"]:
        assert mounts["file-root"]["readOnly"] is True and f["--file-root"] == "/openclaw-secrets"
        assert volumes["file-root"]["hostPath"]["path"] == b["file"]["hostPath"]
    # Probes on the health port.
    assert c["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    # Resources: requests and a memory limit under 100Mi.
    res = c["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]), res
    assert quantity(res["limits"]["memory"]) < MAX_PROVIDER_MEMORY_LIMIT, res
    assert quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"])
    # Security contexts of every container of the chart.
    workloads = [ds] + r.find("Deployment")
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        for cont in spec.get("initContainers", []) + spec["containers"]:
            sc = cont["securityContext"]
            where = f"{w['kind']} {w['metadata']['name']} container {cont['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc.get("privileged", False) is False, where
            seccomp = sc.get("seccompProfile") or spec.get("securityContext", {}).get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            added = sc["capabilities"].get("add", [])
            assert added == ([] if cont["name"] != "chown-socket-dir" else ["CHOWN"]), f"{where}: adds {added}"
        assert spec.get("hostNetwork", False) is False and spec.get("hostPID", False) is False
    assert pod["nodeSelector"].get("kubernetes.io/os") == "linux"
    # Non-root.
    init = pod.get("initContainers", [])
    if v["nonRoot"]["enabled"]:
        assert c["securityContext"]["runAsUser"] == v["nonRoot"]["runAsUser"]
        assert c["securityContext"]["runAsNonRoot"] is True
        assert bool(init) == v["nonRoot"]["chownInit"]["enabled"]
        if init:
            script = init[0]["command"][2]
            owner = f"{v['nonRoot']['runAsUser']}:{v['nonRoot']['runAsGroup']}"
            assert f"chown -h {owner} {SOCKET_DIR}\n" in script, script
            for name in ["openclaw"] + v["compat"]:
                assert f"{SOCKET_DIR}/{name}.sock.lock" in script, script
            assert init[0]["volumeMounts"] == [{"name": "provider-socket", "mountPath": SOCKET_DIR}]
    else:
        assert not init
        assert c["securityContext"]["runAsUser"] == 0
    # NODE_NAME only for the AWS region lookup.
    env = {e["name"] for e in c.get("env", [])}
    from_node = b["aws"]["enabled"] and b["aws"]["regionFromNode"] and not b["aws"]["region"]
    assert ("NODE_NAME" in env) == from_node, "NODE_NAME only for the AWS region from the node's label"
    # The HMAC key Secret.
    secrets = r.find("Secret")
    want = ([KEY_SECRET] if v["hmacKey"]["create"] else []) + (
        [SYNC_KEY_SECRET] if v["sync"]["enabled"] and v["sync"]["hmacKey"]["create"] else [])
    assert sorted(s["metadata"]["name"] for s in secrets) == sorted(want), [s["metadata"]["name"] for s in secrets]
    for s in secrets:
        assert set(s["data"]) == {"key"} and len(base64.b64decode(s["data"]["key"])) == 32, "a 32-byte key"
        assert s["metadata"]["namespace"] == NAMESPACE
    # The metrics Service selects the provider pods, on the health port.
    svc = r.one("Service", f"{FULLNAME}-metrics")
    assert svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "health" and svc["spec"]["ports"][0]["name"] == "metrics"
    assert bool(r.find("ServiceMonitor")) == v["metrics"]["serviceMonitor"]["enabled"]


def check_rbac(r: Render) -> None:
    v = r.merged
    provider_sa = r.daemonset()["spec"]["template"]["spec"]["serviceAccountName"]
    assert provider_sa == FULLNAME
    got = permissions(r, NAMESPACE, provider_sa)
    want = expected_provider_rules(v)
    assert got == want, f"DaemonSet RBAC\n    got:  {fmt(got)}\n    want: {fmt(want)}"
    # Said explicitly (implied by the equality above): no Secret verb but get on the one key Secret, no token
    # minting without the fallback, nothing of the sync controller's.
    for scope, group, resource, verb, names in got:
        if resource == "secrets":
            assert verb == "get" and names == (KEY_SECRET,) and scope == NAMESPACE
        assert group not in ("apps", "coordination.k8s.io", "openclaw.io"), f"DaemonSet has {group}/{resource}"
        assert resource != "events"
    if not v["tokenRequestFallback"]:
        assert not [g for g in got if g[2] == "serviceaccounts/token"]
    if not v["sync"]["enabled"]:
        assert not r.find("Deployment") and not r.find("CustomResourceDefinition") and not r.find("Lease")
        return
    dep = r.one("Deployment", SYNC)
    sync_sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    assert sync_sa == SYNC and sync_sa != provider_sa
    got = permissions(r, NAMESPACE, sync_sa)
    want = expected_sync_rules(v)
    assert got == want, f"sync RBAC (deploy/sync.yaml's split)\n    got:  {fmt(got)}\n    want: {fmt(want)}"
    # Every ClusterRole/Role is bound to exactly one of the two ServiceAccounts.
    for binding in r.find("ClusterRoleBinding") + r.find("RoleBinding"):
        subjects = {(s["namespace"], s["name"]) for s in binding["subjects"]}
        assert len(subjects) == 1 and subjects <= {(NAMESPACE, provider_sa), (NAMESPACE, sync_sa)}, binding


def check_sync(r: Render) -> None:
    v = r.merged
    if not v["sync"]["enabled"]:
        return
    dep = r.one("Deployment", SYNC)
    assert dep["spec"]["replicas"] == v["sync"]["replicas"]
    c = container(dep, "sync")
    f = flags(c)
    assert c["args"][0] == "sync"
    assert f["--hmac-key-secret"] == f"{NAMESPACE}/{SYNC_KEY_SECRET}"
    assert f["--leader-election-id"] == SYNC
    assert ("--namespace" in f) == bool(v["sync"]["watchNamespace"])
    assert "--file-root" not in f and "--token-request-fallback" not in f and "--compat" not in f
    # The same backend flags as the DaemonSet's.
    provider_flags = flags(r.provider())
    for name, value in provider_flags.items():
        if name.startswith(("--vault-", "--aws-", "--gcp-", "--tls-files-dir", "--allow-insecure-tls")):
            assert f.get(name, "missing") == value, f"sync {name}"
    pdb = r.one("PodDisruptionBudget", SYNC)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] == 1
    role = r.one("Role", f"{SYNC}-leader")
    lease_rules = [x for x in role["rules"] if "leases" in x["resources"] and "resourceNames" in x]
    assert lease_rules and lease_rules[0]["resourceNames"] == [SYNC]
    env = {e["name"] for e in c["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env
    # The CRD: deploy/crds/secretsync.yaml, with at most the keep annotation added.
    crds = r.find("CustomResourceDefinition")
    assert len(crds) == 1
    text = [t for _, t, o in r.docs if o["kind"] == "CustomResourceDefinition"][0]
    source = CRD_SOURCE.read_text()
    keep = "  annotations:\n    helm.sh/resource-policy: keep\n"
    if v["sync"]["crd"]["keep"]:
        assert keep in text, "the keep annotation"
        text = text.replace(keep, "", 1)
    else:
        assert "resource-policy" not in text
    assert text.strip("\n") == source.strip("\n"), "the rendered CRD differs from deploy/crds/secretsync.yaml"


def check_notes(r: Render) -> None:
    v = r.merged
    b = v["backends"]
    want = []
    if b["vault"]["enabled"]:
        want += v["backends"]["vault"]["audiences"]
    if b["aws"]["enabled"]:
        want += ["sts.amazonaws.com"] + (["pods.eks.amazonaws.com"] if b["aws"]["podIdentity"] else [])
    if b["gcp"]["enabled"]:
        want.append(b["gcp"]["audience"] or (f"{b['gcp']['project']}.svc.id.goog" if b["gcp"]["project"]
                                             else "<project>.svc.id.goog"))
    listed = re.findall(r"^       - audience: (.+)$", r.notes, flags=re.M)
    assert listed == want, f"NOTES audiences {listed}, want {want}"
    assert ("tokenRequests" in r.notes) == bool(want)
    if want:
        assert "secrets-store-csi-driver" in r.notes
        for i, audience in enumerate(want):
            assert f"--set 'tokenRequests[{i}].audience={audience}'" in r.notes
    else:
        assert "none here" in r.notes


def check_binary_flags(r: Render, helps: dict[str, str]) -> None:
    """Every flag the chart passes is one `serve --help` / `sync --help` lists (when the binary is built)."""
    workloads = [(r.provider(), "serve")]
    if r.merged["sync"]["enabled"]:
        workloads.append((container(r.one("Deployment", SYNC), "sync"), "sync"))
    for c, mode in workloads:
        for name in flags(c):
            assert re.search(rf"^\s+{re.escape(name)}\b", helps[mode], flags=re.M), f"`{mode}` has no flag {name}"


# ---------------------------------------------------------------------------------------------------------------
# Scenario-specific checks


def specific(name: str, r: Render) -> None:
    f = flags(r.provider())
    c = r.provider()
    pod = r.daemonset()["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {vol["name"]: vol for vol in pod["volumes"]}
    if name.startswith("vault (TLS"):
        assert f["--vault-addr"] == "https://vault.vault.svc:8200"
        assert f["--vault-allowed-addresses"] == "https://vault-dr.vault.svc:8200"
        assert f["--vault-namespace"] == "team-a" and f["--vault-mount"] == "k8s-prod"
        assert f["--vault-ca-cert"] == "/etc/openclaw-csi-provider/vault-ca/ca.pem"
        assert f["--vault-client-cert"] == "/etc/openclaw-csi-provider/vault-client/tls.crt"
        assert f["--vault-client-key"] == "/etc/openclaw-csi-provider/vault-client/tls.key"
        assert f["--vault-tls-server-name"] == "vault.internal"
        assert f["--tls-files-dir"] == "/etc/openclaw-tls" and "--allow-insecure-tls" in f
        assert vols["vault-ca"]["configMap"]["name"] == "vault-ca"
        assert vols["vault-client"]["secret"]["secretName"] == "vault-client"
        assert mounts["vault-ca"] == "/etc/openclaw-csi-provider/vault-ca" and "tls-files" in mounts
        assert not r.find("ClusterRole"), "vault alone needs no cluster-wide rule"
    elif name.startswith("vault (CA from a Secret"):
        assert vols["vault-ca"]["secret"]["secretName"] == "vault-ca-secret"
        assert f["--vault-skip-verify"] == "true"
    elif name == "aws (region set)":
        assert f["--aws-region"] == "eu-west-1"
        assert f["--aws-pod-identity-endpoint"] == "http://169.254.170.23/v1/credentials"
        assert "pods.eks.amazonaws.com" not in r.notes
    elif name == "aws (region from the node)":
        env = {e["name"]: e for e in c["env"]}
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    elif name.startswith("gcp (GKE"):
        assert f["--gcp-project"] == "acme-prod" and f["--gcp-cluster-location"] == "europe-west4"
        assert f["--gcp-cluster-name"] == "openclaw"
        assert f["--gcp-credentials-file"] == "/etc/openclaw-csi-provider/gcp/credentials.json"
        assert f["--gcp-sts-endpoint"] == "https://sts.example/v1/token"
        assert f["--gcp-iam-credentials-endpoint"] == "https://iam.example"
        assert f["--gcp-secretmanager-endpoint"] == "https://sm.example"
        assert f["--gcp-parametermanager-endpoint"] == "https://pm.example"
        assert f["--gcp-metadata-endpoint"] == "http://metadata.example"
        assert "--gcp-allow-provider-adc" in f
        assert vols["gcp-credentials"]["configMap"]["name"] == "gcp-wif"
        assert "acme-prod.svc.id.goog" in r.notes
    elif name == "file root":
        assert f["--file-layout"] == "shared" and vols["file-root"]["hostPath"]["type"] == "Directory"
        assert not r.find("ClusterRole"), "the file backend needs no cluster-wide rule"
    elif name == "compat sockets and default backend":
        assert f["--compat"] == "vault,aws,gcp" and f["--default-backend"] == "vault"
        assert "remove the official provider's DaemonSet first" in r.notes
        assert "vault.sock (provider: vault), aws.sock (provider: aws), gcp.sock (provider: gcp)" in r.notes
    elif name == "sync (one namespace, no CRD keep)":
        assert flags(container(r.one("Deployment", SYNC), "sync"))["--namespace"] == "team-a"
        scoped = [b for b in r.find("RoleBinding") if b["metadata"]["namespace"] == "team-a"]
        assert sorted(b["metadata"]["name"] for b in scoped) == [SYNC, f"{SYNC}-watch"]
        assert not [b for b in r.find("ClusterRoleBinding") if b["metadata"]["name"].startswith(SYNC)]
    elif name == "ServiceMonitor":
        sm = r.one("ServiceMonitor", FULLNAME)
        assert sm["metadata"]["labels"]["release"] == "prom"
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"
        svcs = [s for s in r.find("Service") if s["spec"]["ports"][0]["name"] == "metrics"]
        assert len(svcs) == 2, "the provider's and the sync controller's metrics Services"
        for s in svcs:
            assert sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
            assert s["metadata"]["labels"]["app.kubernetes.io/component"] in ("provider", "sync")
    elif name == "token request fallback":
        assert "WARNING: tokenRequestFallback is on" in r.notes
    elif name == "non-root with the chown init container":
        init = pod["initContainers"][0]
        assert init["image"] == "busybox:1.37"
        assert init["securityContext"]["runAsUser"] == 0
    elif name == "image, scheduling and pod metadata":
        assert c["image"] == "registry.example/openclaw-csi-provider:0.1.0@sha256:" + "a" * 64  # tag from values
        assert c["imagePullPolicy"] == "Always" and pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["priorityClassName"] == "system-node-critical"
        assert pod["tolerations"] == [{"key": "a", "operator": "Exists"}]
        assert "nodeAffinity" in pod["affinity"]
        meta = r.daemonset()["spec"]["template"]["metadata"]
        assert meta["annotations"]["a"] == "b" and meta["labels"]["team"] == "platform"
        assert r.daemonset()["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "10%"}
        assert f["--cache-ttl"] == "10" and f["--log-format"] == "text"
        sa = r.one("ServiceAccount", FULLNAME)
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("p@")
        dep = r.one("Deployment", SYNC)
        assert dep["spec"]["replicas"] == 3
        assert dep["spec"]["template"]["spec"]["priorityClassName"] == "high"
        assert container(dep, "sync")["image"] == c["image"]
    elif name == "defaults":
        app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
        assert c["image"] == f"openclaw-csi-provider:{app_version}" and c["imagePullPolicy"] == "IfNotPresent"
        assert pod["tolerations"] == [{"operator": "Exists"}]
        assert not r.find("Deployment") and not r.find("ServiceMonitor")
        assert "WARNING: backends.vault is enabled without backends.vault.address" in r.notes


# ---------------------------------------------------------------------------------------------------------------


def binary_helps() -> dict[str, str] | None:
    dirs = [os.environ.get("CARGO_TARGET_DIR"), str(REPO / "target")]
    for d in filter(None, dirs):
        for profile in ("debug", "release"):
            binary = Path(d) / profile / "openclaw-csi-provider"
            if binary.is_file() and os.access(binary, os.X_OK):
                return {mode: subprocess.run([str(binary), mode, "--help"], capture_output=True, text=True,
                                             check=True).stdout for mode in ("serve", "sync")}
    return None


def main() -> int:
    print(f"helm-python-sdk {helm.helm_c_version()} (Helm SDK {helm.helm_sdk_version()}), "
          f"kubernetes-validate {kubernetes_validate.__version__}; Kubernetes schemas {', '.join(KUBE_VERSIONS)}")
    helps = binary_helps()
    if helps is None:
        print("note: no built openclaw-csi-provider binary found: flags are not checked against --help")

    def crd_copy() -> None:
        assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
            f"{CRD_COPY.relative_to(REPO)} differs from {CRD_SOURCE.relative_to(REPO)}: run "
            "scripts/render-manifests.sh\n" + "".join(difflib.unified_diff(
                CRD_SOURCE.read_text().splitlines(True), CRD_COPY.read_text().splitlines(True),
                str(CRD_SOURCE.relative_to(REPO)), str(CRD_COPY.relative_to(REPO)))))
    check("chart's CRD copy is deploy/crds/secretsync.yaml", crd_copy)

    def app_version() -> None:
        cargo = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), flags=re.M)
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        assert cargo and chart["appVersion"] == cargo.group(1), (
            f"Chart.yaml appVersion {chart['appVersion']!r} is not Cargo.toml's version {cargo and cargo.group(1)!r}")
        assert chart["apiVersion"] == "v2"
    check("Chart.yaml: apiVersion v2, appVersion = Cargo.toml's version", app_version)

    for rel, values in MANIFESTS.items():
        def manifest(rel: str = rel, values: dict[str, Any] = values) -> None:
            want = chartlib.manifest_text(rel, values)
            path = REPO / rel
            have = path.read_text() if path.exists() else ""
            if have != want:
                diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                                    f"{rel} (checked in)", f"{rel} (the chart rendered)"))
                raise AssertionError(f"{rel} is not the chart rendered: run scripts/render-manifests.sh\n{diff}")
        check(f"{rel} is the chart rendered", manifest)

    all_skipped: set[str] = set()
    for name, values in SCENARIOS.items():
        try:
            r = Render(values)
        except Exception as e:  # noqa: BLE001
            check(f"[{name}] renders", lambda e=e: (_ for _ in ()).throw(AssertionError(f"render failed: {e}")))
            continue
        check(f"[{name}] renders ({len(r.objects)} objects)", lambda: None)
        check(f"[{name}] helm lint --strict", lambda values=values: check_lint(values))

        def schemas(r: Render = r) -> None:
            all_skipped.update(validate_schemas(r))
        check(f"[{name}] strict schemas, Kubernetes {' and '.join(KUBE_VERSIONS)}", schemas)
        check(f"[{name}] provider: flags, volumes, probes, resources, security", lambda r=r: check_common(r))
        check(f"[{name}] RBAC split", lambda r=r: check_rbac(r))
        check(f"[{name}] sync controller", lambda r=r: check_sync(r))
        check(f"[{name}] NOTES audiences", lambda r=r: check_notes(r))
        if helps is not None:
            check(f"[{name}] flags exist in the binary", lambda r=r: check_binary_flags(r, helps))
        check(f"[{name}] specific", lambda name=name, r=r: specific(name, r))

    for name, (values, needle) in REFUSED.items():
        def refused(values: dict[str, Any] = values, needle: str = needle) -> None:
            try:
                chartlib.render(values)
            except helm.HelmError as e:
                assert needle in str(e), f"refused, but the message does not name {needle!r}: {e}"
            else:
                raise AssertionError("rendered; the chart should refuse these values")
        check(f"refuses: {name}", refused)

    def random_keys() -> None:
        a = Render({"sync": {"enabled": True}})
        b = Render({"sync": {"enabled": True}})
        keys = lambda r: {s["metadata"]["name"]: s["data"]["key"] for s in r.find("Secret")}  # noqa: E731
        ka, kb = keys(a), keys(b)
        assert set(ka) == {KEY_SECRET, SYNC_KEY_SECRET}
        assert ka[KEY_SECRET] != kb[KEY_SECRET] and ka[KEY_SECRET] != ka[SYNC_KEY_SECRET], "keys are random"
        for tmpl in ("hmac-key-secret.yaml", "sync/hmac-key-secret.yaml"):
            src = (CHART / "templates" / tmpl).read_text()
            assert 'lookup "v1" "Secret" .Release.Namespace $name' in src, f"{tmpl} keeps the key with lookup"
    check("HMAC key Secrets: random keys, kept with lookup", random_keys)

    for kind in sorted(all_skipped):
        print(f"skipped (kubernetes-validate has no schema): {kind}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
