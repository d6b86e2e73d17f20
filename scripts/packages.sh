#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages logship's scripts need and the
# machine lacks; does nothing (quickly) when everything is there.
#
#   scripts/packages.sh              what the tests need (scripts/test.sh)
#   scripts/packages.sh quickstart   what the quick start needs (scripts/quickstart.sh)
#   scripts/packages.sh build        what building logship needs (also part of the two above)
#
# Building needs a C compiler and make (for ring and ISA-L), and nasm,
# autoconf, automake and libtool: the isal-sys crate builds Intel ISA-L (the
# gzip of bulk bodies, src/sink/elasticsearch/gzip.rs) from source.
# The quick start needs Java 17 (Elasticsearch 8), Maven and unzip (fetch
# it), curl and util-linux (setsid, setpriv, flock: scripts/elasticsearch.sh).
# The tests need those plus kubectl (renders deploy/kubernetes), nginx and
# openssl (the TLS and auth tests) and systemd-journal-remote (writes the
# journal files the journald tests follow with journalctl). Runs apt-get as root, or through sudo.
# LOGSHIP_DRY_RUN=1 only says what it would install.
set -euo pipefail

say() { echo "packages.sh: $*" >&2; }
die() { say "$*"; exit 1; }

missing=()
need_command() { command -v "$1" >/dev/null || missing+=("$2"); }
need_file() { [[ -x "$1" ]] || missing+=("$2"); }

need_command cc gcc
need_command make make
need_command nasm nasm
need_command autoreconf autoconf
need_command automake automake
need_command libtoolize libtool
if [[ "${1:-test}" != build ]]; then
    need_file /usr/lib/jvm/java-17-openjdk-amd64/bin/java openjdk-17-jdk-headless
    need_command mvn maven
    need_command unzip unzip
    need_command curl curl
    for tool in setsid setpriv flock; do need_command "$tool" util-linux; done
fi
case "${1:-test}" in
    build | quickstart) ;;
    test)
        need_command kubectl kubernetes-client # Debian 12: kubectl 1.20
        need_file /usr/sbin/nginx nginx-light  # the path tests/support/nginx.rs runs
        need_command openssl openssl
        need_command journalctl systemd
        need_file /lib/systemd/systemd-journal-remote systemd-journal-remote
        ;;
    *) die "usage: $0 [test | quickstart | build]" ;;
esac
((${#missing[@]})) || exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]}"
    sudo=(sudo)
fi
command -v apt-get >/dev/null || die "no apt-get (not Debian?): install ${missing[*]}"
if [[ -n "${LOGSHIP_DRY_RUN:-}" ]]; then
    say "would install ${missing[*]} (apt-get update, apt-get install)"
    exit 0
fi
say "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
