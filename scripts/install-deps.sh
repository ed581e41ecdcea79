#!/usr/bin/env bash
# Installs what pgdog_reshard needs to build, test and demo on Debian 12 (run as root).
# Skips the network entirely when every package is already there.
set -euo pipefail
packages=(
  build-essential cmake g++ make pkg-config
  postgresql-15 postgresql-server-dev-15 postgresql-contrib libpq-dev postgresql-15-cron
  libtomlplusplus-dev libgtest-dev googletest
  pgbouncer pgcopydb
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# PostgreSQL 17 for the standby e2e tests (Debian 12 has 15 only); a no-op when already installed.
"$(dirname "$0")/install-pg17.sh"
