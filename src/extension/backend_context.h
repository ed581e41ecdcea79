// The engine's TaskContext inside a PostgreSQL process: waits are latch waits (so SIGTERM, query
// cancel and postmaster death are noticed), interrupts become C++ exceptions, logs go to elog.
#pragma once

#include <csignal>
#include <functional>

#include "engine/task_context.h"

namespace pgdog_reshard {

class BackendTaskContext : public TaskContext {
 public:
  // stop_flag: set by a worker's SIGTERM handler (nullptr in a user's backend, where a cancel or
  // termination arrives through CHECK_FOR_INTERRUPTS). on_poll: main-thread work to do whenever the
  // engine checks for interrupts (e.g. writing queued progress to the catalog).
  explicit BackendTaskContext(volatile sig_atomic_t *stop_flag = nullptr, std::function<void()> on_poll = {})
      : stop_flag_(stop_flag), on_poll_(std::move(on_poll)) {}

  void wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) override;
  void check_interrupts() override;
  void log(LogLevel level, const std::string &message) override;
  // Sleeps up to ms, waking for interrupts; used for backoff between retries.
  void sleep_ms(long ms);

 private:
  volatile sig_atomic_t *stop_flag_;
  std::function<void()> on_poll_;
};

}  // namespace pgdog_reshard
