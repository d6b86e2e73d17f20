#!/usr/bin/env bash
# A local, throw-away Elasticsearch (or OpenSearch) for tests and the quick start.
#
#   scripts/elasticsearch.sh fetch        download (once) and unzip the distribution; print its home
#   scripts/elasticsearch.sh matrix       print the servers the compatibility tests run
#                                         against (MATRIX below), `DISTRIBUTION VERSION` a line
#   scripts/elasticsearch.sh fetch-matrix fetch each of them and check a Java for each
#   scripts/elasticsearch.sh run DIR      run a node in the foreground with all its state in DIR
#   scripts/elasticsearch.sh start DIR    run a node in the background, wait until it is ready, print its URL
#   scripts/elasticsearch.sh stop DIR     stop the node that `start DIR` started
#
# Which server: LOGSHIP_ES_DISTRIBUTION (`elasticsearch`, the default, or
# `opensearch`) and LOGSHIP_ES_VERSION (default 8.19.8 for Elasticsearch,
# 2.19.6 for OpenSearch). The distribution is the integration-test zip from
# Maven Central (org.elasticsearch.distribution.integ-test-zip:elasticsearch or
# org.opensearch.distribution.integ-test-zip:opensearch, packaging zip),
# fetched with Maven into $LOGSHIP_ES_CACHE (default /var/cache/logship-es),
# never into the repository; each distribution and version is unpacked side
# by side there (`elasticsearch-8.19.8/`, `opensearch-2.19.6/`, ...).
#
# These zips have no bundled JDK. Elasticsearch 8 runs on Java 17+,
# Elasticsearch 9 on Java 21+, OpenSearch 2 on Java 11 to 23. The first of
# $ES_JAVA_HOME (Elasticsearch) or $OPENSEARCH_JAVA_HOME (OpenSearch),
# /usr/lib/jvm/java-17-openjdk-amd64, $LOGSHIP_JAVA21_HOME,
# /usr/lib/jvm/temurin-25-jdk-amd64 and $JAVA_HOME that fits is used (a
# JDK's version is read from its `release` file), so Elasticsearch 9 gets
# the Temurin 25 JDK and the others Debian's Java 17.
#
# A node binds loopback only, picks free ports in 19200-19299 (HTTP) and
# 19300-19399 (transport) and writes the ones it took to DIR/logs/http.ports
# and DIR/logs/transport.ports. Neither server runs as root, so when run by
# root the node runs as `nobody` and DIR is handed to that user.
set -euo pipefail

# The servers tests/compat.rs runs against: distribution:version.
MATRIX=(elasticsearch:8.19.8 elasticsearch:9.5.4 opensearch:2.19.6)

DISTRIBUTION="${LOGSHIP_ES_DISTRIBUTION:-elasticsearch}"
case "$DISTRIBUTION" in
    elasticsearch) DEFAULT_VERSION=8.19.8 ;;
    opensearch) DEFAULT_VERSION=2.19.6 ;;
    *) echo "elasticsearch.sh: LOGSHIP_ES_DISTRIBUTION must be elasticsearch or opensearch, not $DISTRIBUTION" >&2; exit 1 ;;
esac
ES_VERSION="${LOGSHIP_ES_VERSION:-$DEFAULT_VERSION}"
CACHE="${LOGSHIP_ES_CACHE:-/var/cache/logship-es}"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
HEAP="${LOGSHIP_ES_HEAP:-512m}"
RUN_AS="${LOGSHIP_ES_USER:-nobody}"
TEMURIN=/usr/lib/jvm/temurin-25-jdk-amd64

die() { echo "elasticsearch.sh: $*" >&2; exit 1; }

# Sets the globals that depend on the distribution and version.
select_server() {
    DISTRIBUTION="$1"
    ES_VERSION="$2"
    NAME="$DISTRIBUTION-$ES_VERSION"
    case "$DISTRIBUTION" in
        elasticsearch)
            ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
            CONFIG_FILE=elasticsearch.yml
            JAVA_MAX=99
            if (( ${ES_VERSION%%.*} >= 9 )); then JAVA_NEEDED=21; else JAVA_NEEDED=17; fi
            ;;
        opensearch)
            ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:${ES_VERSION}:zip"
            CONFIG_FILE=opensearch.yml
            # OpenSearch 2 installs a SecurityManager, which Java 24 removed.
            if (( ${ES_VERSION%%.*} >= 3 )); then JAVA_NEEDED=21 JAVA_MAX=99; else JAVA_NEEDED=11 JAVA_MAX=23; fi
            ;;
    esac
}
select_server "$DISTRIBUTION" "$ES_VERSION"

# The feature version of the JDK at $1 (17, 21, 25), or nothing.
jdk_version() {
    local release="$1/release" v
    [[ -x "$1/bin/java" && -r "$release" ]] || return 0
    v="$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$release")"
    echo "$v"
}

java_home() {
    local own candidate v
    if [[ "$DISTRIBUTION" == opensearch ]]; then own="${OPENSEARCH_JAVA_HOME:-}"; else own="${ES_JAVA_HOME:-}"; fi
    for candidate in "$own" /usr/lib/jvm/java-17-openjdk-amd64 "${LOGSHIP_JAVA21_HOME:-}" \
        "$TEMURIN" "${JAVA_HOME:-}"; do
        [[ -n "$candidate" ]] || continue
        v="$(jdk_version "$candidate")"
        if [[ -n "$v" ]] && (( v >= JAVA_NEEDED && v <= JAVA_MAX )); then
            echo "$candidate"
            return
        fi
    done
    die "no Java $JAVA_NEEDED to $JAVA_MAX found for $NAME: install the Temurin 25 JDK into $TEMURIN (or set LOGSHIP_JAVA21_HOME / ES_JAVA_HOME / OPENSEARCH_JAVA_HOME)"
}

