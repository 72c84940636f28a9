#!/usr/bin/env bash
# A local Prometheus reporting fake GPU usage, for trying `posture-farm gpu`,
# `place` and the gpu-least-loaded scheduler without GPU boards.
#
# Starts prometheus-node-exporter (textfile collector only) and Prometheus
# (scraping it every second) on 127.0.0.1, both as child processes of this
# script, and writes jetson_gpu_usage_percent{node="<name>"} <value> for each
# NODE=VALUE argument. Edit $DIR/textfiles/gpu.prom to change values live.
# Ctrl-C stops both.
#
# Usage: scripts/prometheus-test.sh [--port 9090] [NODE=VALUE ...]
#   default nodes: agx=20 xavier=70 orin=35
# Needs: apt-get install prometheus prometheus-node-exporter
set -euo pipefail

port=9090
exporter_port=9911
nodes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --exporter-port) exporter_port="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *=*) nodes+=("$1"); shift ;;
    *) echo "unexpected argument: $1" >&2; exit 2 ;;
  esac
done
[ ${#nodes[@]} -gt 0 ] || nodes=(agx=20 xavier=70 orin=35)

for bin in prometheus prometheus-node-exporter; do
  command -v "$bin" >/dev/null || { echo "$bin not found: apt-get install prometheus prometheus-node-exporter" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/posture-prometheus.XXXXXX)
mkdir -p "$DIR/textfiles" "$DIR/data"
for kv in "${nodes[@]}"; do
  printf 'jetson_gpu_usage_percent{node="%s"} %s\n' "${kv%%=*}" "${kv#*=}"
done > "$DIR/textfiles/gpu.prom"
cat > "$DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['127.0.0.1:${exporter_port}']
EOF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

prometheus-node-exporter --web.listen-address="127.0.0.1:${exporter_port}" \
  --collector.disable-defaults --collector.textfile \
  --collector.textfile.directory="$DIR/textfiles" >"$DIR/exporter.log" 2>&1 &
pids+=($!)
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
  --web.listen-address="127.0.0.1:${port}" >"$DIR/prometheus.log" 2>&1 &
pids+=($!)

echo "Prometheus on http://127.0.0.1:${port} (files in $DIR); metrics:"
cat "$DIR/textfiles/gpu.prom"
echo "try: PROMETHEUS_URL=http://127.0.0.1:${port} posture-farm gpu --watch"
wait
