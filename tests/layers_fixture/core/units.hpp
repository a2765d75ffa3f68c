#pragma once
#include <cstdint>

#include "core/error.hpp"
#include "sim/engine.hpp"  // expect-violation
