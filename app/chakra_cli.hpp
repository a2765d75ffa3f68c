#pragma once
// `moesim chakra export` and `moesim chakra replay`: an iteration as MLCommons Chakra execution
// traces (traces/chakra_et.hpp), and such traces replayed.
#include <string>
#include <vector>

namespace moesim {

int cmd_chakra(const std::vector<std::string>& args);

}  // namespace moesim
