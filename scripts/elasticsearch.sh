#!/usr/bin/env bash
# A local, throw-away Elasticsearch for tests and the quick start.
#
#   scripts/elasticsearch.sh fetch      download (once) and unzip the distribution; print its home
#   scripts/elasticsearch.sh run DIR    run a node in the foreground with all its state in DIR
#   scripts/elasticsearch.sh start DIR  run a node in the background, wait until it is ready, print its URL
#   scripts/elasticsearch.sh stop DIR   stop the node that `start DIR` started
#
# The distribution is the integration-test zip from Maven Central
# (org.elasticsearch.distribution.integ-test-zip:elasticsearch, packaging zip),
# fetched with Maven into $LOGSHIP_ES_CACHE (default /var/cache/logship-es),
# never into the repository. It has no bundled JDK: it runs on $ES_JAVA_HOME
# (default: the Debian Java 17).
#
# A node binds loopback only, picks free ports in 19200-19299 (HTTP) and
# 19300-19399 (transport) and writes the ones it took to DIR/logs/http.ports
# and DIR/logs/transport.ports. Elasticsearch refuses to run as root, so when
# run by root the node runs as `nobody` and DIR is handed to that user.
set -euo pipefail

ES_VERSION="${LOGSHIP_ES_VERSION:-8.19.8}"
CACHE="${LOGSHIP_ES_CACHE:-/var/cache/logship-es}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
HEAP="${LOGSHIP_ES_HEAP:-512m}"
RUN_AS="${LOGSHIP_ES_USER:-nobody}"

die() { echo "elasticsearch.sh: $*" >&2; exit 1; }

