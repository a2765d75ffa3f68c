#pragma once
// Policies by name. Adding a policy is one file in policies/ that defines
// `PolicyInfo moesim_policy_<id>()`, plus one MOESIM_POLICY(<id>) line in policies/list.inc.
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/policy.hpp"

namespace moesim {

struct PolicyInfo {
  std::string name;
  std::string description;  // one line: the system and paper it models
  // Builds the policy; reads its parameters from `params` (unknown keys are errors).
  std::unique_ptr<Policy> (*make)(const PolicyContext& ctx, Cfg& params);
};

[[nodiscard]] const std::vector<PolicyInfo>& policy_registry();
// The error for an unknown name lists the registered ones.
[[nodiscard]] const PolicyInfo& find_policy(const std::string& name, const Cfg& where, const std::string& key);

// Builds the policy an entry `{name: ..., label: ..., <parameters>}` names; unknown parameters
// are errors.
[[nodiscard]] std::unique_ptr<Policy> make_policy(const PolicyContext& ctx, Cfg& entry);

}  // namespace moesim
