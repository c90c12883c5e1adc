#!/usr/bin/env bash
# Installs the system services Switchboard and its tests use, when they are missing.
#   scripts/services.sh install [redis|ldap|rabbitmq|chromium|all]   (default: all)
# Uses apt-get when running as root on Debian/Ubuntu; otherwise prints what to install.
# Tests start their own private servers on free loopback ports (test/support/servers.ts) and
# stop them by PID; nothing here starts a service.
set -euo pipefail

want="${2:-all}"
declare -A PKG=( [redis]=redis-server [ldap]="slapd ldap-utils" [rabbitmq]=rabbitmq-server [chromium]=chromium [proton]=python3-qpid-proton [proton-examples]=libqpid-proton11-dev-examples [openssl]=openssl )
declare -A BIN=( [redis]=redis-server [ldap]=slapd [rabbitmq]=rabbitmq-server [chromium]=chromium [proton]=/usr/lib/python3/dist-packages/proton/__init__.py [proton-examples]=/usr/share/proton/examples/python/simple_send.py [openssl]=openssl )
# Everything the test suite starts for real: Redis, OpenLDAP, RabbitMQ (AMQP 1.0), Chromium,
# an AMQP client we did not write (Qpid Proton for Python) with its example programs (run
# unmodified against the embedded endpoint; Debian ships the Python ones in
# libqpid-proton11-dev-examples, not in python-qpid-proton-doc), and openssl for certificates.
ALL=(redis ldap rabbitmq chromium proton proton-examples openssl)

case "${1:-}" in
  install) ;;
  *) echo "usage: $0 install [redis|ldap|rabbitmq|chromium|proton|proton-examples|openssl|all]" >&2; exit 2 ;;
esac

if [ "$want" = all ]; then names=("${ALL[@]}"); else names=("$want"); fi
missing=()
for n in "${names[@]}"; do
  [ -n "${PKG[$n]:-}" ] || { echo "unknown service '$n' (expected redis, ldap, rabbitmq, chromium, proton, proton-examples, openssl or all)" >&2; exit 2; }
  bin="${BIN[$n]}"
  if [[ "$bin" == /* ]]; then [ -e "$bin" ] || missing+=(${PKG[$n]})
  elif ! PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1; then missing+=(${PKG[$n]}); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
