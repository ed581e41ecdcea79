// SQL script splitting: a script (a pg_dump plain dump, a migration file) cut into the statements a
// client sends one at a time, the way psql cuts it.
//
// A ';' ends a statement only outside quoted text and comments: '...' strings ('' escapes),
// E'...' strings (backslash escapes too), "..." identifiers, $$...$$ and $tag$...$tag$ bodies,
// -- line comments and nested /* */ comments. Like psql, it also keeps together what a ';' inside
// parentheses belongs to (CREATE RULE ... DO (INSERT ...; INSERT ...)) and the BEGIN ATOMIC ... END
// body of a CREATE [OR REPLACE] FUNCTION/PROCEDURE. Plain '...' strings follow
// standard_conforming_strings = on, which every pg_dump output sets.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgdog_reshard {

struct ScriptStatement {
  // From the statement's first token through its ';' (comments inside it kept). A script that ends
  // without ';' (or inside an unterminated quote or comment) yields its rest as a last statement,
  // unterminated, for the server to judge.
  std::string sql;
  // The whitespace and comments between the previous statement and this one (pg_dump's TOC
  // comments live here).
  std::string leading_comments;
  // A psql backslash command at the start of a statement (pg_dump writes \restrict, \unrestrict,
  // \connect): one line, not SQL; `sql` holds the line.
  bool meta_command = false;
};

// The statements of `script`, in order. Comments after the last statement are dropped.
std::vector<ScriptStatement> split_sql_script(std::string_view script);

// The first `max_words` tokens of a statement, outside comments, for classifying it: unquoted
// words upper-cased ("ALTER", "TABLE", "ONLY"), quoted identifiers and strings as written
// ("\"Order Items\"", "'x'"), any other character alone (".", "(", ";").
std::vector<std::string> statement_words(std::string_view sql, size_t max_words);

}  // namespace pgdog_reshard
