#pragma once
#include "models/specs.hpp"
#include "collectives.hpp"
#include "traces/trace.hpp"  // expect-violation
