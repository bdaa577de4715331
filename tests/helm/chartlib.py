"""Rendering of the Helm chart deploy/helm/openclaw-csi-provider with real Helm (PyPI helm-python-sdk, Helm's Go
SDK behind a C ABI; offline: `lookup` finds nothing), shared by scripts/render-manifests.sh (which writes
deploy/manifests/*.yaml) and tests/helm/check_chart.py (which checks that they are up to date).

    python tests/helm/chartlib.py --write    # rewrite deploy/manifests/*.yaml and the chart's CRD copy
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "openclaw-csi-provider"
CRD_SOURCE = REPO / "deploy" / "crds" / "secretsync.yaml"
CRD_COPY = CHART / "files" / "crds" / "secretsync.yaml"
RELEASE = "openclaw-csi-provider"
NAMESPACE = "kube-system"

# The static manifests: the chart's default values, release openclaw-csi-provider in kube-system, except the
# HMAC key Secrets. The chart makes their keys with randBytes at install (kept across upgrades by `lookup`);
# a key written into a file in this repository would be the same published key on every cluster that applies
# the file, so the static manifests leave the Secrets out (hmacKey.create=false) and their header says how to
# create them once.
NO_KEY_SECRETS: dict[str, Any] = {"hmacKey": {"create": False}, "sync": {"hmacKey": {"create": False}}}
MANIFESTS: dict[str, dict[str, Any]] = {
    "deploy/manifests/openclaw-csi-provider.yaml": copy.deepcopy(NO_KEY_SECRETS),
    "deploy/manifests/openclaw-csi-provider-sync.yaml": {
        "hmacKey": {"create": False},
        "sync": {"enabled": True, "hmacKey": {"create": False}},
    },
}

# Helm's install order (pkg/release/util/kind_sorter.go InstallOrder): `helm template` prints objects by kind in
# this order, unknown kinds last; within a kind, in template path order.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
    "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, str]:
    """The chart's templates rendered by Helm: template path -> text (NOTES.txt included)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=name, namespace=namespace, is_install=True)


def notes(rendered: dict[str, str]) -> str:
    for path, text in rendered.items():
        if path.endswith("/templates/NOTES.txt"):
            return text
    return ""


def documents(rendered: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(template path, document text, parsed object) of every object, in Helm's install order."""
    docs: list[tuple[str, str, dict[str, Any]]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        chunk: list[str] = []
        for line in rendered[path].split("\n") + ["---"]:
            if line.rstrip() == "---":
                text = "\n".join(chunk).strip("\n")
                chunk = []
                obj = yaml.safe_load(text) if text.strip() else None
                if obj is None:
                    continue
                if not isinstance(obj, dict) or "kind" not in obj:
                    raise ValueError(f"{path}: a document that is not a Kubernetes object:\n{text}")
                docs.append((path, text, obj))
            else:
                chunk.append(line)

    def order(item: tuple[str, str, dict[str, Any]]) -> tuple[int, str]:
        kind = item[2]["kind"]
        if kind in INSTALL_ORDER:
            return (INSTALL_ORDER.index(kind), "")
        return (len(INSTALL_ORDER), kind)

    return sorted(docs, key=order)  # stable: template path order within a kind


def manifest_text(path: str, values: dict[str, Any]) -> str:
    """The text of one static manifest file: a header, the NOTES as comments, then every object."""
    rendered = render(values)
    overrides = yaml.safe_dump(values, default_flow_style=True, width=1000).strip()
    header = [
        "# The Helm chart deploy/helm/openclaw-csi-provider rendered by scripts/render-manifests.sh: release",
        f"# {RELEASE}, namespace {NAMESPACE}, the default values but",
        f"#   {overrides}",
        "# Do not edit: change the chart and run scripts/render-manifests.sh (tests/helm/check_chart.py fails while",
        "# this file differs from the chart).",
        "#",
        "# The HMAC key Secrets are left out (a key in this file would be the same on every cluster): create each",
        "# once before applying, as the NOTES below say (`kubectl ... create secret generic ...`).",
        "#",
        "# The chart's NOTES for these values:",
        "#",
    ]
    for line in notes(rendered).strip("\n").split("\n"):
        header.append(("#   " + line).rstrip())
    out = "\n".join(header) + "\n"
    for source, text, _ in documents(rendered):
        out += f"---\n# Source: {source}\n{text}\n"
    return out


def copy_crd() -> None:
    CRD_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CRD_SOURCE, CRD_COPY)


def write_manifests() -> list[Path]:
    written = []
    for rel, values in MANIFESTS.items():
        target = REPO / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(manifest_text(rel, values))
        written.append(target)
    return written


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    copy_crd()
    for target in write_manifests():
        print(f"wrote {target.relative_to(REPO)}")
