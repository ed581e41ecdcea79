// Which copy failures send a copy to another server at once: the source gone (connection lost or
// refused, shut down, restarting), never a destination's failure or a query error.
#include <gtest/gtest.h>

#include "engine/table_copy.h"

namespace pgdog_reshard {
namespace {

TEST(TableCopyErrors, OnlyALostSourceIsLost) {
  for (const char *state : {"08006", "08001", "57P01", "57P02", "57P03"}) {
    EXPECT_TRUE(lost_the_source(TableCopyError(true, state, "source"))) << state;
    EXPECT_FALSE(lost_the_source(TableCopyError(false, state, "destination"))) << state;
  }
  for (const char *state : {"40001", "57014", "23505", "XX000", "55000"}) {
    EXPECT_FALSE(lost_the_source(TableCopyError(true, state, "source"))) << state;
  }
  EXPECT_FALSE(lost_the_source(Error("08006", "not from a copy")));
  EXPECT_FALSE(lost_the_source(std::runtime_error("08006")));
}

}  // namespace
}  // namespace pgdog_reshard
