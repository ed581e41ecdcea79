#include "engine/apply_origin.h"

#include <chrono>
#include <exception>

#include "core/error.h"
#include "core/sql.h"

namespace pgdog_reshard {

const char *const kOriginPrivilegeHint =
    "Connect to the destination as a superuser, or GRANT EXECUTE ON FUNCTION "
    "pg_replication_origin_oid(text), pg_replication_origin_create(text), "
    "pg_replication_origin_session_setup(text), pg_replication_origin_session_progress(boolean), "
    "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) and "
    "pg_replication_origin_drop(text) to the user.";

namespace {

constexpr auto kInUseWait = std::chrono::seconds(10);
constexpr int kInUsePollMs = 200;

// Runs `body` until it does not fail with 55006 (the origin is bound to another session), for up
// to kInUseWait; then throws 55006 naming `what`. A privilege error gets the hint that fixes it.
template <typename Body>
void while_in_use(Body &&body, const std::string &what, TaskContext &ctx) {
  auto deadline = std::chrono::steady_clock::now() + kInUseWait;
  for (;;) {
    try {
      body();
      return;
    } catch (const Error &e) {
      if (e.sqlstate() == sqlstate::kInsufficientPrivilege) {
        throw Error(e.sqlstate(), e.what(), e.detail(), kOriginPrivilegeHint);
      }
      if (e.sqlstate() != sqlstate::kObjectInUse) throw;
      if (std::chrono::steady_clock::now() > deadline) {
        throw Error(sqlstate::kObjectInUse, what + ": another session still holds it after 10 s",
                    e.what(),
                    "Another stream of the same task and source shard is still applying changes "
                    "(or its destination session has not ended): stop it first.");
      }
    }
    ctx.wait_socket(-1, false, false, kInUsePollMs);  // a killed worker's session is ending
  }
}

void drop_on(const ConnParams &destination, const std::string &origin, TaskContext &ctx) {
  Connection conn(destination, ctx);
  while_in_use(
      [&] {
        conn.exec_params(
            "SELECT pg_catalog.pg_replication_origin_drop($1) "
            "WHERE pg_catalog.pg_replication_origin_oid($1) IS NOT NULL",
            {origin});
      },
      "cannot drop replication origin " + quote_ident(origin) + " on " + destination.describe(), ctx);
}

}  // namespace

std::string stream_origin(int64_t task, int source_shard) {
  return "pgdog_reshard_" + std::to_string(task) + "_" + std::to_string(source_shard);
}

std::string shard_origin(const std::string &origin, size_t shard) {
  return origin + "_to_" + std::to_string(shard);
}

std::optional<Lsn> setup_origin_session(Connection &conn, const std::string &origin, TaskContext &ctx) {
  while_in_use(
      [&] {
        // Only one stream uses an origin: no concurrent creation to guard against.
        conn.exec_params(
            "SELECT pg_catalog.pg_replication_origin_create($1) "
            "WHERE pg_catalog.pg_replication_origin_oid($1) IS NULL",
            {origin});
        conn.exec_params("SELECT pg_catalog.pg_replication_origin_session_setup($1)", {origin});
      },
      "cannot use replication origin " + quote_ident(origin), ctx);
  Result progress = conn.exec("SELECT pg_catalog.pg_replication_origin_session_progress(false)");
  if (progress.is_null(0, 0)) return std::nullopt;
  return Lsn::parse_or_throw(progress.value(0, 0));
}

// pg_current_xact_id() gives the transaction an ID if its statements did not: a transaction that
// wrote nothing commits without a commit record, and the origin's progress travels in that record.
// The commit time is added in seconds and microseconds: interval * number goes through float8,
// which cannot hold today's microseconds since 2000 exactly.
const char *const kOriginProgressSql =
    "SELECT pg_catalog.pg_current_xact_id(), pg_catalog.pg_replication_origin_xact_setup("
    "$1::pg_catalog.pg_lsn, timestamptz '2000-01-01 00:00:00+00' + "
    "($2::bigint / 1000000) * interval '1 second' + ($2::bigint % 1000000) * interval '1 microsecond')";

void drop_apply_origin(const std::vector<ConnParams> &destinations, const std::string &origin,
                       TaskContext &ctx) {
  std::exception_ptr first;
  for (size_t i = 0; i < destinations.size(); i++) {
    try {
      drop_on(destinations[i], shard_origin(origin, i), ctx);
    } catch (const Error &e) {
      if (e.sqlstate() == sqlstate::kQueryCanceled || e.sqlstate() == sqlstate::kAdminShutdown) throw;
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace pgdog_reshard
