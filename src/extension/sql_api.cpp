// The SQL-callable functions. Each is a thin extern "C" shell: arguments are read in C (no C++ object
// alive yet), then the C++ body runs inside cpp_entry (see boundary.h).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/config.h"
#include "core/sharding.h"
#include "extension/boundary.h"
#include "extension/catalog.h"
#include "extension/guc.h"
#include "extension/pg_server.h"

using namespace pgdog_reshard;

namespace {

std::string read_text_file(const char *path, const char *setting) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    throw Error(err == ENOENT ? sqlstate::kUndefinedFile : sqlstate::kSystemError,
                std::string("could not read file \"") + path + "\" named by " + setting + ": " + strerror(err),
                {}, std::string("Set ") + setting + " to the path of the file (relative paths start at the data directory).");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void log_loaded(const Config &config, const std::string &origin) {
  std::string clusters;
  for (const Database &db : config.databases) {
    if (clusters.find("\"" + db.name + "\"") == std::string::npos) {
      clusters += (clusters.empty() ? "\"" : ", \"") + db.name + "\"";
    }
  }
  // Without the statement: reshard_load_config's arguments hold the passwords.
  pg_call([&] {
    ereport(LOG, (errmsg_internal("pgdog_reshard: configuration loaded from %s: clusters %s, %zu sharding rules",
                                  origin.c_str(), clusters.c_str(), config.sharded_tables.size()),
                  errhidestmt(true)));
  });
}

// Validates before storing: an invalid configuration never replaces a valid one.
void load_config(const StoredConfig &stored, const std::string &origin) {
  Config config = stored.parse();
  catalog_store_config(stored, origin);
  log_loaded(config, origin);
}

Datum text_datum(const std::string &s) {
  return pg_call([&s] { return PointerGetDatum(cstring_to_text_with_len(s.data(), static_cast<int>(s.size()))); });
}

void put_row(ReturnSetInfo *rsinfo, Datum *values, bool *nulls) {
  pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
}

}  // namespace

extern "C" {

PG_FUNCTION_INFO_V1(reshard_load_config);
Datum reshard_load_config(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) {
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("pgdog_toml must not be null"),
                    errhint("Pass the text of pgdog.toml."), errhidestmt(true)));
  }
  char *pgdog_toml = text_to_cstring(PG_GETARG_TEXT_PP(0));
  char *users_toml = PG_ARGISNULL(1) ? nullptr : text_to_cstring(PG_GETARG_TEXT_PP(1));
  return cpp_entry([&]() -> Datum {
    StoredConfig stored{pgdog_toml, std::nullopt, "pgdog.toml", "users.toml"};
    if (users_toml) stored.users_toml = users_toml;
    load_config(stored, "reshard_load_config()");
    PG_RETURN_VOID();
  }, true);  // an error must not log the statement: its arguments hold the passwords
}

PG_FUNCTION_INFO_V1(reshard_reload_config);
Datum reshard_reload_config(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum {
    if (guc_config_file == nullptr || guc_config_file[0] == '\0') {
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "pgdog_reshard.config_file is not set", {},
                  "Set pgdog_reshard.config_file (and pgdog_reshard.users_file) in postgresql.conf and "
                  "reload, or pass the texts to reshard_load_config().");
    }
    StoredConfig stored{read_text_file(guc_config_file, "pgdog_reshard.config_file"), std::nullopt,
                        guc_config_file, "users.toml"};
    if (guc_users_file != nullptr && guc_users_file[0] != '\0') {
      stored.users_toml = read_text_file(guc_users_file, "pgdog_reshard.users_file");
      stored.users_path = guc_users_file;
    }
    load_config(stored, std::string("file ") + guc_config_file);
    PG_RETURN_VOID();
  });
}

// The loaded [[databases]], one row per host; credentials are reduced to the user name.
PG_FUNCTION_INFO_V1(reshard_config_databases);
Datum reshard_config_databases(PG_FUNCTION_ARGS) {
  InitMaterializedSRF(fcinfo, 0);
  auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  return cpp_entry([&]() -> Datum {
    std::optional<Config> config = catalog_parsed_config();
    if (!config) return Datum(0);  // nothing loaded yet: an empty view
    for (const Database &db : config->databases) {
      Datum values[8];
      bool nulls[8] = {false, false, false, false, false, false, false, db.user.empty()};
      values[0] = text_datum(db.name);
      values[1] = Int32GetDatum(db.shard);
      values[2] = text_datum(db.host);
      values[3] = Int32GetDatum(db.port);
      values[4] = text_datum(db.database_name);
      values[5] = text_datum(role_name(db.role));
      values[6] = BoolGetDatum(db.resharding_only);
      values[7] = db.user.empty() ? Datum(0) : text_datum(db.user);
      put_row(rsinfo, values, nulls);
    }
    return Datum(0);
  });
}

PG_FUNCTION_INFO_V1(reshard_config_sharded_tables);
Datum reshard_config_sharded_tables(PG_FUNCTION_ARGS) {
  InitMaterializedSRF(fcinfo, 0);
  auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
  return cpp_entry([&]() -> Datum {
    std::optional<Config> config = catalog_parsed_config();
    if (!config) return Datum(0);
    for (const ShardedTable &rule : config->sharded_tables) {
      Datum values[7];
      bool nulls[7] = {false, rule.schema.empty(), rule.table.empty(), false, false, false, false};
      values[0] = text_datum(rule.database);
      values[1] = rule.schema.empty() ? Datum(0) : text_datum(rule.schema);
      values[2] = rule.table.empty() ? Datum(0) : text_datum(rule.table);
      values[3] = text_datum(rule.column);
      values[4] = text_datum(data_type_name(rule.data_type));
      values[5] = text_datum(rule.is_hash() ? "hash" : "mapping");
      values[6] = text_datum(mappings_json(rule.data_type, rule.mappings));
      put_row(rsinfo, values, nulls);
    }
    return Datum(0);
  });
}

PG_FUNCTION_INFO_V1(reshard_hash_shard_bigint);
Datum reshard_hash_shard_bigint(PG_FUNCTION_ARGS) {
  int64 value = PG_GETARG_INT64(0);
  int32 shards = PG_GETARG_INT32(1);
  return cpp_entry([&]() -> Datum { return Int32GetDatum(shard_of_hash(hash_bigint(value), shards)); });
}

PG_FUNCTION_INFO_V1(reshard_hash_shard_text);
Datum reshard_hash_shard_text(PG_FUNCTION_ARGS) {
  text *value = PG_GETARG_TEXT_PP(0);
  int32 shards = PG_GETARG_INT32(1);
  const char *data = VARDATA_ANY(value);
  size_t len = VARSIZE_ANY_EXHDR(value);
  return cpp_entry([&]() -> Datum { return Int32GetDatum(shard_of_hash(hash_bytes(data, len), shards)); });
}

PG_FUNCTION_INFO_V1(reshard_hash_shard_uuid);
Datum reshard_hash_shard_uuid(PG_FUNCTION_ARGS) {
  pg_uuid_t *value = PG_GETARG_UUID_P(0);
  int32 shards = PG_GETARG_INT32(1);
  return cpp_entry([&]() -> Datum {
    return Int32GetDatum(shard_of_hash(hash_bytes(value->data, UUID_LEN), shards));
  });
}

}  // extern "C"
