#!/usr/bin/env bash
# Fetches the JVM JARs pinned in conf/jars.txt with Maven into .jars/ and checks each one against the
# SHA-1 pinned there. Safe to re-run: a JAR already in .jars/ with the right checksum is kept.
#   usage: scripts/fetch-jars.sh [conf/jars.txt] [.jars]
# Needs mvn and Java (scripts/system-deps.sh installs them). Uses the user's ~/.m2 as Maven's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
pins="${1:-conf/jars.txt}"
dest="${2:-.jars}"
mkdir -p "$dest"
n=0
while read -r coord sha1 _set; do
  [[ -z "${coord}" || "${coord}" == \#* ]] && continue
  IFS=: read -r group artifact version <<<"$coord"
  jar="$dest/$artifact-$version.jar"
  if [[ -f "$jar" ]] && [[ "$(sha1sum "$jar" | cut -c1-40)" == "$sha1" ]]; then
    n=$((n + 1)); continue
  fi
  echo "fetch-jars: $coord"
  mvn -q -B dependency:copy -Dartifact="$coord:jar" -Dtransitive=false -Dmdep.overWriteReleases=true \
    -DoutputDirectory="$dest" >"$dest/.mvn-$artifact.log" 2>&1 \
    || { tail -20 "$dest/.mvn-$artifact.log" >&2; echo "fetch-jars: mvn could not fetch $coord (is Maven Central reachable?)" >&2; exit 1; }
  actual="$(sha1sum "$jar" | cut -c1-40)"
  if [[ "$actual" != "$sha1" ]]; then
    rm -f "$jar"
    echo "fetch-jars: checksum mismatch for $coord: conf/jars.txt pins $sha1, Maven gave $actual" >&2
    exit 1
  fi
  rm -f "$dest/.mvn-$artifact.log"
  n=$((n + 1))
done <"$pins"
echo "fetch-jars: $n JARs in $dest, checksums match $pins"
