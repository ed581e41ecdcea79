// What the engine needs from whoever runs it: interruptible waits, a cancel check, and a log.
// The PostgreSQL glue implements it with latches, CHECK_FOR_INTERRUPTS and elog; tests with poll().
// The engine never calls server functions; this interface (and each step's observer) is its only
// way out.
#pragma once

#include <string>

#include "core/pg.h"

namespace pgdog_reshard {

enum class LogLevel { Debug, Info, Warning };

class TaskContext : public Waiter {
 public:
  // Throws Error (57014 query_canceled, or 57P01 admin_shutdown) when the task must stop.
  virtual void check_interrupts() = 0;
  virtual void log(LogLevel level, const std::string &message) = 0;
};

// For tests and tools outside the server: poll() waits, a stop flag, log lines to a callback.
class SimpleTaskContext : public TaskContext {
 public:
  explicit SimpleTaskContext(std::function<bool()> should_stop = {},
                             std::function<void(LogLevel, const std::string &)> on_log = {})
      : waiter_(should_stop), should_stop_(std::move(should_stop)), on_log_(std::move(on_log)) {}

  void wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) override {
    waiter_.wait_socket(fd, for_read, for_write, timeout_ms);
  }
  void check_interrupts() override {
    if (should_stop_ && should_stop_()) throw Error(sqlstate::kQueryCanceled, "task cancelled");
  }
  void log(LogLevel level, const std::string &message) override {
    if (on_log_) on_log_(level, message);
  }

 private:
  PollWaiter waiter_;
  std::function<bool()> should_stop_;
  std::function<void(LogLevel, const std::string &)> on_log_;
};

}  // namespace pgdog_reshard
