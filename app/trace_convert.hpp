#pragma once
// `moesim trace convert IN OUT [options]`: between the native CSV and binary formats and from every
// importer (traces/importers.hpp). Dispatched by app/main.cpp.
#include <string>
#include <vector>

namespace moesim {

// `args` are the words after `moesim trace convert`. Returns the exit status (0); bad input
// throws InputError, which main() reports with status 2.
int cmd_trace_convert(const std::vector<std::string>& args);

}  // namespace moesim
