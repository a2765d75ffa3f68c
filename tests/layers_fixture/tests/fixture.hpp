#pragma once
#include "app/main.cpp"
#include "sim/policy.hpp"
