// The cutover of a replicating task, run by its task worker while the stream workers keep applying:
// wait for the lag to fall under pgdog_reshard.cutover_lag_threshold, pause the proxy, drain every
// stream to the source's position, set the sequences, prepare the reverse replication (publication
// and slots on the new cluster), run the hook, swap the clusters in the stored configuration,
// reload the proxy, start the reverse task, resume. Until the swap is committed, any failure or
// pgdog_reshard.cutover_timeout aborts: traffic resumes on the source cluster and the task keeps
// replicating. After it, nothing is undone.
#pragma once

#include <cstdint>

#include "core/config.h"
#include "extension/backend_context.h"
#include "extension/cutover_catalog.h"
#include "extension/task_catalog.h"

namespace pgdog_reshard {

// What the task worker lends the cutover: its stream workers and its schema-statement recording.
class CutoverHooks {
 public:
  virtual ~CutoverHooks() = default;
  virtual void apply_sequences() = 0;     // schema sync 'cutover' on the destination
  virtual void stop_streams() = 0;        // the forward stream workers exit (restarted if it aborts)
  virtual void drop_source_slots() = 0;   // the forward slots (source cluster) and stream origins (new cluster)
  virtual void tend_streams() = 0;        // restarts stream workers that exited (while waiting for the lag)
};

enum class CutoverOutcome { Done, Aborted };

// Runs `cutover` (requested by reshard_cutover) of `task`. Throws only when the worker must stop (a
// shutdown or reshard_stop); the proxy has been resumed by then. A cutover found past its switch
// (the worker was interrupted after committing it) only finishes: the resume and the clean-up.
CutoverOutcome run_cutover(const TaskRow &task, const Config &config, const CutoverRow &cutover, CutoverHooks &hooks,
                           BackendTaskContext &ctx);

}  // namespace pgdog_reshard
