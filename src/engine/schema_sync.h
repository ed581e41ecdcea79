// Schema sync: the source's table definitions on every destination shard.
//
// The schema comes from the source with pg_dump --schema-only (the pg_dump of the source server's
// major version), split into statements. `pre` (before the copy): schemas, extensions, types,
// domains, sequences, functions, tables with their NOT NULL and primary keys, partitions.
// `post` (after the copy): secondary indexes, other constraints, foreign keys, replica identity,
// triggers, rules, policies. Statements run on every destination shard, shards in parallel;
// re-running a phase is harmless (objects that already exist are skipped, not failed).
#pragma once

#include <string>
#include <vector>

#include "core/pg.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

enum class SchemaPhase { Pre, Post };
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
// Throws Error 58P01 naming the missing pg_dump (with a hint) when that version is not installed.
SchemaDump dump_schema(const ConnParams &source, TaskContext &ctx, const std::string &pg_dump_bindir = "");

// Splits a pg_dump plain-text script into statements and sorts them into the two phases (pure,
// unit-tested; exposed for tests). Session settings (SET ..., set_config) are dropped: the applier
// sets what it needs itself.
SchemaDump split_schema_dump(const std::string &script);

enum class StatementOutcome { Done, AlreadyExists, Failed };

class SchemaSyncObserver {
 public:
  virtual ~SchemaSyncObserver() = default;
  // Called from the thread applying to `shard` (one thread per shard): implementations must be
  // thread-safe.
  virtual void statement_started(int shard, SchemaPhase phase, size_t index, const SchemaStatement &s) = 0;
  virtual void statement_finished(int shard, SchemaPhase phase, size_t index, StatementOutcome outcome,
                                  const std::string &error) = 0;
};

// Applies one phase's statements, in order, on every destination shard (one connection and thread
// per shard). Stops at the first failure on any shard and throws it (naming shard and statement);
// the other shards stop at their next statement.
void apply_schema(SchemaPhase phase, const std::vector<SchemaStatement> &statements,
                  const std::vector<ConnParams> &destinations, SchemaSyncObserver &observer,
                  TaskContext &ctx);

}  // namespace pgdog_reshard
