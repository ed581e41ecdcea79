// Shared by the unit and end-to-end tests: catching the project's Error to assert on its fields.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "core/error.h"

namespace pgdog_reshard {

// Runs f, which must throw pgdog_reshard::Error; returns it (a failed expectation and an empty
// Error otherwise).
template <class F>
Error error_of(F &&f) {
  try {
    f();
  } catch (const Error &e) {
    return e;
  }
  ADD_FAILURE() << "expected a pgdog_reshard::Error";
  return Error("", "");
}

}  // namespace pgdog_reshard
