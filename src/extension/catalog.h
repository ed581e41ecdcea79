// The control node's catalog (tables in the internal schema `pgdog_reshard`), through SPI.
#pragma once

#include <optional>
#include <string>

#include "core/config.h"

namespace pgdog_reshard {

// The configuration as loaded: the original texts (the single source of truth, re-parsed on use,
// so the views, the workers and a later cutover rewrite of pgdog.toml all see the same thing).
struct StoredConfig {
  std::string pgdog_toml;
  std::optional<std::string> users_toml;
  std::string pgdog_path;  // file name used in messages ("pgdog.toml" or the configured path)
  std::string users_path;

  Config parse() const;  // parse_config of both texts; throws Error(F0000) if invalid
};

// The role that called us: the SET ROLE one, not the owner a SECURITY DEFINER function runs as.
std::string calling_role();

// Replaces the stored configuration (in the caller's transaction: all or nothing).
void catalog_store_config(const StoredConfig &config, const std::string &origin);
// The stored configuration, if any.
std::optional<StoredConfig> catalog_load_config();
// The stored configuration parsed, if any.
std::optional<Config> catalog_parsed_config();
// The stored configuration parsed; throws Error(55000) with a hint when none was loaded.
Config catalog_current_config();

}  // namespace pgdog_reshard
