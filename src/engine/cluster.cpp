#include "engine/cluster.h"

namespace pgdog_reshard {

ConnParams connection_params(const Database &db) {
  ConnParams params;
  params.host = db.host;
  params.port = db.port;
  params.dbname = db.database_name;
  params.user = db.user;
  params.password = db.password;
  return params;
}

std::vector<ConnParams> primaries(const Config &config, std::string_view cluster) {
  std::vector<ConnParams> out;
  for (int shard = 0; shard < config.shard_count(cluster); shard++) {
    out.push_back(connection_params(config.primary(cluster, shard)));
  }
  return out;
}

}  // namespace pgdog_reshard
