#!/usr/bin/env bash
# Resolves ivy.xml against Maven Central with the Ivy that ships inside Spark, checks every JAR against
# the SHA-1 Maven Central publishes beside it (a missing checksum fails the build too), and adds the
# JARs Spark does not already ship to $SPARK_HOME/jars.
#   usage: fetch-jars.sh <ivy.xml>
set -euo pipefail
ivy_file="$1"
repo="https://repo1.maven.org/maven2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

ivy_jar="$(ls "$SPARK_HOME"/jars/ivy-*.jar)"
# Maven layout under $work/m2, so each file's path is also its path on Maven Central.
java -jar "$ivy_jar" -ivy "$ivy_file" -confs default -types jar,bundle \
  -cache "$work/cache" \
  -retrieve "$work/m2/[orgPath]/[module]/[revision]/[artifact]-[revision](-[classifier]).[ext]"

cd "$work/m2"
mapfile -t jars < <(find . -name '*.jar' | sort)
[ "${#jars[@]}" -gt 0 ] || { echo "no JARs resolved from $ivy_file" >&2; exit 1; }
for rel in "${jars[@]}"; do
  rel="${rel#./}"
  expected="$(curl -fsSL "$repo/$rel.sha1" | cut -c1-40)"
  actual="$(sha1sum "$rel" | cut -c1-40)"
  if [ "$expected" != "$actual" ]; then
    echo "checksum mismatch for $rel: Maven Central says $expected, file has $actual" >&2
    exit 1
  fi
  name="$(basename "$rel")"
  module="$(basename "$(dirname "$(dirname "$rel")")")"
  # Spark's copy of a library wins: two versions of one library on the classpath break at run time.
  if compgen -G "$SPARK_HOME/jars/${module}-[0-9]*.jar" > /dev/null; then
    echo "skip $name (Spark ships $(basename "$(compgen -G "$SPARK_HOME/jars/${module}-[0-9]*.jar" | head -1)"))"
    continue
  fi
  echo "add  $name (sha1 $actual)"
  cp "$rel" "$SPARK_HOME/jars/$name"
done
