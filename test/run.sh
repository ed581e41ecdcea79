#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (as root): installs the packages it needs, builds,
# installs the extension, then runs the unit tests, pg_regress on a temporary instance and the
# end-to-end tests on real PostgreSQL instances. Every server it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh
bash scripts/build.sh --tests

cleanup() { bash "$root/test/e2e/cleanup-stale.sh" || true; }
trap cleanup EXIT

log=$(mktemp)
echo "== unit tests"
(cd build && ctest --output-on-failure -R '^unit\.') | tee "$log"
unit=$(grep -oP 'tests failed out of \K[0-9]+' "$log")

echo "== pg_regress (temporary instance, as the postgres OS user: PostgreSQL refuses root)"
outdir=$(mktemp -d /tmp/pgdog_reshard_regress.XXXXXX)
chown postgres "$outdir"
if ! runuser -u postgres -- make --no-print-directory installcheck REGRESS_OUTPUTDIR="$outdir" | tee "$log"; then
  cat "$outdir/regression.diffs" || true
  exit 1
fi
# pg_regress 15 prints "test name ... ok", 16+ "ok 1 - name"
regress=$(grep -cE '^(test .* \.\.\. ok|ok [0-9]+ )' "$log" || true)
rm -rf "$outdir"

echo "== end-to-end tests (real PostgreSQL instances on loopback)"
(cd build && ctest --output-on-failure -R '^e2e\.') | tee "$log"
e2e=$(grep -oP 'tests failed out of \K[0-9]+' "$log")
rm -f "$log"

echo "== all tests passed: $unit unit, $regress pg_regress, $e2e end-to-end"
echo "$((unit + regress + e2e)) passed, 0 failed"
