// Just enough JSON writing for status views and NOTIFY payloads.
#pragma once

#include <string>
#include <string_view>

namespace pgdog_reshard {

// A JSON string literal, quotes included, with every control character escaped.
std::string json_string(std::string_view s);

}  // namespace pgdog_reshard