# The start script inside a distribution's home.
launcher() { echo "$1/bin/$DISTRIBUTION"; }

# Prints the server's home, fetching and unzipping it first if needed.
# Safe to run concurrently: one process fetches while the others wait.
fetch() {
    local home="$CACHE/$NAME"
    local zip="$CACHE/$NAME.zip"
    if [[ -x "$(launcher "$home")" ]]; then
        echo "$home"
        return
    fi
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if [[ ! -x "$(launcher "$home")" ]]; then
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
        [[ -x "$(launcher "$tmp/$NAME")" ]] \
            || { rm -rf "$tmp"; die "$zip does not contain $NAME/bin/$DISTRIBUTION"; }
        chmod -R a+rX "$tmp"
        mv "$tmp/$NAME" "$home"
        rmdir "$tmp"
    fi
    flock -u 9
    echo "$home"
}

# Fetches every server of MATRIX and checks that a Java runs each.
fetch_matrix() {
    local entry
    for entry in "${MATRIX[@]}"; do
        select_server "${entry%%:*}" "${entry#*:}"
        echo "$NAME $(fetch) (Java: $(java_home))"
    done
}

# Lays out DIR (config, data, logs, tmp) for one node.
prepare() {
    local dir="$1" home="$2"
    mkdir -p "$dir/config" "$dir/data" "$dir/logs" "$dir/tmp"
    cp -R "$home/config/." "$dir/config/"
    # jvm.options writes gc.log, heap dumps and error files relative to the
    # working directory (Elasticsearch) or the home (OpenSearch); keep them in DIR.
    sed -i -e "s|file=gc.log|file=$dir/logs/gc.log|" -e "s|=logs/|=$dir/logs/|g" \
        -e "s|HeapDumpPath=data|HeapDumpPath=$dir/data|" "$dir/config/jvm.options"
    local yml="$dir/config/$CONFIG_FILE"
    cat >"$yml" <<YML
cluster.name: logship-test
node.name: node-1
path.data: $dir/data
path.logs: $dir/logs
network.host: 127.0.0.1
http.port: 19200-19299
transport.port: 19300-19399
discovery.type: single-node
node.portsfile: true
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
YML
    # OpenSearch's integration-test zip has no security plugin and knows no xpack.*.
    if [[ "$DISTRIBUTION" == elasticsearch ]]; then
        echo "xpack.security.enabled: false" >>"$yml"
    fi
    # A node of a small cluster instead of a single node (tests of several
    # hosts): LOGSHIP_ES_SEED_HOSTS (transport addresses, comma-separated),
    # LOGSHIP_ES_NODE_NAME, LOGSHIP_ES_ROLES, LOGSHIP_ES_INITIAL_MASTER,
    # LOGSHIP_ES_CLUSTER; fixed ports with LOGSHIP_ES_HTTP_PORT and
    # LOGSHIP_ES_TRANSPORT_PORT (so a restarted node keeps its address).
    if [[ -n "${LOGSHIP_ES_SEED_HOSTS:-}" ]]; then
        local initial=cluster.initial_master_nodes roles="${LOGSHIP_ES_ROLES:-master, data, ingest}"
        if [[ "$DISTRIBUTION" == opensearch ]]; then
            initial=cluster.initial_cluster_manager_nodes
            roles="${roles//master/cluster_manager}"
        fi
        sed -i -e '/^discovery.type:/d' \
            -e "s/^node.name: .*/node.name: ${LOGSHIP_ES_NODE_NAME:-node-1}/" \
            -e "s/^cluster.name: .*/cluster.name: ${LOGSHIP_ES_CLUSTER:-logship-cluster}/" "$yml"
        cat >>"$yml" <<YML
discovery.seed_hosts: [${LOGSHIP_ES_SEED_HOSTS}]
$initial: [${LOGSHIP_ES_INITIAL_MASTER:-node-1}]
node.roles: [$roles]
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
    if [[ "$DISTRIBUTION" == opensearch ]]; then
        export OPENSEARCH_PATH_CONF="$dir/config" OPENSEARCH_TMPDIR="$dir/tmp" OPENSEARCH_JAVA_HOME="$java"
        export OPENSEARCH_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP ${OPENSEARCH_JAVA_OPTS:-}"
    else
        export ES_PATH_CONF="$dir/config" ES_TMPDIR="$dir/tmp" ES_JAVA_HOME="$java"
        export ES_JAVA_OPTS="-Xms$HEAP -Xmx$HEAP ${ES_JAVA_OPTS:-}"
    fi
    cd "$dir"
    if [[ "$(id -u)" == 0 ]]; then
        exec setpriv --reuid="$RUN_AS" --regid="$(id -g "$RUN_AS")" --clear-groups \
            "$(launcher "$home")"
    fi
    exec "$(launcher "$home")"
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
            die "$NAME exited during start-up (log above)"
        fi
        sleep 1
    done
    tail -n 40 "$dir/es.out" >&2 || true
    die "$NAME was not ready within ${timeout}s (log above)"
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
    matrix) for entry in "${MATRIX[@]}"; do echo "${entry%%:*} ${entry#*:}"; done ;;
    fetch-matrix) fetch_matrix ;;
    run) [[ $# == 2 ]] || die "usage: $0 run DIR"; run "$2" ;;
    start) [[ $# == 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [[ $# == 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 fetch | matrix | fetch-matrix | run DIR | start DIR | stop DIR" ;;
esac
