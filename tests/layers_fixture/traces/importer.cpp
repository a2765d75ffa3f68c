#include "traces/trace.hpp"
#include "policies/common.hpp"  // expect-violation
#include "../policies/common.hpp"  // expect-violation
  #  include <vector>
// #include "app/main.cpp" (a comment, not an include)
