// The pgdog_reshard.* settings.
#pragma once

namespace pgdog_reshard {

// Where reshard_reload_config() reads PgDog's files from (superuser-only to set).
extern char *guc_config_file;
extern char *guc_users_file;
// The database on the control node that holds the extension's catalog; the launcher connects to it.
extern char *guc_database_name;
// Table copies at once per source shard.
extern int guc_parallel_copies;
// How far behind its primary (bytes of WAL) a copy replica may be and still serve copies.
extern int guc_replica_max_lag;
// Whether copy tasks create the destination schema (recorded in the task when it is created).
extern bool guc_schema_sync;
// The stream's destination transactions: committed after this many changes or this age (ms).
extern int guc_apply_batch_changes;
extern int guc_apply_batch_ms;

// Cutover (see reshard_cutover): lag to wait for before pausing, time allowed from the pause to
// the switch, whether a passive proxy's acknowledgements are awaited, the proxies' admin databases
// (conninfos separated by ';'), whether the swapped pgdog.toml is written to config_file, and the
// shell command run at the switch point (%t task, %s source, %d destination).
extern int guc_cutover_lag_threshold;
extern int guc_cutover_timeout_ms;
extern bool guc_cutover_wait_for_ack;
// Whether reshard() requests its cutover itself (off: it waits, replicating, for reshard_cutover()).
extern bool guc_auto_cutover;
// Whether a cutover runs reshard_verify's checks first (caught up, before the pause) and aborts on a difference.
extern bool guc_verify_before_cutover;
extern char *guc_proxy_admin;
extern bool guc_cutover_save_config;
extern char *guc_cutover_command;

void guc_init();

}  // namespace pgdog_reshard
