#include "extension/guc.h"

#include "extension/pg_server.h"

namespace pgdog_reshard {

char *guc_config_file = nullptr;
char *guc_users_file = nullptr;
char *guc_database_name = nullptr;
int guc_parallel_copies = 2;
int guc_replica_max_lag = 64 * 1024 * 1024;
bool guc_schema_sync = true;
int guc_apply_batch_changes = 2000;
int guc_apply_batch_ms = 100;
int guc_cutover_lag_threshold = 1024 * 1024;
int guc_cutover_timeout_ms = 10000;
bool guc_cutover_wait_for_ack = false;
bool guc_auto_cutover = true;
bool guc_verify_before_cutover = false;
char *guc_proxy_admin = nullptr;
bool guc_cutover_save_config = false;
char *guc_cutover_command = nullptr;

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
  DefineCustomIntVariable(
      "pgdog_reshard.replica_max_lag", "WAL a copy replica may be behind its primary and still serve copies.",
      "Checked when a copy starts; a replica further behind is left out (see reshard_copy_replicas).",
      &guc_replica_max_lag, 64 * 1024 * 1024, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_BYTE, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "pgdog_reshard.schema_sync", "Whether reshard() and reshard_copy_data() create the schema on the destination.",
      "Off: the destination tables must exist already, empty, with their indexes and constraints (created by "
      "you, say for a source whose pg_dump version is not installed); the task neither dumps nor creates any.",
      &guc_schema_sync, true, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "pgdog_reshard.apply_batch_changes", "Changes a stream applies in one destination transaction, at most.",
      "Many source transactions go into one, committed at a source commit boundary. Larger batches commit less "
      "often; a row updated many times within one batch costs more each time (its versions are all visible to "
      "the open transaction).",
      &guc_apply_batch_changes, 2000, 1, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "pgdog_reshard.apply_batch_time", "Age at which a stream commits its open destination transaction.",
      "Bounds how long an applied change waits for its commit when the source is quiet.", &guc_apply_batch_ms, 100,
      1, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "pgdog_reshard.cutover_lag_threshold", "Replication lag under which a cutover pauses the proxy.",
      "The rest is drained while writes are paused, so this bounds the pause.", &guc_cutover_lag_threshold,
      1024 * 1024, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_BYTE, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "pgdog_reshard.cutover_timeout", "Longest time from the pause to the switch before a cutover aborts.",
      "An aborted cutover resumes traffic on the source cluster and keeps replicating.",
      &guc_cutover_timeout_ms, 10000, 100, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "pgdog_reshard.cutover_wait_for_ack", "Whether a cutover waits for reshard_cutover_ack() after pause and switch.",
      "For a passive proxy that listens to NOTIFY pgdog_reshard.", &guc_cutover_wait_for_ack, false, PGC_SIGHUP, 0,
      nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "pgdog_reshard.auto_cutover", "Whether reshard() cuts over by itself once it streams.",
      "Off: its task waits, replicating, for reshard_cutover() (from a maintenance window's pg_cron job, say).",
      &guc_auto_cutover, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "pgdog_reshard.verify_before_cutover", "Whether a cutover first verifies the destination against the source.",
      "Run with the lag under the threshold, before the pause; a difference aborts the cutover (see reshard_verify_results).",
      &guc_verify_before_cutover, false, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  // Superuser-only: the conninfos may hold passwords.
  DefineCustomStringVariable(
      "pgdog_reshard.proxy_admin", "Admin databases of the proxies to PAUSE, RELOAD and RESUME at cutover.",
      "libpq conninfos separated by ';', e.g. 'host=10.0.0.5 port=6432 dbname=pgbouncer user=admin'.",
      &guc_proxy_admin, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "pgdog_reshard.cutover_save_config", "Whether a cutover writes the swapped pgdog.toml to pgdog_reshard.config_file.",
      "Written atomically; the previous file is kept with the suffix .pgdog_reshard.bak.", &guc_cutover_save_config,
      false, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  // Like archive_command: settable only in postgresql.conf or by ALTER SYSTEM.
  DefineCustomStringVariable(
      "pgdog_reshard.cutover_command", "Shell command run at the cutover's switch point; non-zero exit aborts.",
      "%t is replaced by the task id, %s by the source cluster, %d by the destination cluster, %% by %.",
      &guc_cutover_command, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  MarkGUCPrefixReserved("pgdog_reshard");
}

}  // namespace pgdog_reshard
