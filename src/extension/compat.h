// The few server APIs that differ between PostgreSQL 15, 16 and 17.
#pragma once

#include "extension/pg_server.h"

namespace pgdog_reshard {

// PostgreSQL 17 renamed a backend's index in the PGPROC array to ProcNumber (MyProcNumber).
#if PG_VERSION_NUM >= 170000
using ProcNumberCompat = ProcNumber;
inline ProcNumberCompat my_proc_number() { return MyProcNumber; }
#else
using ProcNumberCompat = int;
inline ProcNumberCompat my_proc_number() { return MyProc->pgprocno; }
#endif

inline void wake_proc(ProcNumberCompat number) { SetLatch(&GetPGProcByNumber(number)->procLatch); }

}  // namespace pgdog_reshard
