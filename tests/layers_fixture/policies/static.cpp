#include "policies/common.hpp"
#include "traces/trace.hpp"  // expect-violation
