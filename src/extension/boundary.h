// The C++ / PostgreSQL error boundary.
//
// ereport(ERROR) is a longjmp: it must never skip a live C++ object's destructor, and a C++ exception
// must never unwind through PostgreSQL's C frames. So:
//  - every entry point from PostgreSQL (SQL function, worker main) runs its C++ body in cpp_entry(),
//    which catches everything and raises the ereport only once no C++ object is alive;
//  - C++ code calls PostgreSQL functions that may ereport through pg_call(), which turns the longjmp
//    into a pgdog_reshard::Error carrying the original SQLSTATE, message, detail and hint.
#pragma once

#include <type_traits>
#include <utility>

#include "core/error.h"
#include "extension/pg_server.h"

namespace pgdog_reshard {

// An error caught at the boundary, held in palloc'd C strings (no destructors), ready to raise.
struct CaughtError {
  int sqlerrcode = 0;
  char *message = nullptr;
  char *detail = nullptr;
  char *hint = nullptr;
};

// Fills `out` from the exception being handled; call only inside a catch block. Never throws and
// never ereports (allocations that fail are replaced by fixed strings).
void capture_current_exception(CaughtError &out) noexcept;
// ereport(ERROR) with what was captured. Call with no C++ object alive in the frames it skips.
[[noreturn]] void raise_caught(const CaughtError &error);
// Converts a PostgreSQL ErrorData (then freed) into the C++ exception; called after PG_END_TRY.
[[noreturn]] void throw_error_data(ErrorData *edata);

int sqlstate_to_errcode(const std::string &sqlstate);

// Runs a C++ body for a PostgreSQL entry point. Returns the body's Datum, or raises its exception as
// ereport(ERROR) with the exception's SQLSTATE, detail and hint.
template <typename Body>
Datum cpp_entry(Body &&body) {
  CaughtError caught;
  try {
    return body();
  } catch (...) {
    capture_current_exception(caught);
  }
  raise_caught(caught);
}

// Calls a PostgreSQL function that may ereport(ERROR), from C++ code. `fn` must be a thin call with
// no C++ objects of its own (a longjmp out of it skips them). An ERROR becomes a pgdog_reshard::Error.
template <typename Fn>
auto pg_call(Fn &&fn) -> decltype(fn()) {
  using Result = decltype(fn());
  MemoryContext caller_context = CurrentMemoryContext;
  // Written in PG_CATCH, after the longjmp: volatile keeps it out of a register setjmp restores.
  ErrorData *volatile edata = nullptr;
  if constexpr (std::is_void_v<Result>) {
    PG_TRY();
    { fn(); }
    PG_CATCH();
    {
      MemoryContextSwitchTo(caller_context);
      edata = CopyErrorData();
      FlushErrorState();
    }
    PG_END_TRY();
    if (edata) throw_error_data(edata);
  } else {
    static_assert(std::is_trivially_copyable_v<Result>, "pg_call returns plain C values only");
    Result result{};
    Result *volatile out = &result;  // writes go to memory, which the longjmp does not roll back
    PG_TRY();
    { *out = fn(); }
    PG_CATCH();
    {
      MemoryContextSwitchTo(caller_context);
      edata = CopyErrorData();
      FlushErrorState();
    }
    PG_END_TRY();
    if (edata) throw_error_data(edata);
    return result;
  }
}

}  // namespace pgdog_reshard
