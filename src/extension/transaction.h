// Catalog work from a background worker: each piece in its own short transaction, so progress is
// visible to the status views at once and a worker never holds a transaction open while it copies.
#pragma once

#include "extension/boundary.h"
#include "extension/pg_server.h"

namespace pgdog_reshard {

template <typename Fn>
auto in_transaction(Fn &&fn) -> decltype(fn()) {
  pg_call([] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
  });
  try {
    if constexpr (std::is_void_v<decltype(fn())>) {
      fn();
      pg_call([] {
        PopActiveSnapshot();
        CommitTransactionCommand();
      });
    } else {
      auto result = fn();
      pg_call([] {
        PopActiveSnapshot();
        CommitTransactionCommand();
      });
      return result;
    }
  } catch (...) {
    pg_call([] { AbortCurrentTransaction(); });
    throw;
  }
}

}  // namespace pgdog_reshard
