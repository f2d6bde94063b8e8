#!/bin/sh
# Starts a single-node Apache Kafka broker (KRaft mode: broker and controller in one JVM, listening on
# 127.0.0.1 only) for `kubeless-local dev --kafka-brokers` and its tests. Needs Java 17+ and Maven.
#
#   scripts/kafka-up.sh [DIR]     DIR holds the broker's config, data, log and pid
#                                 (default: ~/.cache/kubeless-local/kafka/broker)
#
# Prints `KAFKA_BROKERS=127.0.0.1:<port>` once the broker serves. Run again on the same DIR, it starts the
# same broker with its data and port (or says it is already running); scripts/kafka-down.sh DIR stops it.
# The jars (org.apache.kafka:kafka_2.13 and a log4j binding, ~43 MB) are resolved once by Maven into
# ~/.cache/kubeless-local/kafka/<version>/libs. Environment: KAFKA_VERSION (4.1.2), KAFKA_PORT (a free
# port), KAFKA_HEAP (256m), KAFKA_START_TIMEOUT (seconds, 120).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=${KAFKA_VERSION:-4.1.2}
dir=${1:-$HOME/.cache/kubeless-local/kafka/broker}
libs=$HOME/.cache/kubeless-local/kafka/$version/libs
timeout=${KAFKA_START_TIMEOUT:-120}

fail() { echo "kafka-up: $*" >&2; exit 2; }
command -v java >/dev/null 2>&1 || fail "java is not on PATH; install a Java 17+ runtime (Debian: openjdk-17-jre-headless)"

if [ ! -f "$libs/.complete" ]; then
    command -v mvn >/dev/null 2>&1 || fail "mvn is not on PATH; install Maven (Debian: maven) to fetch the Kafka jars"
    echo "kafka-up: fetching Apache Kafka $version with Maven into $libs" >&2
    rm -rf "$libs.tmp"
    mvn -q -B -Dstyle.color=never -f "$here/kafka/pom.xml" -Dkafka.version="$version" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >&2 \
        || fail "Maven could not fetch org.apache.kafka:kafka_2.13:$version; make its repository reachable (or configure a mirror in ~/.m2/settings.xml)"
    rm -rf "$libs" && mv "$libs.tmp" "$libs" && touch "$libs/.complete"
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "KAFKA_BROKERS=$(cat "$dir/brokers")"
    exit 0
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# A small heap and a quick JIT: the broker of one developer (RSS about 200 MB).
jvm_options="-Xmx${KAFKA_HEAP:-256m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
log_config="-Dlog4j2.configurationFile=$here/kafka/log4j2.properties"
java_run() { java $jvm_options "$log_config" -cp "$libs/*" "$@"; }

if [ ! -f "$dir/server.properties" ]; then  # first start: choose ports, format the storage
    port=${KAFKA_PORT:-$(free_port)}
    controller=$(free_port)
    cat > "$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$controller
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=16777216
PROPERTIES
    java_run kafka.tools.StorageTool format --standalone --ignore-formatted \
        -t "$(java_run kafka.tools.StorageTool random-uuid)" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; rm -f "$dir/server.properties"; fail "formatting the storage in $dir failed"; }
    echo "127.0.0.1:$port" > "$dir/brokers"
fi

: > "$dir/kafka.log"
nohup java $jvm_options "$log_config" -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/kafka.log" 2>&1 </dev/null &
echo $! > "$dir/pid"

waited=0
until grep -q "Kafka Server started" "$dir/kafka.log"; do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        tail -20 "$dir/kafka.log" >&2
        rm -f "$dir/pid"
        fail "the broker exited at start; its log is $dir/kafka.log"
    fi
    if [ "$waited" -ge $((timeout * 10)) ]; then
        tail -20 "$dir/kafka.log" >&2
        fail "the broker did not start within ${timeout}s (log: $dir/kafka.log); stop it with scripts/kafka-down.sh $dir"
    fi
    sleep 0.1
    waited=$((waited + 1))
done
echo "KAFKA_BROKERS=$(cat "$dir/brokers")"
