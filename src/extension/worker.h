// What every pgdog_reshard background worker shares: start-up, the stop flag, and the C++ boundary.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>

#include "extension/pg_server.h"

namespace pgdog_reshard {

// Set by SIGTERM (a stop request or a server shutdown); the worker's TaskContext turns it into an
// exception at the next wait, so C++ unwinds normally and connections close cleanly.
extern volatile sig_atomic_t worker_stop_requested;

// Signals, unblocking, and the connection to the extension's database (pgdog_reshard.database_name,
// or the one given: reshard_verify's worker works in its caller's).
void worker_start(Oid database = InvalidOid);
// Runs the worker's C++ body; an exception becomes ereport(ERROR), which ends the worker.
void worker_run(const std::function<void()> &body);

// Starts a dynamic worker running `function` (exported by this library) with `arg` and `index`
// (bgw_extra); the caller is notified when it stops. Its name is "<type> for task <arg>" unless
// given. Returns false when no worker slot is free.
bool worker_launch(const char *function, const char *type, int64_t arg, int index,
                   BackgroundWorkerHandle **handle, const char *name = nullptr);

}  // namespace pgdog_reshard
