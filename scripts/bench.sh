#!/usr/bin/env bash
# Benchmark: the release provider with the file backend and the three OpenClaw keys, driven by the
# project's own driver emulator (`mount --repeat`). Prints one JSON line per run and the provider's RSS.
#   scripts/bench.sh [mounts per run, default 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-20000}"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/openclaw-csi-provider"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/root/openclaw"
printf 'bench-gateway-token-not-real-0123456789' > "$work/root/openclaw/OPENCLAW_GATEWAY_TOKEN"
printf 'sk-ant-bench-not-real-0123456789abcdef' > "$work/root/openclaw/ANTHROPIC_API_KEY"
printf 'sk-bench-not-real-0123456789abcdef' > "$work/root/openclaw/OPENAI_API_KEY"
"$bin" serve --socket "$work/openclaw.sock" --file-root "$work/root" --health-addr "" \
    --hmac-key-file "$work/hmac.key" 2> "$work/provider.log" &
pid=$!
for _ in $(seq 100); do [ -S "$work/openclaw.sock" ] && break; sleep 0.05; done
rss() { awk '/VmRSS/ {print $2 " KiB"}' "/proc/$pid/status"; }
sleep 1
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "provider idle RSS: $(rss)"
for concurrency in 1 64; do
    printf 'concurrency %s: ' "$concurrency"
    "$bin" mount --socket "$work/openclaw.sock" --spc deploy/examples/openclaw-file.yaml \
        --repeat "$count" --concurrency "$concurrency" --output json
    echo "provider RSS after $count more mounts: $(rss)"
done
