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
  // Raise without the statement, which the server log would otherwise show with the error
  // (log_min_error_statement): for functions whose arguments may hold passwords.
  bool hide_statement = false;
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
Datum cpp_entry(Body &&body, bool hide_statement = false) {
  CaughtError caught;
  caught.hide_statement = hide_statement;
  try {
    return body();
  } catch (...) {
    capture_current_exception(caught);
  }
  raise_caught(caught);
}

// Runs fn(arg) inside PG_TRY; an ERROR becomes a pgdog_reshard::Error, thrown after PG_END_TRY.
// Never inlined: the sigsetjmp lives in this one small frame, never in a caller's, so no caller
// local can be clobbered by the longjmp and no caller needs volatile.
void pg_try_call(void (*fn)(void *), void *arg);

// Calls a PostgreSQL function that may ereport(ERROR), from C++ code. `fn` must be a thin call with
// no C++ objects of its own (a longjmp out of it skips them) and must not throw. An ERROR becomes a
// pgdog_reshard::Error carrying the original SQLSTATE, message, detail and hint.
template <typename Fn>
auto pg_call(Fn &&fn) -> decltype(fn()) {
  using Result = decltype(fn());
  if constexpr (std::is_void_v<Result>) {
    pg_try_call([](void *f) { (*static_cast<std::remove_reference_t<Fn> *>(f))(); }, &fn);
  } else {
    static_assert(std::is_trivially_copyable_v<Result>, "pg_call returns plain C values only");
    struct Call {
      Fn &fn;
      Result result;
    } call{fn, Result{}};
    pg_try_call([](void *c) {
      auto *call = static_cast<Call *>(c);
      call->result = call->fn();
    }, &call);
    return call.result;
  }
}

}  // namespace pgdog_reshard
