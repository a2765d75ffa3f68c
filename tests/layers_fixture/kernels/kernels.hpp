#pragma once
#include "core/units.hpp"
#include "models/specs.hpp"  // expect-violation
