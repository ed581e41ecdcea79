#include "engine/table_plan.h"

#include "core/sql.h"

namespace pgdog_reshard {

std::string TablePlan::qualified() const { return quote_qualified(schema, name); }

}  // namespace pgdog_reshard
