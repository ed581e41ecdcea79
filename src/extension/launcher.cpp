#include "extension/launcher.h"

#include <csignal>

#include "extension/boundary.h"
#include "extension/compat.h"
#include "extension/guc.h"
#include "extension/pg_server.h"
#include "extension/spi.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/verify_catalog.h"
#include "extension/worker.h"

#include <algorithm>
#include <map>

namespace pgdog_reshard {

namespace {

// Shared state: who the launcher is, so backends can wake it.
struct LauncherShared {
  pid_t pid;
  ProcNumberCompat proc_number;
};

LauncherShared *shared = nullptr;
volatile sig_atomic_t got_sigterm = false;
volatile sig_atomic_t got_sighup = false;

constexpr long kIdleTimeoutMs = 10 * 1000;
constexpr int kRestartSeconds = 5;
// A new task that finds no free background worker slot for this long fails, rather than waiting
// unseen for a slot that may never come.
constexpr long kNoWorkerSlotFailMs = 30 * 1000;

void handle_sigterm(SIGNAL_ARGS) {
  int save_errno = errno;
  got_sigterm = true;
  SetLatch(MyLatch);
  errno = save_errno;
}

void handle_sighup(SIGNAL_ARGS) {
  int save_errno = errno;
  got_sighup = true;
  SetLatch(MyLatch);
  errno = save_errno;
}

void advertise_self() {
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  shared->pid = MyProcPid;
  shared->proc_number = my_proc_number();
  LWLockRelease(AddinShmemInitLock);
}

void on_launcher_exit(int, Datum) {
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  if (shared->pid == MyProcPid) shared->pid = 0;
  LWLockRelease(AddinShmemInitLock);
}

bool extension_installed() {
  SpiSession spi;
  return spi.query("SELECT to_regclass('pgdog_reshard.tasks') IS NOT NULL")[0][0] == std::string("t");
}

struct Launched {
  std::map<int64_t, BackgroundWorkerHandle *> workers;
  std::map<int64_t, TimestampTz> no_slot_since;  // tasks waiting for a worker slot
};

// No worker slot for `task`: a task that never started ends after kNoWorkerSlotFailMs (at once if
// it was asked to stop); a started one (resuming after a restart) keeps its objects and waits.
void no_worker_slot(int64_t task, Launched &launched) {
  pg_call([&] { elog(WARNING, "pgdog_reshard: no free background worker slot for task %lld", static_cast<long long>(task)); });
  TimestampTz now = GetCurrentTimestamp();
  TimestampTz since = launched.no_slot_since.emplace(task, now).first->second;
  bool stopping = in_transaction([&] { return task_stop_requested(task); });
  if (!stopping && !TimestampDifferenceExceeds(since, now, static_cast<int>(kNoWorkerSlotFailMs))) return;
  std::string error = "no free background worker slot to run the task (max_worker_processes = " +
                      std::to_string(max_worker_processes) +
                      "); raise max_worker_processes (needs a restart): a task needs 1 worker, plus "
                      "pgdog_reshard.parallel_copies per source shard while it copies and 1 per source shard while it streams";
  if (in_transaction([&] { return task_end_unstarted(task, error); })) {
    pg_call([&] { elog(LOG, "pgdog_reshard: task %lld: ended without a worker: %s", static_cast<long long>(task), error.c_str()); });
    launched.no_slot_since.erase(task);
  }
}

// Gives every unfinished task a worker (after a restart this resumes them), once.
void start_task_workers(Launched &launched) {
  std::vector<int64_t> tasks = in_transaction([] {
    return extension_installed() ? tasks_needing_worker() : std::vector<int64_t>{};
  });
  // Forget the workers of tasks that ended: the map holds only live tasks.
  for (auto it = launched.workers.begin(); it != launched.workers.end();) {
    pid_t pid;
    bool ended = std::find(tasks.begin(), tasks.end(), it->first) == tasks.end() &&
                 GetBackgroundWorkerPid(it->second, &pid) == BGWH_STOPPED;
    it = ended ? launched.workers.erase(it) : std::next(it);
  }
  for (auto it = launched.no_slot_since.begin(); it != launched.no_slot_since.end();) {
    bool ended = std::find(tasks.begin(), tasks.end(), it->first) == tasks.end();
    it = ended ? launched.no_slot_since.erase(it) : std::next(it);
  }
  for (int64_t task : tasks) {
    auto it = launched.workers.find(task);
    pid_t pid;
    if (it != launched.workers.end() && GetBackgroundWorkerPid(it->second, &pid) != BGWH_STOPPED) continue;
    BackgroundWorkerHandle *handle = nullptr;
    if (pg_call([&] { return worker_launch("pgdog_reshard_task_main", "pgdog_reshard task", task, 0, &handle); })) {
      launched.workers[task] = handle;
      launched.no_slot_since.erase(task);
    } else {
      no_worker_slot(task, launched);
    }
  }
}

void supervise(Launched &launched) {
  try {
    int orphaned = in_transaction([] { return extension_installed() ? verify_tasks_fail_orphaned() : 0; });
    if (orphaned > 0) pg_call([&] { elog(LOG, "pgdog_reshard: %d verify task(s) without a worker ended failed", orphaned); });
    start_task_workers(launched);
  } catch (const std::exception &e) {
    // Logged and retried at the next wake-up: the launcher itself must not crash-loop.
    pg_call([&] { elog(WARNING, "pgdog_reshard launcher: %s", e.what()); });
  }
}

void launcher_loop() {
  Launched launched;
  while (!got_sigterm) {
    supervise(launched);
    // While a task waits for a worker slot, look again every second rather than every ten.
    long timeout_ms = launched.no_slot_since.empty() ? kIdleTimeoutMs : 1000;
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (got_sighup) {
      got_sighup = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
  }
}

}  // namespace

void launcher_register() {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof(worker));
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  // A crash (any exit but 0) brings it back after this many seconds; a SIGTERM exit does not.
  worker.bgw_restart_time = kRestartSeconds;
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgdog_reshard");
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "pgdog_reshard_launcher_main");
  snprintf(worker.bgw_name, BGW_MAXLEN, "pgdog_reshard launcher");
  snprintf(worker.bgw_type, BGW_MAXLEN, "pgdog_reshard launcher");
  RegisterBackgroundWorker(&worker);
}

void launcher_shmem_request() { RequestAddinShmemSpace(MAXALIGN(sizeof(LauncherShared))); }

void launcher_shmem_startup() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  shared = static_cast<LauncherShared *>(ShmemInitStruct("pgdog_reshard launcher", sizeof(LauncherShared), &found));
  if (!found) memset(shared, 0, sizeof(LauncherShared));
  LWLockRelease(AddinShmemInitLock);
}

void launcher_wake() {
  if (shared == nullptr) return;
  LWLockAcquire(AddinShmemInitLock, LW_SHARED);
  pid_t pid = shared->pid;
  ProcNumberCompat number = shared->proc_number;
  LWLockRelease(AddinShmemInitLock);
  if (pid != 0) wake_proc(number);
}

}  // namespace pgdog_reshard

extern "C" PGDLLEXPORT void pgdog_reshard_launcher_main(Datum) {
  using namespace pgdog_reshard;
  pqsignal(SIGTERM, handle_sigterm);
  pqsignal(SIGHUP, handle_sighup);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(guc_database_name, nullptr, 0);
  advertise_self();
  before_shmem_exit(on_launcher_exit, 0);
  elog(LOG, "pgdog_reshard launcher started (database \"%s\")", guc_database_name);
  launcher_loop();
  elog(LOG, "pgdog_reshard launcher shutting down");
  proc_exit(0);
}
