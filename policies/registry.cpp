#include "policies/registry.hpp"

#include <fmt/format.h>

namespace moesim {

#define MOESIM_POLICY(id) PolicyInfo moesim_policy_##id();
#include "policies/list.inc"
#undef MOESIM_POLICY

const std::vector<PolicyInfo>& policy_registry() {
  static const std::vector<PolicyInfo> registry{
#define MOESIM_POLICY(id) moesim_policy_##id(),
#include "policies/list.inc"
#undef MOESIM_POLICY
  };
  return registry;
}

const PolicyInfo& find_policy(const std::string& name, const Cfg& where, const std::string& key) {
  std::string names;
  for (const auto& p : policy_registry()) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  where.fail(key, fmt::format("unknown policy '{}'; registered policies: {}", name, names));
}

std::unique_ptr<Policy> make_policy(const PolicyContext& ctx, Cfg& entry) {
  const PolicyInfo& info = find_policy(entry.need_string("name"), entry, "name");
  entry.touch("label");
  std::unique_ptr<Policy> p = info.make(ctx, entry);
  entry.finish();
  return p;
}

}  // namespace moesim
