// Verification in the control node's catalog (pgdog_reshard.verify_results and verify tasks), via
// SPI. Callers provide the transaction.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "engine/verify.h"

namespace pgdog_reshard {

// A table's result, replacing an earlier one of the same task (a cutover verifies again on retry).
void verify_result_record(int64_t task, int ordinal, const VerifyResult &result);
void verify_results_clear(int64_t task);

// The task streaming `source` into `destination` now, if one is: its confirmed positions tell a
// verify when a difference may have been applied since.
std::optional<int64_t> replicating_task(const std::string &source, const std::string &destination);

// A verify task belongs to the session that waits for it and is never resumed: one whose worker is
// gone without ending it (a crash, a server restart) ends 'failed'. Returns how many did.
int verify_tasks_fail_orphaned();

}  // namespace pgdog_reshard
