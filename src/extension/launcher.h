// The launcher: a static background worker, started with the server, that will start and supervise
// the task workers. It idles on its latch until woken (launcher_wake) or its poll interval passes.
#pragma once

namespace pgdog_reshard {

// Called from _PG_init (shared_preload_libraries only).
void launcher_register();
void launcher_shmem_request();
void launcher_shmem_startup();
// Wakes the launcher, e.g. when a task was created; a no-op if it is not running.
void launcher_wake();

}  // namespace pgdog_reshard
