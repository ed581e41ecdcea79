// reshard_verify's task: a background worker that verifies and records the results, while the
// calling session waits for it. The worker makes the task row (so its progress is visible to other
// sessions at once, which the caller's own uncommitted transaction could not do) and hands the
// caller the task id, or its error, through a dynamic shared memory segment.
#pragma once

#include <cstdint>
#include <string>

namespace pgdog_reshard {

// Starts the worker and waits until it ends. Returns the task id, whose results are then in
// pgdog_reshard.verify_results; throws the worker's error with its SQLSTATE. A cancel of the
// caller stops the worker (the task ends 'cancelled').
int64_t verify_in_worker(const std::string &source, const std::string &destination, const std::string &publication);

}  // namespace pgdog_reshard
