#pragma once
// `moesim trace stats TRACE [--json] [--shape L,G,E] [--top N]`: describes a routing trace (load
// imbalance, hot-set turnover, bursts) per MoE layer and overall.
#include <string>
#include <vector>

namespace moesim {

// `args` are the words after `trace stats`. Returns the exit status (0; --help 0); bad input
// throws InputError (main prints it and exits 2).
int cmd_trace_stats(const std::vector<std::string>& args);

}  // namespace moesim
