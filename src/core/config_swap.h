// Cutover in PgDog's configuration: after resharding "prod" into "prod_2x", the two cluster names are
// exchanged, so that applications connecting to "prod" reach the new shards (and a second swap rolls
// back). The swapped files are written atomically, with the previous version kept as a backup, so a
// crash at any point leaves PgDog a whole file to reload.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgdog_reshard {

// pgdog.toml and, if the deployment has one, users.toml, as text.
struct ConfigTexts {
  std::string pgdog_toml;
  std::optional<std::string> users_toml;
};

// Exchanges cluster names `a` and `b` everywhere PgDog binds something to a cluster: [[databases]]
// name, [[sharded_tables]] database, [[sharded_mappings]] database (PgDog's older top-level mapping
// section), [[omnisharded_tables]] database, [[sharded_schemas]] database, and users.toml [[users]]
// database. A renamed [[databases]] entry without database_name gets database_name = its old name
// written out, since PgDog would otherwise default it to the new name: every entry keeps connecting
// to the same PostgreSQL database. [[mirroring]] is left alone: it mirrors the traffic sent to a
// name, and that traffic stays with the name.
//
// Everything else (other sections, keys, values, the order of array entries) is kept; comments and
// formatting are not: toml++ writes the documents afresh (keys of a table in alphabetical order,
// strings in single quotes where it can, floats with every digit needed to read back the same value).
//
// The input must be a valid configuration: parse_config's Error(F0000) (a TOML syntax error names
// the file, line and column) is thrown otherwise. Error(22023) if either name is not a cluster in
// [[databases]] or a == b. The result is checked to parse with parse_config() and to describe the
// same [[databases]] entries with the names exchanged (Error(XX000) otherwise: a bug, never written).
ConfigTexts swap_cluster_names(const ConfigTexts &in, std::string_view a, std::string_view b);

// Writes `content` to `path` atomically: to a temporary file in the same directory, fsync, rename
// over path, fsync the directory. If path existed, its previous content is first kept (written the
// same atomic way) as `path + backup_suffix`, replacing any older backup; the new file and the backup
// keep the old file's permission bits (and its owner and group where the process may set them), as a
// config holding passwords must not become readable by more users. A new file is created 0600.
// Throws Error(58030) naming the path and the system's error text on any failure, leaving `path` as
// it was and no temporary file behind (only a failing fsync of the directory, after the rename, is
// reported with the new content already in place). A symbolic link at `path` is replaced, not followed.
void write_file_atomically(const std::string &path, std::string_view content,
                           const std::string &backup_suffix = ".pgdog_reshard.bak");

}  // namespace pgdog_reshard
