// pgdog_reshard.cutover_command: the user's shell command that points the proxies at the
// destination cluster (rewrites pgdog.toml or pgbouncer.ini, say) while they are paused.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/task_context.h"

namespace pgdog_reshard {

// Expands the placeholders: %t the task id, %s the source cluster, %d the destination cluster,
// %% a literal %; any other %x (and a trailing %) is kept as is. The cluster names are shell-quoted
// (single quotes, ' written as '\''), since the command runs through /bin/sh; the task id is a
// number and goes in bare.
std::string expand_cutover_command(std::string_view command, int64_t task, std::string_view source,
                                   std::string_view destination);

// Runs `/bin/sh -c expanded` (fork + execv; stdin /dev/null; stdout and stderr captured together,
// the last 4 kB kept) in its own process group, waiting through ctx: the child is polled with
// waitpid(pid, WNOHANG) every 10 ms and ctx.check_interrupts() is called; an interrupt kills the
// whole process group (SIGKILL), reaps the child and rethrows. Returns when the shell exits 0 (a
// background process it left behind is not waited for). Otherwise throws Error 38000
// "cutover_command failed with exit code N" (or "... was terminated by signal N"), detail = the
// last lines of its output, hint = the cutover was aborted.
void run_cutover_command(const std::string &expanded, TaskContext &ctx);

}  // namespace pgdog_reshard
