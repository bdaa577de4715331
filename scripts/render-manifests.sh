#!/usr/bin/env bash
# Regenerates the static manifests from the Helm chart deploy/helm/openclaw-csi-provider with real Helm (PyPI
# helm-python-sdk: Helm's Go SDK, rendering offline), and the chart's copy of the SecretSync CRD:
#   deploy/manifests/openclaw-csi-provider.yaml        release openclaw-csi-provider, namespace kube-system
#   deploy/manifests/openclaw-csi-provider-sync.yaml   the same with sync.enabled=true
#   deploy/helm/openclaw-csi-provider/files/crds/secretsync.yaml   = deploy/crds/secretsync.yaml
# Both manifests use the default values except hmacKey.create=false (and sync.hmacKey.create=false): a random
# key written into a checked-in file would be the same key on every cluster (tests/helm/chartlib.py says more).
# tests/helm/check_chart.py fails while these files differ from the chart. Run after changing the chart or
# after regenerating the CRD (OPENCLAW_WRITE_CRD=1 cargo test --lib sync::crd).
#   scripts/render-manifests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/test-tools/venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
fi
exec "$venv/bin/python" tests/helm/chartlib.py --write
