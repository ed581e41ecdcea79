#include "extension/boundary.h"

#include <cstring>
#include <exception>
#include <new>

namespace pgdog_reshard {

namespace {

// A palloc'd copy that cannot ereport: on failure the message is lost, not the error.
char *copy_or_null(const std::string &s) noexcept {
  if (s.empty()) return nullptr;
  size_t len = std::min(s.size(), static_cast<size_t>(64 * 1024));  // a runaway message stays bounded
  auto *p = static_cast<char *>(MemoryContextAllocExtended(ErrorContext, len + 1, MCXT_ALLOC_NO_OOM));
  if (p == nullptr) return nullptr;
  memcpy(p, s.data(), len);
  p[len] = '\0';
  return p;
}

void capture(CaughtError &out, const char *sqlstate, const char *message, const std::string &detail,
             const std::string &hint) noexcept {
  try {
    out.sqlerrcode = sqlstate_to_errcode(sqlstate);
    out.message = copy_or_null(message);
    out.detail = copy_or_null(detail);
    out.hint = copy_or_null(hint);
  } catch (...) {
    out.sqlerrcode = ERRCODE_INTERNAL_ERROR;
  }
}

}  // namespace

int sqlstate_to_errcode(const std::string &s) {
  if (s.size() != 5) return ERRCODE_INTERNAL_ERROR;
  return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

void capture_current_exception(CaughtError &out) noexcept {
  try {
    throw;
  } catch (const Error &e) {
    capture(out, e.sqlstate().c_str(), e.what(), e.detail(), e.hint());
  } catch (const std::bad_alloc &) {
    capture(out, sqlstate::kOutOfMemory, "out of memory in pgdog_reshard", {}, {});
  } catch (const std::exception &e) {
    // Anything else is a bug of ours, so XX000 is honest here.
    capture(out, sqlstate::kInternalError, e.what(), {}, {});
  } catch (...) {
    capture(out, sqlstate::kInternalError, "unknown C++ exception in pgdog_reshard", {}, {});
  }
}

void raise_caught(const CaughtError &error) {
  ereport(ERROR, (errcode(error.sqlerrcode),
                  errmsg_internal("%s", error.message ? error.message : "pgdog_reshard error"),
                  error.detail ? errdetail_internal("%s", error.detail) : 0,
                  error.hint ? errhint("%s", error.hint) : 0, errhidestmt(error.hide_statement)));
  pg_unreachable();
}

__attribute__((noinline)) void pg_try_call(void (*fn)(void *), void *arg) {
  MemoryContext caller_context = CurrentMemoryContext;
  ErrorData *volatile edata = nullptr;
  PG_TRY();
  { fn(arg); }
  PG_CATCH();
  {
    MemoryContextSwitchTo(caller_context);
    edata = CopyErrorData();
    FlushErrorState();
  }
  PG_END_TRY();
  if (edata) throw_error_data(edata);
}

void throw_error_data(ErrorData *edata) {
  char code[6];
  int c = edata->sqlerrcode;
  for (int i = 0; i < 5; i++) {
    code[i] = PGUNSIXBIT(c);
    c >>= 6;
  }
  code[5] = '\0';
  std::string message = edata->message ? edata->message : "";
  std::string detail = edata->detail ? edata->detail : "";
  std::string hint = edata->hint ? edata->hint : "";
  FreeErrorData(edata);
  throw Error(code, message, detail, hint);
}

}  // namespace pgdog_reshard
