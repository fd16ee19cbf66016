#!/usr/bin/env bash
# An S3-compatible object store on loopback for development and tests: moto's HTTP server (the
# `moto[server]` test dependency), which speaks the S3 REST API that Sail, delta-rs, pyarrow and
# Hadoop S3A use. It keeps objects in memory: stopping it loses them.
#
#   scripts/object-store.sh start [--bucket NAME]...   (default bucket: cdp)
#   scripts/object-store.sh stop | status | env
#
# Port: CDP_S3_PORT (default 9000). `env` prints the AWS_* variables that point a shell at it:
#   eval "$(scripts/object-store.sh env)"; CDP_LAKEHOUSE=s3://cdp/lakehouse CDP_LANDING=s3://cdp/landing cdp run ...
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
cmd="${1:-}"; shift || true
port="${CDP_S3_PORT:-9000}"
dir="${CDP_S3_DIR:-$root/.object-store}"
buckets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bucket) buckets+=("$2"); shift ;;
    *) echo "object-store: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ ${#buckets[@]} -gt 0 ]] || buckets=(cdp)
python="$root/.venv/bin/python"
endpoint="http://127.0.0.1:$port"

print_env() {
  cat <<VARS
export AWS_ENDPOINT_URL=$endpoint
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=cdp-local
export AWS_SECRET_ACCESS_KEY=cdp-local-secret
export AWS_REGION=us-east-1
VARS
}

stop() {
  [[ -f "$dir/moto.pid" ]] || return 0
  pid="$(cat "$dir/moto.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/moto.pid"
}

case "$cmd" in
  start)
    [[ -x "$root/.venv/bin/moto_server" ]] || { echo "object-store: no moto_server in .venv: run make install" >&2; exit 1; }
    mkdir -p "$dir"
    stop
    nohup "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    eval "$(print_env)"
    for _ in $(seq 1 60); do
      "$python" -c "import urllib.request; urllib.request.urlopen('$endpoint', timeout=1)" 2>/dev/null && break
      kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null || { tail -20 "$dir/moto.log" >&2; echo "object-store: moto exited" >&2; exit 1; }
      sleep 0.5
    done
    for b in "${buckets[@]}"; do
      "$python" -c "import sys; from pyarrow import fs; fs.S3FileSystem(endpoint_override='$endpoint', scheme='http', allow_bucket_creation=True).create_dir(sys.argv[1])" "$b"
    done
    echo "object-store: S3 at $endpoint, buckets: ${buckets[*]} (eval \"\$(scripts/object-store.sh env)\")"
    ;;
  stop) stop; echo "object-store: stopped" ;;
  status) if [[ -f "$dir/moto.pid" ]] && kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null; then echo "running at $endpoint"; else echo "stopped"; fi ;;
  env) print_env ;;
  *) sed -n 2,11p "$0" >&2; exit 2 ;;
esac
