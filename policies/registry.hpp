#pragma once
// Policies by name. Adding a policy is one file in policies/ that defines
// `PolicyInfo moesim_policy_<id>()`, plus one MOESIM_POLICY(<id>) line in policies/list.inc.
// Policies defined outside the library (the Python package's) are added at run time with
// register_policy; they follow the built-in ones, in the order they were registered.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "sim/policy.hpp"

namespace moesim {

struct PolicyInfo {
  std::string name;
  std::string description;  // one line: the system and paper it models
  // Builds the policy; reads its parameters from `params` (unknown keys are errors). A
  // std::function so that a policy registered at run time can carry its state (a Python class).
  std::function<std::unique_ptr<Policy>(const PolicyContext& ctx, Cfg& params)> make;
};

// Every policy: the built-in ones in policies/list.inc order, then those registered at run time.
// A copy, so that a registration cannot move the entries under a caller.
[[nodiscard]] std::vector<PolicyInfo> policy_registry();
// The error for an unknown name lists the registered ones. The reference stays valid for the
// life of the process (entries are never removed or moved).
[[nodiscard]] const PolicyInfo& find_policy(const std::string& name, const Cfg& where, const std::string& key);

// Adds a policy at run time. InputError when the name is taken (built-in or registered before),
// is empty, or has characters other than letters, digits and - _ . (a name must be usable in
// `--policies name:key=value,...`), or when `make` is empty.
void register_policy(PolicyInfo info);

// Builds the policy an entry `{name: ..., label: ..., <parameters>}` names; unknown parameters
// are errors.
[[nodiscard]] std::unique_ptr<Policy> make_policy(const PolicyContext& ctx, Cfg& entry);

}  // namespace moesim
