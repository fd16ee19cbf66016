#!/usr/bin/env bash
# System packages the test suite needs, installed when missing (Debian/Ubuntu, as root or with sudo):
#   Java 17  - the engine-matrix tests run the same transforms on JVM Spark
#   maven    - fetches the pinned JVM JARs (conf/jars.txt, scripts/fetch-jars.sh)
#   chromium - the Data Docs test opens the generated GX site in headless Chromium
#   libgomp1 - OpenMP runtime the LightGBM wheel links against (ml/train.py)
#   docker-compose - resolves docker/compose.yaml offline for tests/test_docker.py (no Docker engine needed)
#   redis-server - the production online store; tests/test_serving.py starts one on a free loopback port
#   wrk      - the closed-loop HTTP load generator of bench/serve.py (maximum throughput of the API)
#   time     - GNU time (/usr/bin/time -v): wall, CPU seconds and peak RSS of bench/daily.py's runs
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ldconfig -p 2>/dev/null | grep -q 'libgomp\.so\.1' || need+=(libgomp1)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/bin/time ] || need+=(time)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
