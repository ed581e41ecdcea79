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

void guc_init();

}  // namespace pgdog_reshard
