#pragma once
#include <string>
#include <vector>

namespace moesim {
// `moesim report RESULTS_DIR [--format md|html] [--out DIR]`: the pictures and one report page of a
// `moesim compare --out` folder or a `moesim sweep --out` folder, drawn by scripts/plot.py (one
// implementation of the pictures, whichever way they are asked for).
int cmd_report(const std::vector<std::string>& args);
}  // namespace moesim
