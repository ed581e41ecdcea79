#!/usr/bin/env bash
# Builds and installs the extension (PGXS); with --tests, also the core and test binaries (CMake).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
make -j"$jobs" CI="${CI:-}"
make install >/dev/null
if [ "${1:-}" = --tests ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CI:+-DPGDOG_WERROR=ON} >/dev/null
  cmake --build build -j"$jobs"
fi
