#!/usr/bin/env bash
# Quick start: starts a local Elasticsearch, writes sample container logs (CRI,
# the format of /var/log/pods on Kubernetes), runs logship on them, shows
# what arrived, and stops everything again.
#
#   scripts/quickstart.sh
#
# Needs Rust, Java 17, Maven, unzip and curl: scripts/packages.sh installs
# those Debian packages when they are missing. The first run downloads
# Elasticsearch (~95 MiB) from Maven Central and builds logship in release
# mode, which takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
es_script="$PWD/scripts/elasticsearch.sh"
scripts/packages.sh quickstart

work="$(mktemp -d "${TMPDIR:-/tmp}/logship-quickstart.XXXXXX")"
chmod 755 "$work" # Elasticsearch runs as `nobody` when this runs as root
agent=""
cleanup() {
    if [[ -n "$agent" ]] && kill -0 "$agent" 2>/dev/null; then
        kill -TERM "$agent" 2>/dev/null || true
        wait "$agent" 2>/dev/null || true
    fi
    if [[ -s "$work/es/es.pid" ]]; then
        echo "==> Stopping Elasticsearch"
        "$es_script" stop "$work/es" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> Building logship (release)"
cargo build --release --quiet

echo "==> Starting Elasticsearch (the first run downloads it with Maven)"
url="$("$es_script" start "$work/es")"
echo "    $url"

echo "==> Writing sample container logs"
pod="$work/pods/shop_web-6f9c7d-x2x9q_3f1e2d4c-0000-4000-8000-000000000001"
mkdir -p "$pod/web" "$pod/worker" "$work/data"
now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }
lines=0
for i in $(seq 1 50); do
    printf '%s stdout F GET /api/items/%d 200 %dms\n' "$(now)" "$i" $((i % 17 + 3)) >>"$pod/web/0.log"
    lines=$((lines + 1))
done
printf '%s stderr F {"level":"warn","msg":"slow query","ms":812}\n' "$(now)" >>"$pod/web/0.log"
lines=$((lines + 1))
# One long line that containerd split in two parts (P, then F).
printf '%s stdout P first half of a long line, \n' "$(now)" >>"$pod/worker/0.log"
printf '%s stdout F second half of it\n' "$(now)" >>"$pod/worker/0.log"
lines=$((lines + 1))
for i in $(seq 1 20); do
    printf '%s stdout F job %d done: naïve café ✓\n' "$(now)" "$i" >>"$pod/worker/0.log"
    lines=$((lines + 1))
done
echo "    $lines lines in $(find "$work/pods" -name '*.log' | wc -l) files under $work/pods"

cat >"$work/logship.yaml" <<YAML
node_name: quickstart
data_dir: $work/data
sources:
  - name: pods
    include: ["$work/pods/*/*/*.log"]
    format: auto
sink:
  elasticsearch:
    hosts: ["$url"]
    index: "logship-quickstart-%Y.%m.%d"
    batch: {timeout: 200ms}
YAML

echo "==> Running: logship run --config $work/logship.yaml"
target/release/logship run --config "$work/logship.yaml" 2>"$work/logship.log" &
agent=$!
count=0
for _ in $(seq 1 60); do
    count="$(curl -fsS "$url/logship-quickstart-*/_count?allow_no_indices=true" 2>/dev/null \
        | sed -n 's/.*"count":\([0-9]*\).*/\1/p' || true)"
    [[ "${count:-0}" -ge "$lines" ]] && break
    sleep 0.5
done
kill -TERM "$agent"
wait "$agent" && status=0 || status=$?
agent=""
echo "    logship exited with status $status; its log:"
sed 's/^/    | /' "$work/logship.log" | tail -n 15

echo "==> What arrived: GET /logship-quickstart-*/_count"
curl -fsS "$url/logship-quickstart-*/_count?pretty"
echo "==> Two sample documents: GET /logship-quickstart-*/_search?size=2"
curl -fsS -H 'Content-Type: application/json' \
    "$url/logship-quickstart-*/_search?pretty&filter_path=hits.hits._id,hits.hits._source" \
    -d '{"size": 2, "sort": [{"@timestamp": "desc"}], "query": {"match": {"message": "slow query long line"}}}'
if [[ "${count:-0}" -ne "$lines" ]]; then
    echo "quickstart: expected $lines documents, Elasticsearch has ${count:-0}" >&2
    exit 1
fi
echo "==> All $lines lines arrived."
