#!/usr/bin/env bash
# A real, throw-away Kubernetes API server (kube-apiserver + etcd) for tests.
#
#   scripts/kube-apiserver.sh fetch        build (once) kube-apiserver, etcd, etcdctl
#                                          and helm from the Go module proxy; print the
#                                          directory holding them
#   scripts/kube-apiserver.sh start DIR    start etcd and kube-apiserver on loopback with
#                                          all their state in DIR, wait for /readyz, and
#                                          write DIR/env (URL, admin token, ports)
#   scripts/kube-apiserver.sh stop DIR     stop what `start DIR` started
#
# Nothing but the Go module proxy can be reached from the machines logship is
# built on, so the binaries are built from modules:
#   - kube-apiserver: a scratch module that requires k8s.io/kubernetes
#     $KUBE_VERSION and replaces each of its staging modules (the lines of its
#     go.mod that point to ./staging/...) with the published v0.x.y, then
#     `go build -trimpath k8s.io/kubernetes/cmd/kube-apiserver` (≈ 7 CPU-minutes,
#     1.8 GB of memory, GOFLAGS=-p=1 on 2 cores);
#   - etcd and etcdctl: go.etcd.io/etcd/server/v3 and etcdctl/v3 at $ETCD_VERSION;
#   - helm: helm.sh/helm/v3/cmd/helm at $HELM_VERSION.
# They go to $LOGSHIP_K8S_CACHE (default /var/cache/logship-k8s), never into
# the repository; a binary already there is not built again.
#
# A server binds 127.0.0.1 only, on free ports, with RBAC authorization, a
# static token file (an admin token; tests add their own users by creating
# ServiceAccounts and asking for their tokens) and a service-account key pair
# made with openssl in DIR.
set -euo pipefail

KUBE_VERSION="${LOGSHIP_KUBE_VERSION:-v1.35.4}"
ETCD_VERSION="${LOGSHIP_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${LOGSHIP_HELM_VERSION:-v3.22.0}"
CACHE="${LOGSHIP_K8S_CACHE:-/var/cache/logship-k8s}"
BIN="$CACHE/bin"

die() { echo "kube-apiserver.sh: $*" >&2; exit 1; }
say() { echo "kube-apiserver.sh: $*" >&2; }

# The staging modules' published version: v1.35.4 -> v0.35.4.
staging_version() { echo "v0.${KUBE_VERSION#v1.}"; }

