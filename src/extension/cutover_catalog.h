// Cutovers and the publications tasks create, in the control node's catalog (pgdog_reshard.cutovers,
// pgdog_reshard.publications), via SPI. Callers provide the transaction.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pgdog_reshard {

// A cutover request for a task; throws 55006 if the task has one in progress already.
// requested_by: the caller's role if empty (reshard() records the task's creator for its own).
int64_t cutover_insert(int64_t task, const std::string &requested_by = "");
// The task's aborted cutovers: how many, the last one's reason, and how long ago it ended.
struct CutoverHistory {
  int aborted = 0;
  std::string last_error;
  double seconds_since_last = 0;
};
CutoverHistory cutover_history(int64_t task);
// The task's cutover in progress (not done nor aborted), if any: its id and state.
struct CutoverRow {
  int64_t id = 0;
  std::string state;
  int64_t reverse_task = 0;  // once switched
};
std::optional<CutoverRow> cutover_active(int64_t task);

// Moves a cutover to `state`, stamping `stamp` (one of lag_reached_at, paused_at, drained_at,
// switched_at, resumed_at) with now() if given; resumed_at also sets pause_ms.
void cutover_step(int64_t id, const std::string &state, const char *stamp = nullptr);
void cutover_set_drain(int64_t id, const std::string &drain_lsns_json);
void cutover_set_reverse_task(int64_t id, int64_t reverse_task);
// Ends a cutover: done, or aborted with the reason.
void cutover_finish(int64_t id, const std::string &state, const std::optional<std::string> &error = std::nullopt);
double cutover_pause_ms(int64_t id);

// reshard_cutover_ack(): records `ack` (paused, switched) on the task's cutover in progress; false if
// there is none.
bool cutover_ack(int64_t task, const std::string &ack);
bool cutover_acked(int64_t id, const std::string &ack);

// Publications a task created (on the shards of its source cluster), dropped with its slots.
struct PublicationRow {
  int source_shard = 0;
  std::string name;
  bool dropped = false;
};
void publication_insert(int64_t task, int shard, const std::string &host, int port, const std::string &dbname,
                        const std::string &name);
std::vector<PublicationRow> publications_of(int64_t task);
void publication_mark_dropped(int64_t task, int shard, const std::string &name);

// NOTIFY pgdog_reshard, delivered when the caller's transaction commits.
void notify_proxy(const std::string &payload_json);

}  // namespace pgdog_reshard
