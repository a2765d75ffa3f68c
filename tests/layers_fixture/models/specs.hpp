#pragma once
#include "core/units.hpp"
#include "kernels/kernels.hpp"
#include "sim/collectives.hpp"  // expect-violation
