#pragma once
// Reads a whole count matrix source, as the spreading rule does.
#include <vector>

#include "traces/importers.hpp"

namespace moesim::fuzz {

inline void drain_matrix(CountMatrixSource& m, int limit = 16) {
  (void)m.layers();
  (void)m.experts();
  (void)m.steps();
  std::vector<double> out;
  for (int i = 0; i < limit && m.next(out); ++i) {
  }
  m.rewind();
  (void)m.describe();
}

}  // namespace moesim::fuzz
