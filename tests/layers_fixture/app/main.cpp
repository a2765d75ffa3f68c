#include "policies/common.hpp"
#include "traces/trace.hpp"
#include "kernels/kernels.hpp"
#include "tests/fixture.hpp"  // expect-violation
