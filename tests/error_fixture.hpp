#pragma once
// Runs `f`, requires it to throw moesim::InputError and returns the message; another exception or
// none fails the test.
#include <catch2/catch.hpp>

#include <exception>
#include <string>

#include "core/error.hpp"

namespace moesim::testing {

template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected moesim::InputError, got another exception: " << e.what());
  }
  FAIL("expected moesim::InputError, nothing was thrown");
  return {};
}

}  // namespace moesim::testing
