// SPI from C++: a connection scope and text-in/text-out statements, every server call behind pg_call.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace pgdog_reshard {

using SpiRow = std::vector<std::optional<std::string>>;
using SpiParams = std::vector<std::optional<std::string>>;

class SpiSession {
 public:
  SpiSession();   // SPI_connect
  ~SpiSession();  // SPI_finish
  SpiSession(const SpiSession &) = delete;
  SpiSession &operator=(const SpiSession &) = delete;

  // Runs `sql` with $1..$n bound as text (cast them in the SQL); returns every row as text.
  std::vector<SpiRow> query(const char *sql, const SpiParams &params = {}, bool read_only = true);
  // Runs a statement for its effect; returns the number of rows it processed.
  uint64_t exec(const char *sql, const SpiParams &params = {});

 private:
  int run(const char *sql, const SpiParams &params, bool read_only);
};

}  // namespace pgdog_reshard
