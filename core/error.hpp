#pragma once
#include <stdexcept>
#include <string>

namespace moesim {

// Bad input from the user (scenario, trace, command line). The message is complete: it names
// the file, the position, the key, what was found and what is allowed. The CLI prints it and
// exits with status 2 without writing any output.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace moesim
