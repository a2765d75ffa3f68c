#include "sim/policy.hpp"

namespace moesim {

std::vector<int> Placement::replicas(int layer, int expert) const {
  std::vector<int> out;
  const auto& slots = expert_of_slot[layer];
  for (int s = 0; s < static_cast<int>(slots.size()); ++s)
    if (slots[s] == expert) out.push_back(s);
  return out;
}

}  // namespace moesim
