#pragma once
#include <string>
#include <vector>

namespace moesim {

// `moesim regress SUITE_DIR --baseline FILE [--update]`: runs every scenario of a suite and
// compares each policy's key results with a stored baseline within per-metric tolerances.
// Exit status 0: nothing moved; 1: a result moved (or the suite and baseline disagree).
int cmd_regress(const std::vector<std::string>& args);

}  // namespace moesim
