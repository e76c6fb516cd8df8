#!/usr/bin/env bash
# Runs one of Kafka's Java entry points as the distribution's script of this
# name does, honouring the variables it reads: KAFKA_HEAP_OPTS,
# KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_LOG4J_OPTS and KAFKA_OPTS.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "USAGE: $0 CLASSNAME [OPTIONS]" >&2
    exit 1
fi
class=$1
shift
home=/opt/kafka
heap=${KAFKA_HEAP_OPTS:--Xmx256M}
performance=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}
log4j=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$home/config/tools-log4j2.properties}
# Each variable is a list of JVM options, split on blanks as upstream does.
# shellcheck disable=SC2086
exec java $heap $performance $log4j ${KAFKA_OPTS:-} -cp "$home/libs/*" "$class" "$@"
