#include "extension/backend_context.h"

#include "extension/boundary.h"
#include "extension/pg_server.h"

namespace pgdog_reshard {

void BackendTaskContext::wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) {
  int events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
  if (fd >= 0 && for_read) events |= WL_SOCKET_READABLE;
  if (fd >= 0 && for_write) events |= WL_SOCKET_WRITEABLE;
  if (timeout_ms >= 0) events |= WL_TIMEOUT;
  pg_call([&] {
    (void)WaitLatchOrSocket(MyLatch, events, fd, timeout_ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  });
  check_interrupts();
}

void BackendTaskContext::check_interrupts() {
  if (stop_flag_ != nullptr && *stop_flag_) {
    throw Error(sqlstate::kAdminShutdown, "pgdog_reshard worker stopping on request");
  }
  pg_call([] { CHECK_FOR_INTERRUPTS(); });
  // A worker re-reads postgresql.conf after a reload (a user's backend does it between queries).
  if (stop_flag_ != nullptr && ConfigReloadPending) {
    ConfigReloadPending = false;
    pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
  }
  if (on_poll_) on_poll_();
}

void BackendTaskContext::log(LogLevel level, const std::string &message) {
  int elevel = level == LogLevel::Warning ? WARNING : (level == LogLevel::Info ? LOG : DEBUG1);
  pg_call([&] { elog(elevel, "pgdog_reshard: %s", message.c_str()); });
}

void BackendTaskContext::sleep_ms(long ms) {
  pg_call([&] {
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  });
  check_interrupts();
}

}  // namespace pgdog_reshard