java_home() {
    if [[ -n "${ES_JAVA_HOME:-}" ]]; then
        echo "$ES_JAVA_HOME"
    elif [[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then
        echo /usr/lib/jvm/java-17-openjdk-amd64
    elif [[ -n "${JAVA_HOME:-}" ]]; then
        echo "$JAVA_HOME"
    else
        die "no Java found: set ES_JAVA_HOME (Elasticsearch ${ES_VERSION} needs Java 17+)"
    fi
}

# Prints the Elasticsearch home, fetching and unzipping it first if needed.
# Safe to run concurrently: one process fetches while the others wait.
fetch() {
    local home="$CACHE/elasticsearch-$ES_VERSION"
    local zip="$CACHE/elasticsearch-$ES_VERSION.zip"
    if [[ -x "$home/bin/elasticsearch" ]]; then
        echo "$home"
        return
    fi
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if [[ ! -x "$home/bin/elasticsearch" ]]; then
        if [[ ! -s "$zip" ]]; then
            command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
            echo "elasticsearch.sh: fetching $ARTIFACT into $CACHE" >&2
            mvn -q -B -Dstyle.color=never "$DEPENDENCY_PLUGIN:copy" -Dartifact="$ARTIFACT" \
                -DoutputDirectory="$CACHE" -Dmdep.overWriteReleases=false >&2 \
                || die "maven could not fetch $ARTIFACT"
            [[ -s "$zip" ]] || die "maven finished but $zip is missing"
        fi
        command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
        local tmp
        tmp="$(mktemp -d "$CACHE/.unzip.XXXXXX")"
        unzip -q "$zip" -d "$tmp" || { rm -rf "$tmp"; die "could not unzip $zip"; }
        [[ -x "$tmp/elasticsearch-$ES_VERSION/bin/elasticsearch" ]] \
            || { rm -rf "$tmp"; die "$zip does not contain elasticsearch-$ES_VERSION/bin/elasticsearch"; }
        chmod -R a+rX "$tmp"
        mv "$tmp/elasticsearch-$ES_VERSION" "$home"
        rmdir "$tmp"
    fi
    flock -u 9
    echo "$home"
}

# Lays out DIR (config, data, logs, tmp) for one node.
prepare() {
    local dir="$1" home="$2"
    mkdir -p "$dir/config" "$dir/data" "$dir/logs" "$dir/tmp"
    cp -R "$home/config/." "$dir/config/"
    # The default jvm.options writes gc.log into the working directory; keep it in DIR.
    sed -i "s|file=gc.log|file=$dir/logs/gc.log|" "$dir/config/jvm.options"
    cat >"$dir/config/elasticsearch.yml" <<YML
cluster.name: logship-test
node.name: node-1
path.data: $dir/data
path.logs: $dir/logs
network.host: 127.0.0.1
http.port: 19200-19299
transport.port: 19300-19399
discovery.type: single-node
node.portsfile: true
xpack.security.enabled: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
YML
    # A node of a small cluster instead of a single node (tests of several
    # hosts): LOGSHIP_ES_SEED_HOSTS (transport addresses, comma-separated),
    # LOGSHIP_ES_NODE_NAME, LOGSHIP_ES_ROLES, LOGSHIP_ES_INITIAL_MASTER,
    # LOGSHIP_ES_CLUSTER; fixed ports with LOGSHIP_ES_HTTP_PORT and
    # LOGSHIP_ES_TRANSPORT_PORT (so a restarted node keeps its address).
    local yml="$dir/config/elasticsearch.yml"
    if [[ -n "${LOGSHIP_ES_SEED_HOSTS:-}" ]]; then
        sed -i -e '/^discovery.type:/d' \
            -e "s/^node.name: .*/node.name: ${LOGSHIP_ES_NODE_NAME:-node-1}/" \
            -e "s/^cluster.name: .*/cluster.name: ${LOGSHIP_ES_CLUSTER:-logship-cluster}/" "$yml"
        cat >>"$yml" <<YML
discovery.seed_hosts: [${LOGSHIP_ES_SEED_HOSTS}]
cluster.initial_master_nodes: [${LOGSHIP_ES_INITIAL_MASTER:-node-1}]
node.roles: [${LOGSHIP_ES_ROLES:-master, data, ingest}]
YML
    fi
    if [[ -n "${LOGSHIP_ES_HTTP_PORT:-}" ]]; then
        sed -i "s/^http.port: .*/http.port: $LOGSHIP_ES_HTTP_PORT/" "$yml"
    fi
    if [[ -n "${LOGSHIP_ES_TRANSPORT_PORT:-}" ]]; then
        sed -i "s/^transport.port: .*/transport.port: $LOGSHIP_ES_TRANSPORT_PORT/" "$yml"
    fi
    if [[ "$(id -u)" == 0 ]]; then
        chown -R "$RUN_AS:" "$dir"
        as_node_user test -w "$dir/data" -a -r "$home/lib" \
            || die "user $RUN_AS cannot reach $dir or $home: every parent directory must be searchable (chmod a+x)"
    fi
}

# Runs a command as the user the node runs as (root only).
as_node_user() {
    setpriv --reuid="$RUN_AS" --regid="$(id -g "$RUN_AS")" --clear-groups "$@"
}

run() {
    local dir home java
    dir="$(realpath -m "$1")"
    home="$(fetch)"
    java="$(java_home)"
    prepare "$dir" "$home"
    export ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp" ES_JAVA_HOME="$java"
    export ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP ${ES_JAVA_OPTS:-}"
    cd "$dir"
    if [[ "$(id -u)" == 0 ]]; then
        exec setpriv --reuid="$RUN_AS" --regid="$(id -g "$RUN_AS")" --clear-groups \
            "$home/bin/elasticsearch"
    fi
    exec "$home/bin/elasticsearch"
}

# Prints the URL once the node answers yellow; fails after $2 seconds.
wait_ready() {
    local dir="$1" timeout="$2" start=$SECONDS addr=""
    while (( SECONDS - start < timeout )); do
        if [[ -z "$addr" && -s "$dir/logs/http.ports" ]]; then
            addr="$(head -n1 "$dir/logs/http.ports")"
        fi
        if [[ -n "$addr" ]] && curl -fsS -o /dev/null \
            "http://$addr/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null; then
            echo "http://$addr"
            return 0
        fi
        if [[ -s "$dir/es.pid" ]] && ! kill -0 "$(cat "$dir/es.pid")" 2>/dev/null; then
            tail -n 40 "$dir/es.out" >&2 || true
            die "Elasticsearch exited during start-up (log above)"
        fi
        sleep 1
    done
    tail -n 40 "$dir/es.out" >&2 || true
    die "Elasticsearch was not ready within ${timeout}s (log above)"
}

start() {
    local dir
    dir="$(realpath -m "$1")"
    mkdir -p "$dir"
    fetch >/dev/null
    # A session of its own, so `stop` can end the whole process group.
    setsid "$0" run "$dir" >"$dir/es.out" 2>&1 </dev/null &
    echo $! >"$dir/es.pid"
    wait_ready "$dir" "${LOGSHIP_ES_START_TIMEOUT:-120}"
}

stop() {
    local dir="$1" pid i
    [[ -s "$dir/es.pid" ]] || die "no $dir/es.pid: nothing started there"
    pid="$(cat "$dir/es.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$dir/es.pid"
}

case "${1:-}" in
    fetch) fetch ;;
    run) [[ $# == 2 ]] || die "usage: $0 run DIR"; run "$2" ;;
    start) [[ $# == 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [[ $# == 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 fetch | run DIR | start DIR | stop DIR" ;;
esac
