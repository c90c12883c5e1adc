#!/usr/bin/env bash
# Installs the system services Switchboard and its tests use, when they are missing.
#   scripts/services.sh install [redis|ldap|rabbitmq|chromium|proton|proton-examples|proton-broker|openssl|tinyproxy|dante|microsocks|all]   (default: all)
# Uses apt-get when running as root on Debian/Ubuntu; otherwise prints what to install.
# Tests start their own private servers on free loopback ports (test/support/servers.ts) and
# stop them by PID; nothing here starts a service. proton-broker also compiles Qpid Proton's C
# example broker into .cache/proton-broker/broker (gitignored; rebuilt when missing).
set -euo pipefail

want="${2:-all}"
declare -A PKG=( [redis]=redis-server [ldap]="slapd ldap-utils" [rabbitmq]=rabbitmq-server [chromium]=chromium [proton]=python3-qpid-proton [proton-examples]=libqpid-proton11-dev-examples [proton-broker]="gcc pkg-config libqpid-proton11-dev libqpid-proton11-dev-examples" [openssl]=openssl [tinyproxy]=tinyproxy [dante]=dante-server [microsocks]=microsocks )
declare -A BIN=( [redis]=redis-server [ldap]=slapd [rabbitmq]=rabbitmq-server [chromium]=chromium [proton]=/usr/lib/python3/dist-packages/proton/__init__.py [proton-examples]=/usr/share/proton/examples/python/simple_send.py [proton-broker]="gcc pkg-config /usr/include/proton/proactor.h /usr/share/proton/examples/c/broker.c" [openssl]=openssl [tinyproxy]=tinyproxy [dante]=danted [microsocks]=microsocks )
# Everything the test suite starts for real: Redis, OpenLDAP, RabbitMQ (AMQP 1.0), Chromium,
# an AMQP client we did not write (Qpid Proton for Python) with its example programs (run
# unmodified against the embedded endpoint; Debian ships the Python ones in
# libqpid-proton11-dev-examples, not in python-qpid-proton-doc), a second AMQP 1.0 broker nobody
# here wrote (Proton's C example broker, compiled from the same package), openssl for certificates,
# and the proxies peer bridges go through (tinyproxy: HTTP CONNECT; Dante's danted: SOCKS5; microsocks:
# SOCKS5 with username/password from its command line — Dante checks those against the system's
# user database, which a test must not touch).
ALL=(redis ldap rabbitmq chromium proton proton-examples proton-broker openssl tinyproxy dante microsocks)

case "${1:-}" in
  install) ;;
  *) echo "usage: $0 install [redis|ldap|rabbitmq|chromium|proton|proton-examples|proton-broker|openssl|tinyproxy|dante|microsocks|all]" >&2; exit 2 ;;
esac

if [ "$want" = all ]; then names=("${ALL[@]}"); else names=("$want"); fi
missing=()
for n in "${names[@]}"; do
  [ -n "${PKG[$n]:-}" ] || { echo "unknown service '$n' (expected redis, ldap, rabbitmq, chromium, proton, proton-examples, proton-broker, openssl, tinyproxy, dante, microsocks or all)" >&2; exit 2; }
  for bin in ${BIN[$n]}; do
    if [[ "$bin" == /* ]]; then [ -e "$bin" ] || { missing+=(${PKG[$n]}); break; }
    elif ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then missing+=(${PKG[$n]}); break; fi
  done
done

# Qpid Proton's C example broker (no persistence, no DLQ, SASL ANONYMOUS), built where the tests
# look for it (test/support/proton-broker.ts); rebuilt only when the binary is missing.
build_proton_broker() {
  local root dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="$root/.cache/proton-broker"
  [ -x "$dir/broker" ] && return 0
  mkdir -p "$dir"
  # shellcheck disable=SC2046
  gcc -O1 -o "$dir/broker.tmp" /usr/share/proton/examples/c/broker.c $(pkg-config --cflags --libs libqpid-proton) -lpthread
  mv "$dir/broker.tmp" "$dir/broker"
  echo "built Qpid Proton's example broker: $dir/broker" >&2
}
wants_proton_broker() { for n in "${names[@]}"; do [ "$n" = proton-broker ] && return 0; done; return 1; }

if [ ${#missing[@]} -eq 0 ]; then
  if wants_proton_broker; then build_proton_broker; fi
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d keeps Debian's maintainer scripts from starting system-wide daemons we don't use.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}" >&2
if wants_proton_broker; then build_proton_broker; fi
