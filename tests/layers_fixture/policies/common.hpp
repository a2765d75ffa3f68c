#pragma once
#include "sim/policy.hpp"
