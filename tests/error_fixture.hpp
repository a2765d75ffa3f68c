#pragma once
// The message of the moesim::InputError that `f` throws; fails the test when it throws nothing.
#include <catch2/catch.hpp>

#include <string>

#include "core/error.hpp"

namespace moesim::testing {

template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  FAIL("expected moesim::InputError");
  return "";
}

}  // namespace moesim::testing
