#!/usr/bin/env bash
# ops/deps.sh - install the Debian packages the test stack needs, only if missing:
#   redis-server, prometheus, prometheus-alertmanager  (checked with dpkg -s)
#   a Java >= 17 runtime and Maven                     (checked with command -v / java -version)
#   python3.11 with venv support                      (command -v; Debian's: python3.11-venv)
# Runs `apt-get update` first, then one `apt-get install`. Needs root (or sudo).
# Does nothing - and never touches apt - when everything is present.
set -euo pipefail

log() { printf '[deps] %s\n' "$*" >&2; }

missing=()
for pkg in redis-server prometheus prometheus-alertmanager; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

java_major() { java -version 2>&1 | sed -n -E 's/.*version "(1\.)?([0-9]+).*/\2/p' | head -n1; }
if ! command -v java >/dev/null 2>&1 || [[ "$(java_major)" -lt 17 ]]; then
  missing+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
py="$(command -v "${PYTHON:-python3.11}" || true)"
if [[ -z "$py" ]]; then
  missing+=(python3.11 python3.11-venv)
elif [[ "$(readlink -f "$py")" == /usr/bin/* ]] && ! dpkg -s python3.11-venv >/dev/null 2>&1; then
  missing+=(python3.11-venv)   # Debian's python needs it for `python3.11 -m venv` (ensurepip)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all present (redis-server, prometheus, prometheus-alertmanager, java >= 17, maven, ${PYTHON:-python3.11})"
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { log "ERROR: need root or sudo to install: ${missing[*]}"; exit 1; }
  SUDO=(sudo)
fi
log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
