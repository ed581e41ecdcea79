#!/usr/bin/env bash
# Stops the PostgreSQL servers and PgBouncers the e2e harness left behind and removes their
# directories (/tmp/pgdog_reshard_test.*, /tmp/pgdog_reshard_pgbouncer.*). The harness cleans up after itself on exit and on fatal signals;
# this is for what nothing inside a process can handle: SIGKILL, a CI timeout, a power cut.
#
#   cleanup-stale.sh                     everything under the prefix: run it when no e2e test runs (CI)
#   cleanup-stale.sh --dead-owners-only  only instances whose test process is gone: safe at any time
#
# Always exits 0: it is cleanup, it must not fail a CI run by itself.
set -u
shopt -s nullglob

prefix=/tmp/pgdog_reshard_test.
dead_owners_only=false
case "${1:-}" in
  --dead-owners-only) dead_owners_only=true ;;
  "") ;;
  *) echo "usage: $0 [--dead-owners-only]" >&2; exit 2 ;;
esac

# "<state> <comm>" of a pid, from /proc/<pid>/stat (comm is in parentheses and may hold spaces).
proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local comm=${stat#*(}
  comm=${comm%)*}
  local rest=${stat##*) }
  echo "${rest%% *} $comm"
}

# A live (not zombie) process named postgres.
is_postgres() {
  local info
  info=$(proc_state "$1") || return 1
  [[ $info == "Z "* || $info == "X "* ]] && return 1
  [[ ${info#* } == postgres ]]
}

# The directory's owner file holds "<pid> <start time in clock ticks>" of the test process.
owner_alive() {
  local pid start stat rest
  { read -r pid start < "$1/owner"; } 2>/dev/null || return 0  # unknown owner: treat as alive
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  local fields
  read -r -a fields <<< "$rest"
  # fields[0] is field 3 (state), so starttime (field 22) is fields[19].
  [[ ${fields[0]} != Z && ${fields[19]} == "$start" ]]
}

dirs=()
for dir in "$prefix"*/; do
  dir=${dir%/}
  if $dead_owners_only && owner_alive "$dir"; then continue; fi
  dirs+=("$dir")
done

# Postmasters: the pid file of each directory, plus any postgres whose command line names a data
# directory under the prefix (its pid file may already be gone).
declare -A victims=()
for dir in "${dirs[@]}"; do
  pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
  [[ $pid =~ ^[0-9]+$ ]] && is_postgres "$pid" && victims[$pid]=1
done
for proc in /proc/[0-9]*; do
  pid=${proc#/proc/}
  [[ -n ${victims[$pid]:-} ]] && continue
  cmdline=$( { tr '\0' ' ' < "$proc/cmdline"; } 2>/dev/null) || continue  # it may have exited
  if [[ $cmdline != *" -D $prefix"* ]] || ! is_postgres "$pid"; then continue; fi
  if ! $dead_owners_only; then
    victims[$pid]=1
    continue
  fi
  for dir in "${dirs[@]}"; do
    [[ $cmdline == *" -D $dir/"* ]] && victims[$pid]=1
  done
done

# SIGQUIT = immediate shutdown; the postmaster takes its backends down with it.
for pid in "${!victims[@]}"; do kill -QUIT "$pid" 2>/dev/null; done
for _ in $(seq 100); do
  left=0
  for pid in "${!victims[@]}"; do is_postgres "$pid" && left=1; done
  ((left)) || break
  sleep 0.1
done
for pid in "${!victims[@]}"; do is_postgres "$pid" && kill -KILL "$pid" 2>/dev/null; done

# PgBouncers of the harness (test/e2e/pgbouncer.cpp): their own prefix and pid file.
bouncers=0
for dir in /tmp/pgdog_reshard_pgbouncer.*/; do
  dir=${dir%/}
  if $dead_owners_only && owner_alive "$dir"; then continue; fi
  pid=$(head -n 1 "$dir/pgbouncer.pid" 2>/dev/null)
  if [[ $pid =~ ^[0-9]+$ ]] && [[ $(proc_state "$pid" 2>/dev/null) == [!ZX]" pgbouncer" ]]; then
    kill -KILL "$pid" 2>/dev/null && bouncers=$((bouncers + 1))
  fi
  dirs+=("$dir")
done

removed=0
for dir in "${dirs[@]}"; do
  rm -rf -- "$dir" && removed=$((removed + 1))
done
echo "cleanup-stale: stopped ${#victims[@]} server(s) and $bouncers pgbouncer(s), removed $removed director$( ((removed == 1)) && echo y || echo ies) under ${prefix}*"
exit 0
