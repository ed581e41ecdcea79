#include "extension/guc.h"

#include "extension/pg_server.h"

namespace pgdog_reshard {

char *guc_config_file = nullptr;
char *guc_users_file = nullptr;
char *guc_database_name = nullptr;
int guc_parallel_copies = 2;

void guc_init() {
  DefineCustomStringVariable(
      "pgdog_reshard.config_file", "Path of PgDog's pgdog.toml, read by reshard_reload_config().",
      "A relative path is relative to the data directory.", &guc_config_file, "", PGC_SUSET, 0,
      nullptr, nullptr, nullptr);
  DefineCustomStringVariable(
      "pgdog_reshard.users_file", "Path of PgDog's users.toml, read by reshard_reload_config().",
      "Empty: credentials come from pgdog.toml alone.", &guc_users_file, "", PGC_SUSET, 0, nullptr,
      nullptr, nullptr);
  DefineCustomStringVariable(
      "pgdog_reshard.database_name", "Database holding the pgdog_reshard extension on this node.",
      "The launcher background worker connects to it to find work.", &guc_database_name, "postgres",
      PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "pgdog_reshard.parallel_copies", "Table copies at once per source shard.",
      "Each uses a background worker, a temporary replication slot and a WAL sender on the source.",
      &guc_parallel_copies, 2, 1, 64, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  MarkGUCPrefixReserved("pgdog_reshard");
}

}  // namespace pgdog_reshard
