#include "extension/launcher.h"

#include <csignal>

#include "extension/boundary.h"
#include "extension/compat.h"
#include "extension/guc.h"
#include "extension/pg_server.h"
#include "extension/spi.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/worker.h"

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

// Gives every unfinished task a worker (after a restart this resumes them), once.
void start_task_workers(std::map<int64_t, BackgroundWorkerHandle *> &started) {
  std::vector<int64_t> tasks = in_transaction([] {
    return extension_installed() ? tasks_needing_worker() : std::vector<int64_t>{};
  });
  for (int64_t task : tasks) {
    auto it = started.find(task);
    pid_t pid;
    if (it != started.end() && GetBackgroundWorkerPid(it->second, &pid) != BGWH_STOPPED) continue;
    BackgroundWorkerHandle *handle = nullptr;
    if (pg_call([&] { return worker_launch("pgdog_reshard_task_main", "pgdog_reshard task", task, 0, &handle); })) {
      started[task] = handle;
    } else {
      pg_call([&] { elog(WARNING, "pgdog_reshard: no free background worker slot for task %lld", static_cast<long long>(task)); });
    }
  }
}

void supervise(std::map<int64_t, BackgroundWorkerHandle *> &started) {
  try {
    start_task_workers(started);
  } catch (const std::exception &e) {
    // Logged and retried at the next wake-up: the launcher itself must not crash-loop.
    pg_call([&] { elog(WARNING, "pgdog_reshard launcher: %s", e.what()); });
  }
}

void launcher_loop() {
  std::map<int64_t, BackgroundWorkerHandle *> started;
  while (!got_sigterm) {
    supervise(started);
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kIdleTimeoutMs,
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
