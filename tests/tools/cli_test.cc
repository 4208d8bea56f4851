// The vmsnap binary on snapshot files: placeholder until format/ lands.
#include <gtest/gtest.h>

TEST(ToolsCli, Placeholder) { SUCCEED(); }
