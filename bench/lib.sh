# Shared by the benchmarks (source it): checks, throw-away servers on loopback started as the
# postgres OS user and always stopped on exit, psql helpers, timing, and the control node's config.
#
# The sourcing script sets KEEP (1 keeps the data directories and logs) and may set PGBIN, then calls
# bench_setup "<name>" before starting servers with start_instance.

say() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
die() { printf '[%s] error: %s\n' "$(date +%T)" "$*" >&2; exit 1; }

declare -A port=()  # server name -> port
bg_pids=()          # background helpers (samplers, load generators) to kill on exit

# Root, the postgres OS user, a PostgreSQL server, the extension installed; then a fresh base
# directory and the exit trap that stops every server started from it.
bench_setup() {  # name, for the directory and the servers' config comment
  bench_name=$1
  [ "$(id -u)" = 0 ] || die "run as root: the servers are started as the postgres OS user with runuser"
  id postgres >/dev/null 2>&1 || die "no postgres OS user: install postgresql-15"
  PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
  [ -x "$PGBIN/postgres" ] || die "no PostgreSQL server in $PGBIN (set PGBIN)"
  local pkglibdir
  pkglibdir=$(pg_config --pkglibdir 2>/dev/null || echo "$PGBIN/../lib")
  [ -f "$pkglibdir/pgdog_reshard.so" ] || die "pgdog_reshard is not installed in $pkglibdir: run make install"
  base=$(mktemp -d "/tmp/pgdog_reshard_$bench_name.XXXXXX")
  chown postgres "$base"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

as_pg() { (cd "$base" && runuser -u postgres -- "$@"); }

bench_cleanup() {
  local status=$? pid log pidfile dir
  trap - EXIT INT TERM
  set +e
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ "$status" -ne 0 ]; then
    for log in "$base"/*.log; do
      [ -f "$log" ] || continue
      echo "---- last lines of $(basename "$log")" >&2
      tail -n 20 "$log" >&2
    done
  fi
  for pidfile in "$base"/*/postmaster.pid; do
    [ -f "$pidfile" ] || continue
    dir=$(dirname "$pidfile")
    as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -t 30 -w stop >/dev/null 2>&1 ||
      as_pg "$PGBIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $base" >&2; else rm -rf "$base"; fi
  [ "$status" -eq 0 ] && say "servers stopped" || say "failed (exit $status); servers stopped"
  exit "$status"
}

# A port nothing listens on, below the kernel's ephemeral range (where a client's own end of a
# connection could take it between this check and the server's bind).
free_port() {
  local p low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  ((low > 11000)) || low=32768
  while :; do
    p=$((10000 + RANDOM % (low - 10000)))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# initdb and start one server with the settings below plus $2 (postgresql.conf lines).
start_instance() {  # name settings [preload]
  local name=$1 dir="$base/$1"
  as_pg "$PGBIN/initdb" -D "$dir" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
  {
    echo "# bench/$bench_name.sh"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$base'"
    echo "wal_level = logical"
    echo "max_worker_processes = 16"
    echo "$2"
    [ "${3:-}" = preload ] && echo "shared_preload_libraries = 'pgdog_reshard'"
  } >>"$dir/postgresql.conf"
  start_on_free_port "$name" "$PGBIN"
}

# pg_ctl start of the server in $base/<name> on a free port, recorded in port[name]. Another
# process (a test suite, say) may take the port first: then another one is tried.
start_on_free_port() {  # name bindir
  local name=$1 dir="$base/$1" p _
  for _ in 1 2 3 4 5; do
    p=$(free_port)
    rm -f "$base/$name.log"
    if as_pg "$2/pg_ctl" -D "$dir" -l "$base/$name.log" -o "-p $p" -w start >/dev/null 2>&1; then
      port[$name]=$p
      return
    fi
    grep -q 'Address already in use' "$base/$name.log" || break
    say "port $p was taken, trying another one for $name"
  done
  die "could not start $name (see $base/$name.log)"
}

# Polls a reshard_copy_data task until it replicates (every table copied), saying how it does every
# 5 s; dies if it ends first. `what`: how messages name the task's run ("" or " (2 replicas)", say).
wait_replicating() {  # task what
  local task=$1 state st ph pr rc last_report now
  last_report=$(now_us)
  while :; do
    state=$(value ctl "SELECT state || ' ' || coalesce(phase, '-') || ' ' || coalesce(progress::text, '-')
                       || ' ' || rows_copied FROM reshard_status WHERE id = $task")
    case $state in
      replicating*) return ;;
      failed* | cancelled* | done*)
        die "pgdog_reshard task $task$2 ended: $(value ctl "SELECT state || ': ' || coalesce(error, '') FROM reshard_status WHERE id = $task")" ;;
    esac
    now=$(now_us)
    if ((now - last_report >= 5000000)); then
      read -r st ph pr rc <<<"$state"
      say "    task $task: $st, phase $ph, $pr %, $rc rows copied"
      last_report=$now
    fi
    sleep 0.5  # the times come from the server's clock: polling often would only take CPU
  done
}

psql_at() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "${port[$1]}" -d postgres "${@:2}"; }
value() { psql_at "$1" -At -c "$2"; }
conninfo() { echo "host=127.0.0.1 port=${port[$1]} user=postgres dbname=postgres"; }

