// The proxies' admin consoles (PgBouncer's `pgbouncer` database, PgDog's `admin`), driven at
// cutover: PAUSE every proxy, switch, RELOAD, RESUME. Commands go over the simple query protocol,
// one admin connection per proxy, opened on first use and kept.
//
// What PgBouncer (1.18) does with them, as the e2e tests check:
// - PAUSE answers only once every server connection is released and closed: in transaction mode,
//   once each transaction open at the time has ended. Clients stay connected; their new
//   transactions (and new logins) wait until RESUME.
// - RELOAD re-reads the ini file; a database whose host or port changed sends new server
//   connections to the new address (after a PAUSE there are no old ones left).
// - PAUSE while paused fails ("already suspended/paused") and RESUME while not paused fails
//   ("pooler is not paused/suspended"): both are taken as success here.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/pg.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

// The conninfos of pgdog_reshard.proxy_admin, separated by ';' (a ';' inside a quoted value does
// not separate); empty entries are ignored. Throws Error 22023 naming the entry that does not
// parse.
std::vector<ConnParams> parse_proxy_admin(std::string_view setting);

class ProxyAdmin {
 public:
  ProxyAdmin(std::vector<ConnParams> proxies, TaskContext &ctx);  // connects lazily
  ~ProxyAdmin();
  ProxyAdmin(const ProxyAdmin &) = delete;
  ProxyAdmin &operator=(const ProxyAdmin &) = delete;

  // PAUSE on every proxy, in order; returns once each has answered that it is paused. A proxy
  // already paused (by someone else) counts once its server connections are gone. Interruptible
  // through the task. If one fails, the proxies it had paused (and the failing one) are resumed,
  // best effort, before the first error is thrown: traffic never stays paused by a failed pause().
  void pause();
  // RELOAD on every proxy, in order; interruptible; the first failure throws.
  void reload();
  // RESUME on every proxy, for normal and abort paths alike: tries every proxy even if one fails,
  // then throws the first error. It does not stop for the task's interrupts (an interrupted
  // cutover must still give the traffic back): each proxy gets at most kResumeTimeout.
  void resume();
  bool empty() const { return proxies_.empty(); }

  static constexpr std::chrono::seconds kResumeTimeout{10};

 private:
  // Where the admin connections wait: through the task (interruptible), or, while resuming, in a
  // plain poll() bounded by a deadline.
  class Waits : public Waiter {
   public:
    explicit Waits(TaskContext &ctx) : ctx_(ctx) {}
    void wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) override;
    std::optional<std::chrono::steady_clock::time_point> deadline;  // set: bounded, uninterruptible

   private:
    TaskContext &ctx_;
  };

  struct Proxy {
    ConnParams params;
    std::unique_ptr<Connection> conn;
  };

  Result run(Proxy &proxy, std::string_view command);
  void pause_one(Proxy &proxy);
  void wait_servers_closed(Proxy &proxy);
  std::optional<Error> resume_first(size_t count);  // RESUME on proxies [0, count); first error

  TaskContext &ctx_;
  Waits waits_;  // before proxies_: the connections point at it
  std::vector<Proxy> proxies_;
};

}  // namespace pgdog_reshard
