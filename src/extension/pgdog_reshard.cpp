// Module entry: _PG_init only wires up each area (settings, shared memory, the launcher).
#include "extension/guc.h"
#include "extension/launcher.h"
#include "extension/pg_server.h"

extern "C" {
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

namespace {

shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

void shmem_request() {
  if (prev_shmem_request_hook) prev_shmem_request_hook();
  pgdog_reshard::launcher_shmem_request();
}

void shmem_startup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  pgdog_reshard::launcher_shmem_startup();
}

}  // namespace

void _PG_init(void) {
  // Background workers and shared memory exist only for libraries loaded at server start.
  if (!process_shared_preload_libraries_in_progress) {
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("pgdog_reshard must be loaded via shared_preload_libraries"),
                    errdetail("Its background workers and shared memory can only be set up at server start."),
                    errhint("Add pgdog_reshard to shared_preload_libraries in postgresql.conf "
                            "(shared_preload_libraries = 'pgdog_reshard') and restart the server.")));
  }
  pgdog_reshard::guc_init();
  pgdog_reshard::launcher_register();
  prev_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = shmem_request;
  prev_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = shmem_startup;
}