now_us() { local t=$EPOCHREALTIME; echo "${t//[!0-9]/}"; }
seconds() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

# One [[databases]] entry of pgdog.toml: server `server` as `cluster` (shard `shard` if given).
database_entry() {  # cluster server [shard]
  printf '[[databases]]\nname = "%s"\nhost = "127.0.0.1"\nport = %s\ndatabase_name = "postgres"\n' "$1" "${port[$2]}"
  [ $# -lt 3 ] || printf 'shard = %s\n' "$3"
  echo
}

# Loads into the control node `ctl` the pgdog.toml given, with users.toml letting postgres reach
# each of the clusters named.
load_toml() {  # pgdog.toml clusters...
  local cluster users=""
  for cluster in "${@:2}"; do users+=$'[[users]]\nname = "postgres"\ndatabase = "'"$cluster"$'"\n\n'; done
  psql_at ctl >/dev/null <<SQL
SELECT reshard_load_config(\$toml\$
$1
\$toml\$, \$users\$
$users
\$users\$);
SQL
}

# Loads into the control node `ctl` a PgDog config with database "prod" (server `src`) and
# "prod_2x" (servers `dst0`, `dst1` as shards 0 and 1), and the [[sharded_tables]] given.
load_config() {  # sharded_tables TOML
  load_toml "$(database_entry prod src)
$(database_entry prod_2x dst0 0)
$(database_entry prod_2x dst1 1)
$1" prod prod_2x
}

# Samples, every 100 ms, /proc/<pid>/status of the control node's pgdog_reshard background workers
# (copy, task, stream, verify, launcher) until $1 exists; writes the peaks per backend type (without
# the "pgdog_reshard " prefix) to $2: type, VmHWM kB, VmRSS kB, RssAnon kB. The workers are looked
# up in pg_stat_activity every 500 ms until a copy or stream worker shows, then every 3 s (a psql
# is not free on the CPUs the work uses).
sample_memory() {  # stop file, output file
  set +e
  local -A hwm=() rss=() anon=()
  local -a workers=()
  local i=0 every=5 w pid type key val _
  while [ ! -e "$1" ]; do
    if ((i % every == 0)); then
      mapfile -t workers < <(value ctl "SELECT pid || ' ' || backend_type FROM pg_stat_activity
                                        WHERE backend_type LIKE 'pgdog\\_reshard %'" 2>/dev/null)
      [[ " ${workers[*]} " == *" pgdog_reshard copy"* || " ${workers[*]} " == *" pgdog_reshard stream"* ]] && every=30
    fi
    for w in "${workers[@]}"; do
      pid=${w%% *}
      type=${w#* }
      type=${type#pgdog_reshard }
      while read -r key val _; do
        case $key in
          VmHWM:) ((val > ${hwm[$type]:-0})) && hwm[$type]=$val ;;
          VmRSS:) ((val > ${rss[$type]:-0})) && rss[$type]=$val ;;
          RssAnon:) ((val > ${anon[$type]:-0})) && anon[$type]=$val ;;
        esac
      done 2>/dev/null <"/proc/$pid/status"
    done
    i=$((i + 1))
    sleep 0.1
  done
  for type in "${!hwm[@]}"; do
    printf '%s\t%s\t%s\t%s\n' "$type" "${hwm[$type]:-0}" "${rss[$type]:-0}" "${anon[$type]:-0}"
  done >"$2"
}

# The machine, for a results file.
machine_lines() {
  local cpu mem_kb
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || cpu=unknown
  mem_kb=$(grep -m1 MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)
  echo "- $(nproc) CPUs ($cpu), $((mem_kb / 1024)) MiB of memory, Linux $(uname -r)"
  echo "- $(value src "SELECT version()")"
}

# Forgets background helpers that ended (or were waited for), so the exit trap does not kill
# another process that took their pid since.
bg_forget() {  # pid...
  local -a kept=()
  local p q keep
  for p in "${bg_pids[@]}"; do
    keep=1
    for q in "$@"; do [ "$p" = "$q" ] && keep=0; done
    ((keep)) && kept+=("$p")
  done
  bg_pids=("${kept[@]}")
}

# sample_memory in the background from memory_start to memory_stop, which appends its peaks to a
# file, each line after the labels given (tab-separated): one sampler at a time.
memory_start() {
  memory_stop_file="$base/memory.stop"
  memory_out="$base/memory.out"
  rm -f "$memory_stop_file" "$memory_out"
  sample_memory "$memory_stop_file" "$memory_out" &
  memory_pid=$!
  bg_pids+=("$memory_pid")
}

memory_stop() {  # file to append to, label...
  local line prefix
  touch "$memory_stop_file"
  wait "$memory_pid" || true
  bg_forget "$memory_pid"
  prefix=$(IFS=$'\t'; echo "${*:2}")
  while IFS= read -r line; do printf '%s\t%s\n' "$prefix" "$line"; done <"$memory_out" >>"$1"
}

# Rows of bench/run.sh's "summary against the targets" table, appended to $SUMMARY when it is set.
summary_rows() {  # file of rows: | what | figure | target | met (yes/no) |
  [ -n "${SUMMARY:-}" ] || return 0
  cat "$1" >>"$SUMMARY"
}
