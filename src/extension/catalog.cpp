#include "extension/catalog.h"

#include "core/error.h"
#include "extension/boundary.h"
#include "extension/spi.h"

namespace pgdog_reshard {

Config StoredConfig::parse() const {
  std::optional<std::string_view> users;
  if (users_toml) users = *users_toml;
  return parse_config(pgdog_toml, users, pgdog_path, users_path);
}

std::string calling_role() {
  return pg_call([] { return GetUserNameFromId(GetOuterUserId(), false); });
}

void catalog_store_config(const StoredConfig &config, const std::string &origin) {
  std::string caller = calling_role();
  SpiSession spi;
  spi.exec(
      "INSERT INTO pgdog_reshard.config AS c (id, pgdog_toml, users_toml, pgdog_path, users_path, origin, loaded_by)"
      " VALUES (1, $1, $2, $3, $4, $5, $6)"
      " ON CONFLICT (id) DO UPDATE SET pgdog_toml = excluded.pgdog_toml, users_toml = excluded.users_toml,"
      " pgdog_path = excluded.pgdog_path, users_path = excluded.users_path, origin = excluded.origin,"
      " loaded_at = now(), loaded_by = excluded.loaded_by",
      {config.pgdog_toml, config.users_toml, config.pgdog_path, config.users_path, origin, caller});
}

std::optional<StoredConfig> catalog_load_config() {
  SpiSession spi;
  auto rows = spi.query("SELECT pgdog_toml, users_toml, pgdog_path, users_path FROM pgdog_reshard.config WHERE id = 1");
  if (rows.empty()) return std::nullopt;
  const SpiRow &row = rows.front();
  return StoredConfig{row[0].value_or(""), row[1], row[2].value_or("pgdog.toml"), row[3].value_or("users.toml")};
}

std::optional<Config> catalog_parsed_config() {
  std::optional<StoredConfig> stored = catalog_load_config();
  if (!stored) return std::nullopt;
  return stored->parse();
}

Config catalog_current_config() {
  std::optional<Config> config = catalog_parsed_config();
  if (!config) {
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "no pgdog_reshard configuration is loaded",
                {},
                "Load PgDog's configuration with reshard_load_config(pgdog_toml, users_toml), or set "
                "pgdog_reshard.config_file (and users_file) and call reshard_reload_config().");
  }
  return std::move(*config);
}

}  // namespace pgdog_reshard