build_kube_apiserver() {
    local out="$BIN/kube-apiserver-$KUBE_VERSION" work gomod
    [[ -x "$out" ]] && return 0
    command -v go >/dev/null || die "go is needed to build kube-apiserver"
    work="$CACHE/build/kube-apiserver-$KUBE_VERSION"
    mkdir -p "$work" "$BIN"
    say "building kube-apiserver $KUBE_VERSION in $work (several minutes)"
    (
        cd "$work"
        [[ -f go.mod ]] || go mod init logship.test/kube-apiserver >/dev/null 2>&1
        gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
        [[ -r "$gomod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION"
        go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
        local module
        for module in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
            go mod edit -replace="$module=$module@$(staging_version)"
        done
        printf 'package tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n' >tools.go
        GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
        local v="k8s.io/component-base/version" minor="${KUBE_VERSION#v1.}"
        minor="${minor%%.*}"
        CGO_ENABLED=0 GOFLAGS="-mod=mod -p=1" go build -trimpath \
            -ldflags "-X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
            -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
        mv "$out.tmp" "$out"
    )
}

build_etcd() {
    local out="$BIN/etcd-$ETCD_VERSION" ctl="$BIN/etcdctl-$ETCD_VERSION" work
    [[ -x "$out" && -x "$ctl" ]] && return 0
    work="$CACHE/build/etcd-$ETCD_VERSION"
    mkdir -p "$work" "$BIN"
    say "building etcd $ETCD_VERSION in $work"
    (
        cd "$work"
        [[ -f go.mod ]] || go mod init logship.test/etcd >/dev/null 2>&1
        GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" >/dev/null 2>&1
        CGO_ENABLED=0 GOFLAGS="-mod=mod -p=1" go build -trimpath -o "$out.tmp" go.etcd.io/etcd/server/v3
        CGO_ENABLED=0 GOFLAGS="-mod=mod -p=1" go build -trimpath -o "$ctl.tmp" go.etcd.io/etcd/etcdctl/v3
        mv "$out.tmp" "$out"
        mv "$ctl.tmp" "$ctl"
    )
}

build_helm() {
    local out="$BIN/helm-$HELM_VERSION"
    [[ -x "$out" ]] && return 0
    mkdir -p "$BIN"
    say "building helm $HELM_VERSION"
    GOBIN="$CACHE/build/helm-$HELM_VERSION" CGO_ENABLED=0 GOFLAGS=-p=1 \
        go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mv "$CACHE/build/helm-$HELM_VERSION/helm" "$out"
}

fetch() {
    build_etcd
    build_kube_apiserver
    build_helm
    echo "$BIN"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # URL CURL-ARGS... : until it answers 200 (30 s at most)
    local url="$1" i
    shift
    for i in $(seq 1 150); do
        if curl -fsS "$@" "$url" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

start() {
    local dir="$1" etcd_port peer_port port token
    [[ -n "$dir" ]] || die "usage: $0 start DIR"
    local apiserver="$BIN/kube-apiserver-$KUBE_VERSION" etcd="$BIN/etcd-$ETCD_VERSION"
    [[ -x "$apiserver" && -x "$etcd" ]] || die "kube-apiserver or etcd missing in $BIN: run $0 fetch"
    command -v openssl >/dev/null || die "openssl is needed (service-account keys)"
    mkdir -p "$dir"/{etcd,certs,logs}
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    port="$(free_port)"
    token="$(openssl rand -hex 16)"
    # The admin (system:masters) token; tests make ServiceAccounts for the agent.
    echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"
    openssl genrsa -out "$dir/certs/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/certs/sa.key" -pubout -out "$dir/certs/sa.pub" 2>/dev/null
    setsid "$etcd" --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "default=http://127.0.0.1:$peer_port" --name default \
        >"$dir/logs/etcd.log" 2>&1 </dev/null &
    echo $! >"$dir/etcd.pid"
    wait_for "http://127.0.0.1:$etcd_port/health" || die "etcd did not start: $(tail -5 "$dir/logs/etcd.log")"
    local args=("$apiserver" --etcd-servers "http://127.0.0.1:$etcd_port"
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port"
        --cert-dir "$dir/certs" --token-auth-file "$dir/tokens.csv"
        --authorization-mode RBAC
        --service-account-key-file "$dir/certs/sa.pub"
        --service-account-signing-key-file "$dir/certs/sa.key"
        --service-account-issuer https://kubernetes.default.svc
        --service-cluster-ip-range 10.96.0.0/16
        --endpoint-reconciler-type none)
    # shellcheck disable=SC2206 # extra arguments are split on spaces on purpose
    args+=(${LOGSHIP_KUBE_APISERVER_ARGS:-})
    # One argument per line: a test restarts the server with the same ones.
    printf '%s\n' "${args[@]}" >"$dir/kube-apiserver.cmdline"
    setsid "${args[@]}" >"$dir/logs/kube-apiserver.log" 2>&1 </dev/null &
    echo $! >"$dir/kube-apiserver.pid"
    wait_for "https://127.0.0.1:$port/readyz" -k -H "Authorization: Bearer $token" \
        || die "kube-apiserver not ready: $(tail -5 "$dir/logs/kube-apiserver.log")"
    cat >"$dir/env" <<ENV
KUBE_URL=https://127.0.0.1:$port
KUBE_TOKEN=$token
KUBE_CA=$dir/certs/apiserver.crt
ETCD_URL=http://127.0.0.1:$etcd_port
ENV
    echo "https://127.0.0.1:$port"
}

stop() {
    local dir="$1" name pid
    [[ -n "$dir" ]] || die "usage: $0 stop DIR"
    for name in kube-apiserver etcd; do
        [[ -f "$dir/$name.pid" ]] || continue
        pid="$(cat "$dir/$name.pid")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$dir/$name.pid"
    done
}

case "${1:-}" in
    fetch) fetch ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) die "usage: $0 fetch | start DIR | stop DIR" ;;
esac
