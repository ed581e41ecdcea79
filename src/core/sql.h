// SQL text building: every identifier or literal that comes from a catalog or a user is quoted here.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgdog_reshard {

// "name", with embedded double quotes doubled. Always quoted: correct for any name, reserved
// words, mixed case, spaces and unicode alike.
std::string quote_ident(std::string_view name);
// "schema"."name"
std::string quote_qualified(std::string_view schema, std::string_view name);
// 'text', with embedded quotes doubled; an E'' literal when it holds backslashes, so the result
// means the same whatever standard_conforming_strings is.
std::string quote_literal(std::string_view text);
// "a", "b", "c"
std::string quote_ident_list(const std::vector<std::string> &names);
// A text[] literal, {"a","b"}, for a query parameter: every element double-quoted, with double
// quotes and backslashes escaped.
std::string text_array(const std::vector<std::string> &items);

}  // namespace pgdog_reshard
