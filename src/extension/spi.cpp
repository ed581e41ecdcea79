#include "extension/spi.h"

#include "extension/boundary.h"
#include "extension/pg_server.h"

namespace pgdog_reshard {

SpiSession::SpiSession() {
  int rc = pg_call([] { return SPI_connect(); });
  if (rc != SPI_OK_CONNECT) throw Error(sqlstate::kInternalError, "SPI_connect failed");
}

SpiSession::~SpiSession() { SPI_finish(); }

int SpiSession::run(const char *sql, const SpiParams &params, bool read_only) {
  const int n = static_cast<int>(params.size());
  Oid *types = pg_call([n] { return static_cast<Oid *>(palloc0(sizeof(Oid) * (n + 1))); });
  Datum *values = pg_call([n] { return static_cast<Datum *>(palloc0(sizeof(Datum) * (n + 1))); });
  char *nulls = pg_call([n] { return static_cast<char *>(palloc0(n + 1)); });
  for (int i = 0; i < n; i++) {
    types[i] = TEXTOID;
    nulls[i] = params[i] ? ' ' : 'n';
    if (params[i]) {
      const std::string &v = *params[i];
      values[i] = pg_call([&v] {
        return PointerGetDatum(cstring_to_text_with_len(v.data(), static_cast<int>(v.size())));
      });
    }
  }
  int rc = pg_call([&] { return SPI_execute_with_args(sql, n, types, values, nulls, read_only, 0); });
  if (rc < 0) throw Error(sqlstate::kInternalError, std::string("SPI failed (") + SPI_result_code_string(rc) + "): " + sql);
  return rc;
}

std::vector<SpiRow> SpiSession::query(const char *sql, const SpiParams &params, bool read_only) {
  run(sql, params, read_only);
  std::vector<SpiRow> rows;
  if (SPI_tuptable == nullptr) return rows;
  TupleDesc desc = SPI_tuptable->tupdesc;
  for (uint64 r = 0; r < SPI_processed; r++) {
    HeapTuple tuple = SPI_tuptable->vals[r];
    SpiRow row;
    for (int c = 1; c <= desc->natts; c++) {
      char *text = pg_call([&] { return SPI_getvalue(tuple, desc, c); });
      row.push_back(text ? std::optional<std::string>(text) : std::nullopt);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

uint64_t SpiSession::exec(const char *sql, const SpiParams &params) {
  run(sql, params, false);
  return SPI_processed;
}

}  // namespace pgdog_reshard
