#!/usr/bin/env bash
# The test command (README.md, "Test"): sets up what the tests need and the
# machine lacks, then runs `cargo test` with the arguments given.
#
#   scripts/test.sh                  every test (about 10 minutes on 2 cores)
#   scripts/test.sh --test config    any `cargo test` arguments are passed on
#
# Each step is skipped when already done, so a second run goes straight to
# `cargo test`; where everything is present, plain `cargo test` works the same.
#   1. A JDK 21+ for Elasticsearch 9 (tests/compat.rs), which Debian 12 does
#      not package: /usr/lib/jvm/temurin-25-jdk-amd64 or $LOGSHIP_JAVA21_HOME.
#      Checked, not installed: without it this stops before anything else.
#   2. Debian packages (scripts/packages.sh, apt-get as root or through
#      sudo): Java 17, Maven, unzip, curl, util-linux, kubectl, nginx, openssl,
#      systemd-journal-remote (the journald tests).
#   3. The test servers, downloaded once into $LOGSHIP_ES_CACHE (default
#      /var/cache/logship-es) by scripts/elasticsearch.sh: Elasticsearch
#      8.19.8 for every integration test, Elasticsearch 9.5.4 and OpenSearch
#      2.19.6 for the compatibility matrix; and a real Kubernetes API server
#      (kube-apiserver, etcd) and helm, built once from the Go module proxy
#      into $LOGSHIP_K8S_CACHE (default /var/cache/logship-k8s) by
#      scripts/kube-apiserver.sh fetch (about 10 minutes the first time).
# Then it runs `cargo test "$@"` with ES_JAVA_HOME set (default: Java 17).
#
# LOGSHIP_DRY_RUN=1 only says what it would install, fetch and run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test.sh: $*" >&2; }

command -v cargo >/dev/null || { say "cargo not found: install Rust (https://rustup.rs)"; exit 1; }

# --- 1. Java 21+ ---------------------------------------------------------------
java21="${LOGSHIP_JAVA21_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
if [[ ! -x "$java21/bin/java" ]]; then
    say "no Java 21+ at $java21: Elasticsearch 9 cannot run, so the compatibility"
    say "matrix (tests/compat.rs) cannot pass. Install the Temurin 25 JDK there"
    say "(https://adoptium.net) or point LOGSHIP_JAVA21_HOME at a JDK 21+."
    exit 1
fi

# --- 2. Debian packages --------------------------------------------------------
scripts/packages.sh test

# --- 3. Test servers -----------------------------------------------------------
if [[ -n "${LOGSHIP_DRY_RUN:-}" ]]; then
    say "would fetch those not yet in ${LOGSHIP_ES_CACHE:-/var/cache/logship-es}:" \
        "$(scripts/elasticsearch.sh matrix | paste -sd,)"
    say "would build kube-apiserver, etcd and helm into ${LOGSHIP_K8S_CACHE:-/var/cache/logship-k8s} if missing"
    say "would run: cargo test $*"
    exit 0
fi
# Each fetch returns at once when its server is already unpacked.
scripts/elasticsearch.sh fetch >/dev/null
scripts/elasticsearch.sh fetch-matrix
scripts/kube-apiserver.sh fetch >/dev/null

# --- Tests ---------------------------------------------------------------------
export ES_JAVA_HOME="${ES_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
exec cargo test "$@"
