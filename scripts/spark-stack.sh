#!/usr/bin/env bash
# A JVM Spark stack on this machine, from the pyspark distribution in the project's venv (no Docker,
# no Spark tarball): a Spark Connect server with delta-spark (the JARs of conf/jars.txt in .jars/),
# either on local[N] or on a standalone cluster of one master and N workers started here.
#
#   scripts/spark-stack.sh start [--cluster] [--workers N] [--s3] [--dir DIR]
#   scripts/spark-stack.sh stop  [--dir DIR]
#   scripts/spark-stack.sh status [--dir DIR]
#
# Ports (environment, defaults): CDP_CONNECT_PORT 15002, CDP_SPARK_UI_PORT 4040,
# CDP_MASTER_PORT 7077, CDP_MASTER_UI_PORT 8080; workers' UIs take ports after CDP_MASTER_UI_PORT.
# --s3: the lakehouse or landing zone is on an S3-compatible store: the S3A JARs (conf/jars.txt, set
# s3) are loaded and s3:// is read through S3A, configured from the AWS_* variables of this shell
# (spark_jobs/storage.py: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
# DIR (default .spark-stack/) holds the logs, pid files and the workers' scratch space.
# Then: CDP_ENGINE=connect CDP_SPARK_REMOTE=sc://127.0.0.1:$CDP_CONNECT_PORT cdp run --date ...
# (Airflow: AIRFLOW_CONN_CDP_SPARK='spark-connect://127.0.0.1:$CDP_CONNECT_PORT', see README: Deploy).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
cmd="${1:-}"; shift || true
cluster=0; workers=2; s3=0; dir="$root/.spark-stack"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster) cluster=1 ;;
    --s3) s3=1 ;;
    --workers) workers="$2"; shift ;;
    --dir) dir="$(realpath -m "$2")"; shift ;;
    *) echo "spark-stack: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
python="$root/.venv/bin/python"
[[ -x "$python" ]] || { echo "spark-stack: no $python: run make install" >&2; exit 1; }
SPARK_HOME="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME
# Python UDFs (mapInArrow, applyInPandas, the scoring UDF) run this interpreter on every executor: the
# Connect server names it from its own PYSPARK_PYTHON, not from spark.pyspark.python.
export PYSPARK_PYTHON="$python" PYSPARK_DRIVER_PYTHON="$python"
connect_port="${CDP_CONNECT_PORT:-15002}"
ui_port="${CDP_SPARK_UI_PORT:-4040}"
master_port="${CDP_MASTER_PORT:-7077}"
master_ui="${CDP_MASTER_UI_PORT:-8080}"

wait_for() {  # wait_for <log> <pattern> <what> <pid>
  for _ in $(seq 1 240); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || { tail -30 "$1" >&2; echo "spark-stack: $3 exited" >&2; return 1; }
    sleep 0.5
  done
  tail -30 "$1" >&2; echo "spark-stack: $3 did not start in 120 s" >&2; return 1
}

start_bg() {  # start_bg <name> <command...>: runs it in the background, its pid in $dir/<name>.pid
  local name="$1"; shift
  nohup "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

stop() {
  [[ -d "$dir" ]] || return 0
  for pidfile in "$dir"/connect.pid "$dir"/worker-*.pid "$dir"/master.pid; do
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

case "$cmd" in
  start)
    jars="$(ls "$root"/.jars/delta-spark_*.jar "$root"/.jars/delta-storage-*.jar 2>/dev/null | paste -sd, -)"
    [[ -n "$jars" ]] || { echo "spark-stack: no delta-spark JARs in .jars/: run make jars" >&2; exit 1; }
    s3conf=()
    if [[ "$s3" == 1 ]]; then
      s3jars="$(ls "$root"/.jars/hadoop-aws-*.jar "$root"/.jars/bundle-*.jar "$root"/.jars/analyticsaccelerator-s3-*.jar 2>/dev/null | paste -sd, -)"
      [[ "$(tr ',' '\n' <<<"$s3jars" | grep -c .)" == 3 ]] || { echo "spark-stack: the S3A JARs are not in .jars/: run make jars" >&2; exit 1; }
      jars="$jars,$s3jars"
      while IFS= read -r kv; do s3conf+=(--conf "$kv"); done < <("$python" -c \
        'from spark_jobs.storage import hadoop_s3_conf; print("\n".join(f"{k}={v}" for k, v in hadoop_s3_conf().items()))')
    fi
    mkdir -p "$dir"
    stop
    master="local[2]"
    if [[ "$cluster" == 1 ]]; then
      master="spark://127.0.0.1:$master_port"
      start_bg master "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
        --host 127.0.0.1 --port "$master_port" --webui-port "$master_ui"
      wait_for "$dir/master.log" "I have been elected leader" "the master" "$(cat "$dir/master.pid")"
      for i in $(seq 1 "$workers"); do
        mkdir -p "$dir/work-$i"
        start_bg "worker-$i" "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
          --host 127.0.0.1 --cores 1 --memory 3g --webui-port $((master_ui + i)) \
          --work-dir "$dir/work-$i" "$master"
        wait_for "$dir/worker-$i.log" "Successfully registered with master" "worker $i" "$(cat "$dir/worker-$i.pid")"
      done
    fi
    start_bg connect "$SPARK_HOME/bin/spark-submit" --master "$master" \
      --class org.apache.spark.sql.connect.service.SparkConnectServer --name cdp-connect \
      --jars "$jars" --driver-memory 3g \
      --conf spark.connect.grpc.binding.address=127.0.0.1 \
      --conf spark.connect.grpc.binding.port="$connect_port" \
      --conf spark.ui.port="$ui_port" \
      --conf spark.executor.memory=2g \
      --conf spark.sql.session.timeZone=UTC \
      --conf spark.sql.shuffle.partitions=2 \
      --conf spark.databricks.delta.snapshotPartitions=2 \
      --conf spark.databricks.delta.replaceWhere.constraintCheck.enabled=false \
      ${s3conf[@]+"${s3conf[@]}"} \
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
      --conf spark.pyspark.python="$python" --conf spark.pyspark.driver.python="$python" \
      spark-internal
    wait_for "$dir/connect.log" "Spark Connect server started" "the Spark Connect server" "$(cat "$dir/connect.pid")"
    echo "spark-stack: Spark Connect at sc://127.0.0.1:$connect_port on $master (UI http://127.0.0.1:$ui_port)"
    ;;
  stop) stop; echo "spark-stack: stopped" ;;
  status)
    for pidfile in "$dir"/*.pid; do
      [[ -f "$pidfile" ]] || continue
      name="$(basename "$pidfile" .pid)"
      if kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "$name: running"; else echo "$name: dead"; fi
    done
    ;;
  *) sed -n 2,15p "$0" >&2; exit 2 ;;
esac
