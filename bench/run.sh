#!/usr/bin/env bash
# The whole benchmark in one command: bench/copy.sh, bench/replicas.sh, bench/apply.sh and
# bench/cutover.sh one after another (each starts and stops its own servers), then one results file,
# bench/RESULTS.md: the machine, the commit, a summary against the targets (the rows each benchmark
# appends to $SUMMARY) and every benchmark's own results. Not part of the test suite: run it by hand,
# as root:
#
#   bash bench/run.sh                                   everything at full size
#   ONLY=apply,cutover RESULTS=/tmp/r.md bash bench/run.sh      a subset, results elsewhere
#   ONLY=replicas ROWS=50000 DOC_ROWS=1000 RESULTS=/tmp/r.md bash bench/run.sh     one, small
#   ROWS=300000 TRANSACTIONS=20000 REPEAT=1 STEADY_SECONDS=10 CYCLES=1 RESULTS=/tmp/r.md bash bench/run.sh
#                                                       a quick run of everything
#
# Every other setting reaches the benchmarks through the environment: see each one's header. A name
# several of them read reaches them all: REPEAT (copy, replicas, apply; replicas' default is 1, the
# others' 3), FSYNC (copy, replicas, apply), ROWS, DOC_ROWS, WARMUP, SHARED_BUFFERS and MAX_WAL_SIZE
# (copy, replicas), CLIENTS (apply, cutover) and RATE, which is apply's steady load (default 1000/s)
# and cutover's load (default 500/s). bench/replicas.sh also needs a PostgreSQL 17 server (PG17BIN;
# it runs scripts/install-pg17.sh when the default one is missing).
#
# A benchmark that fails stops the run (exit 1): bench/RESULTS.md is left as it was, and the results
# of the benchmarks done so far stay in a directory under /tmp, named on exit.
#
# Settings (environment): ONLY (copy,replicas,apply,cutover: which to run, always in that order),
# RESULTS (bench/RESULTS.md), PGBIN (pg_config --bindir).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

RESULTS=${RESULTS:-$root/bench/RESULTS.md}
default_only=copy,replicas,apply,cutover
ONLY=${ONLY:-$default_only}
# The settings of the benchmarks, for the command that reproduces the run.
knobs=(ONLY ROWS DOC_ROWS ORDER_TABLES WARMUP SHARED_BUFFERS MAX_WAL_SIZE SCALE TRANSACTIONS
       STEADY_SECONDS CYCLES WAIT REPEAT CLIENTS RATE FSYNC PGBIN PG17BIN)

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

all=(copy replicas apply cutover)
selected=()
IFS=, read -r -a wanted <<<"$ONLY"
for w in "${wanted[@]}"; do
  [[ " ${all[*]} " == *" $w "* ]] || die "ONLY takes a comma-separated list of: ${all[*]} (got '$ONLY')"
done
for b in "${all[@]}"; do
  [[ ",$ONLY," == *",$b,"* ]] && selected+=("$b")
done
((${#selected[@]})) || die "ONLY selects nothing (got '$ONLY')"
[ "$(id -u)" = 0 ] || die "run as root: the benchmarks start their servers as the postgres OS user"
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PGBIN/postgres" ] || die "no PostgreSQL server in $PGBIN (set PGBIN)"
export PGBIN

# The commit now: the sources may change while the benchmarks run. Results files do not count as
# changes; --no-optional-locks keeps git status off the index, which others may be using.
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" --no-optional-locks status --porcelain -- src bench ':!bench/RESULTS*.md' 2>/dev/null)" ]; then
  commit="$commit (with uncommitted changes)"
fi
started_at=$(date -u '+%Y-%m-%d %H:%M UTC')

work=$(mktemp -d /tmp/pgdog_reshard_run.XXXXXX)
done_ok=0
# Kept when a benchmark failed: the results of those that ran are in it.
finish() { if ((done_ok)); then rm -rf "$work"; else echo "results so far kept in $work" >&2; fi; }
trap finish EXIT
: >"$work/summary.md"

minutes() { if (($1 >= 60)); then echo "$(($1 / 60)) min $(($1 % 60)) s"; else echo "$1 s"; fi; }

durations=()
run_started=$(now_us)
for b in "${selected[@]}"; do
  say "==== bench/$b.sh"
  t0=$(now_us)
  status=0
  RESULTS="$work/$b.md" SUMMARY="$work/summary.md" bash "$root/bench/$b.sh" || status=$?
  took=$(( ($(now_us) - t0) / 1000000 ))
  ((status == 0)) || die "bench/$b.sh failed (exit $status) after $took s: $RESULTS not written"
  [ -s "$work/$b.md" ] || die "bench/$b.sh wrote no results: $RESULTS not written"
  durations+=("$b $(minutes "$took")")
  say "==== bench/$b.sh done in $took s"
done
total=$(( ($(now_us) - run_started) / 1000000 ))

command=""
for v in "${knobs[@]}"; do
  [ -n "${!v+set}" ] || continue
  [ "$v" = ONLY ] && [ "$ONLY" = "$default_only" ] && continue
  [ "$v" = PGBIN ] && [ "$PGBIN" = "$(pg_config --bindir 2>/dev/null)" ] && continue
  value=${!v}
  [[ $value =~ ^[A-Za-z0-9_.,/:+=-]+$ ]] || value=${value@Q}
  command+="$v=$value "
done
command+="bash bench/run.sh"

# One heading level down (# -> ##), outside fenced code.
demote() { awk '/^```/ { fenced = !fenced } !fenced && /^#/ { $0 = "#" $0 } { print }' "$1"; }

machine() {
  local cpu mem_kb
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || cpu=unknown
  mem_kb=$(grep -m1 MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)
  echo "- $(nproc) CPUs ($cpu), $((mem_kb / 1024)) MiB of memory, Linux $(uname -r)"
  echo "- $("$PGBIN/postgres" --version)"
}

{
  cat <<EOF
# pgdog_reshard benchmarks

Written by \`bench/run.sh\` on $started_at (pgdog_reshard commit $commit); $(minutes "$total") in all
($(IFS=,; echo "${durations[*]}" | sed 's/,/, /g')).

## Reproduce

As root on Debian 12 with the extension installed (\`make install\`):

    $command

## Machine

$(machine)

## Summary against the targets

| what | figure | target | met |
|---|---|---|---|
$(cat "$work/summary.md")
EOF
  for b in "${selected[@]}"; do
    echo
    demote "$work/$b.md"
  done
} >"$work/RESULTS.md"
mv "$work/RESULTS.md" "$RESULTS"
done_ok=1

echo
echo "| what | figure | target | met |"
echo "|---|---|---|---|"
cat "$work/summary.md"
echo
say "${selected[*]} done in $(minutes "$total") ($(IFS=,; echo "${durations[*]}" | sed 's/,/, /g')); results written to $RESULTS"
