// Schema sync: the source's table definitions on every destination shard.
//
// The schema comes from the source with pg_dump --schema-only (the pg_dump of the source server's
// major version), split into statements. `pre` (before the copy): schemas, extensions, types,
// domains, sequences, functions, tables with their NOT NULL and inline CHECK constraints,
// partitions. `post` (after the copy): primary keys, indexes, other constraints, foreign keys,
// replica identity, triggers, rules, policies. Keys and indexes come after the data, as pg_restore
// does it: building a B-tree once from the rows is cheaper than growing it row by row, much more so
// for keys that do not arrive in order; the stream, which needs the keys for its upserts, starts
// only after `post`. Statements run on every destination shard, shards in parallel; re-running a
// phase is harmless (objects that already exist are skipped, not failed).
#pragma once

#include <string>
#include <vector>

#include "core/pg.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

// Cutover: sequences only (see sequences.h), run while traffic is paused.
enum class SchemaPhase { Pre, Post, Cutover };
const char *schema_phase_name(SchemaPhase phase);

struct SchemaStatement {
  std::string sql;      // one statement, terminated by ';'
  std::string kind;     // pg_dump's TOC type: "TABLE", "INDEX", "FK CONSTRAINT", "SEQUENCE", ...
  std::string schema;   // the object's schema ("" for none), for the view
  std::string name;     // the object's name, for the view
};

struct SchemaDump {
  std::vector<SchemaStatement> pre;
  std::vector<SchemaStatement> post;
};

// Runs pg_dump on the source (password through a private passfile, never the command line or the
// environment of other processes), interruptibly through `ctx`, and splits its output.
// pg_dump_bindir: where pg_dump lives; "" = /usr/lib/postgresql/<source major>/bin.
// Throws Error 58P01 naming the missing pg_dump (with a hint) when that version is not installed,
// the connection's Error when the source cannot be reached (the version probe runs first), and
// Error 58000 with pg_dump's stderr when pg_dump fails. pg_dump runs as
// `--schema-only --no-owner --no-privileges --no-tablespaces --no-publications --no-subscriptions
// --no-password --encoding=UTF8` (comments kept) with host, port, user and database as separate
// arguments (no shell). When ctx interrupts the dump, pg_dump gets SIGTERM (it cancels its query on
// the server), SIGKILL after 2 s, and is always reaped.
SchemaDump dump_schema(const ConnParams &source, TaskContext &ctx, const std::string &pg_dump_bindir = "");
// The pg_dump for a source of this server_version_num, in bindir ("": the Debian/Ubuntu layout
// /usr/lib/postgresql/<major>/bin). Throws Error 58P01 (naming the path, with a hint) if absent.
std::string pg_dump_for(int server_version, const std::string &bindir = "");

// Splits a pg_dump plain-text script into statements and sorts them into the two phases (pure,
// unit-tested; exposed for tests). kind/schema/name come from pg_dump's TOC comments. Everything
// before the first post-data object (INDEX, CONSTRAINT, FK CONSTRAINT, TRIGGER, RULE, POLICY, ROW
// SECURITY, ...) is pre, everything from it on is post; ALTER TABLE ... REPLICA IDENTITY goes to
// post too (kind "REPLICA IDENTITY"), wherever pg_dump wrote it. Dropped: session settings (SET
// ..., RESET, set_config: the applier sets what it needs itself), psql meta-commands (\restrict),
// comments, and anything about publications or subscriptions.
SchemaDump split_schema_dump(const std::string &script);

// Cancelled: the statement was interrupted (the task was stopped, or another shard failed); it
// may or may not have taken effect, and re-running the phase settles it.
enum class StatementOutcome { Done, AlreadyExists, Failed, Cancelled };

class SchemaSyncObserver {
 public:
  virtual ~SchemaSyncObserver() = default;
  // Called from the thread applying to `shard` (one thread per shard), never from the thread that
  // called apply_schema: implementations must be thread-safe and must not call PostgreSQL server
  // functions (queue the events; write them from the main thread). `error` is the server's message
  // for AlreadyExists and Failed, "" for Done.
  virtual void statement_started(int shard, SchemaPhase phase, size_t index, const SchemaStatement &s) = 0;
  virtual void statement_finished(int shard, SchemaPhase phase, size_t index, StatementOutcome outcome,
                                  const std::string &error) = 0;
};

// Applies one phase's statements, in order, on every destination shard (one connection and thread
// per shard). Stops at the first failure on any shard and throws it (naming shard and statement,
// keeping the server's SQLSTATE); the other shards stop at once (a running statement is cancelled).
// An error meaning "this object already exists" (duplicate table/object/schema/function, a second
// primary key, an identity column or partition already in place) is AlreadyExists, not a failure.
//
// Threads: `ctx` is used only by the calling thread (server functions are not thread-safe): it
// waits on the workers through ctx.wait_socket and calls ctx.check_interrupts each time any shard
// finishes a statement (so a glue can write the observer's queued events there); when either
// throws, the workers are stopped (a shared flag their own poll() waiters check) and joined, and
// ctx's error propagates. Each worker owns its Connection and its waiter.
void apply_schema(SchemaPhase phase, const std::vector<SchemaStatement> &statements,
                  const std::vector<ConnParams> &destinations, SchemaSyncObserver &observer,
                  TaskContext &ctx);

}  // namespace pgdog_reshard
