#include "extension/worker.h"

#include "extension/boundary.h"
#include "extension/guc.h"

namespace pgdog_reshard {

volatile sig_atomic_t worker_stop_requested = false;

namespace {

void handle_sigterm(SIGNAL_ARGS) {
  int save_errno = errno;
  worker_stop_requested = true;
  SetLatch(MyLatch);
  errno = save_errno;
}

}  // namespace

void worker_start(Oid database) {
  pqsignal(SIGTERM, handle_sigterm);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);  // settings are re-read where interrupts are checked
  BackgroundWorkerUnblockSignals();
  if (OidIsValid(database)) {
    BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
  } else {
    BackgroundWorkerInitializeConnection(guc_database_name, nullptr, 0);
  }
}

void worker_run(const std::function<void()> &body) {
  CaughtError caught;
  bool failed = false;
  try {
    body();
  } catch (...) {
    capture_current_exception(caught);
    failed = true;
  }
  if (failed) raise_caught(caught);
}

bool worker_launch(const char *function, const char *type, int64_t arg, int index,
                   BackgroundWorkerHandle **handle, const char *name) {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof(worker));
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = BGW_NEVER_RESTART;  // the launcher and task workers own restarts
  snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgdog_reshard");
  snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
  if (name != nullptr) {
    snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
  } else {
    snprintf(worker.bgw_name, BGW_MAXLEN, "%s for task %lld", type, static_cast<long long>(arg));
  }
  snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
  worker.bgw_main_arg = Int64GetDatum(arg);
  memcpy(worker.bgw_extra, &index, sizeof(index));
  worker.bgw_notify_pid = MyProcPid;
  return RegisterDynamicBackgroundWorker(&worker, handle);
}

}  // namespace pgdog_reshard
