#!/usr/bin/env bash
# What `npm run bench` needs beyond the lab: Debian's ansible (the comparison) and GNU time (peak RSS).
# Installs them with apt when missing; the tests never need either.
set -euo pipefail
missing=()
command -v ansible-playbook >/dev/null 2>&1 || missing+=(ansible)
[ -x /usr/bin/time ] || missing+=(time)
[ ${#missing[@]} -eq 0 ] && { echo "bench setup: ansible-playbook and /usr/bin/time are there"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "bench setup: run as root to apt-get install ${missing[*]}" >&2; exit 1; }
command -v apt-get >/dev/null 2>&1 || { echo "bench setup: no apt-get here; install ${missing[*]} by hand" >&2; exit 1; }
echo "bench setup: installing ${missing[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
