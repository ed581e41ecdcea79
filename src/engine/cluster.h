// Connection parameters for the hosts of a configured cluster.
#pragma once

#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/pg.h"

namespace pgdog_reshard {

ConnParams connection_params(const Database &db);
// The primaries of a cluster's shards 0..M-1, in shard order.
std::vector<ConnParams> primaries(const Config &config, std::string_view cluster);

}  // namespace pgdog_reshard
