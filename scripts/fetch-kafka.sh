#!/usr/bin/env bash
# Fetch the sandbox's Apache Kafka jars and the Prometheus JMX exporter agent from Maven Central.
#
# Versions are pinned in sandbox/resources/kafka/pom.xml. The result lands in
#   $CACHE/kafka/<kafka version>/libs/*.jar                       broker, controller, StorageTool
#   $CACHE/kafka/<kafka version>/javaagent/jmx_prometheus_javaagent.jar
# with CACHE=${KAFKA_AUTOPILOT_CACHE:-<repo>/.cache}. A stamp file makes a second run a no-op.
set -euo pipefail
export CI=true
exec </dev/null

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_AUTOPILOT_CACHE:-$repo/.cache}
pom=$repo/sandbox/resources/kafka/pom.xml

pom_property() {
    local value
    value=$(sed -n "s|.*<$1>\(.*\)</$1>.*|\1|p" "$pom" | head -n 1)
    [[ -n $value ]] || { echo "fetch-kafka: property $1 missing from $pom" >&2; exit 1; }
    printf '%s' "$value"
}

kafka_version=$(pom_property kafka.version)
exporter_version=$(pom_property jmx.exporter.version)
log4j_version=$(pom_property log4j.version)
dest=$cache/kafka/$kafka_version
stamp=$dest/.fetched
wanted="kafka=$kafka_version jmx_exporter=$exporter_version log4j=$log4j_version"

for tool in java mvn flock; do
    command -v "$tool" >/dev/null || { echo "fetch-kafka: '$tool' is not installed" >&2; exit 1; }
done
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if (( ${java_major%%.*} < 17 )); then
    echo "fetch-kafka: Kafka $kafka_version brokers need Java 17 or newer, found $java_major" >&2
    exit 1
fi

mkdir -p "$cache/kafka"
exec 9>"$cache/kafka/.lock"
flock 9

if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
    echo "fetch-kafka: $wanted already in $dest"
    exit 0
fi

started=$SECONDS
staging=$(mktemp -d "$cache/kafka/.staging.XXXXXX")
chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT

mvn_args=(-q -B -f "$pom" "-Dmaven.repo.local=$cache/m2" -DincludeScope=runtime)
# Maven's output is shown only when it fails (3.8 prints stray colour codes even with -q -B).
copy_dependencies() {
    if ! mvn "${mvn_args[@]}" dependency:copy-dependencies "$@" >"$staging/mvn.log" 2>&1; then
        cat "$staging/mvn.log" >&2
        exit 1
    fi
}
echo "fetch-kafka: resolving Kafka $kafka_version (kafka_2.13, kafka-server, log4j $log4j_version) from Maven Central"
copy_dependencies -DexcludeArtifactIds=jmx_prometheus_javaagent -DoutputDirectory="$staging/libs"
echo "fetch-kafka: resolving the Prometheus JMX exporter agent $exporter_version"
copy_dependencies -DincludeArtifactIds=jmx_prometheus_javaagent -Dmdep.stripVersion=true \
    -DoutputDirectory="$staging/javaagent"

[[ -f $staging/javaagent/jmx_prometheus_javaagent.jar ]] || { echo "fetch-kafka: no agent jar" >&2; exit 1; }
echo "fetch-kafka: checking that StorageTool runs on Java $java_major"
if ! java -cp "$staging/libs/*" kafka.tools.StorageTool random-uuid >"$staging/smoke.log" 2>&1; then
    echo "fetch-kafka: kafka.tools.StorageTool failed:" >&2
    cat "$staging/smoke.log" >&2
    exit 1
fi
rm -f "$staging/smoke.log" "$staging/mvn.log"

rm -rf "$dest"
printf '%s' "$wanted" >"$staging/.fetched"
mv "$staging" "$dest"
trap - EXIT

jars=$(find "$dest/libs" -name '*.jar' | wc -l)
echo "fetch-kafka: done in $((SECONDS - started))s: $jars jars, $(du -sh "$dest" | cut -f1) in $dest," \
    "$(du -sh "$cache/m2" | cut -f1) in the Maven cache $cache/m2"
