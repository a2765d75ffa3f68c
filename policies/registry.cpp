#include "policies/registry.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <deque>
#include <mutex>

#include "core/error.hpp"

namespace moesim {

#define MOESIM_POLICY(id) PolicyInfo moesim_policy_##id();
#include "policies/list.inc"
#undef MOESIM_POLICY

namespace {

const std::vector<PolicyInfo>& builtin_policies() {
  static const std::vector<PolicyInfo> registry{
#define MOESIM_POLICY(id) moesim_policy_##id(),
#include "policies/list.inc"
#undef MOESIM_POLICY
  };
  return registry;
}

// Run-time registrations: a deque, since push_back keeps references to earlier entries valid
// (find_policy hands them out); the mutex orders registrations against lookups.
struct Runtime {
  std::mutex mu;
  std::deque<PolicyInfo> policies;
};
Runtime& runtime() {
  static Runtime r;
  return r;
}

}  // namespace

std::vector<PolicyInfo> policy_registry() {
  std::vector<PolicyInfo> all = builtin_policies();
  Runtime& rt = runtime();
  const std::lock_guard<std::mutex> lock(rt.mu);
  all.insert(all.end(), rt.policies.begin(), rt.policies.end());
  return all;
}

const PolicyInfo& find_policy(const std::string& name, const Cfg& where, const std::string& key) {
  std::string names;
  for (const auto& p : builtin_policies()) {
    if (p.name == name) return p;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  Runtime& rt = runtime();
  {
    const std::lock_guard<std::mutex> lock(rt.mu);
    for (const auto& p : rt.policies) {
      if (p.name == name) return p;
      names += ", " + p.name;
    }
  }
  where.fail(key, fmt::format("unknown policy '{}'; registered policies: {}", name, names));
}

void register_policy(PolicyInfo info) {
  const auto allowed = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  };
  if (info.name.empty() || !std::all_of(info.name.begin(), info.name.end(), allowed)) {
    throw InputError(fmt::format("register_policy: name '{}' is not allowed; allowed: a non-empty name of letters, "
                                 "digits and - _ .",
                                 info.name));
  }
  if (!info.make) throw InputError(fmt::format("register_policy: policy '{}' has no factory", info.name));
  for (const auto& p : builtin_policies()) {
    if (p.name == info.name)
      throw InputError(fmt::format("register_policy: '{}' is a built-in policy; choose another name", info.name));
  }
  Runtime& rt = runtime();
  const std::lock_guard<std::mutex> lock(rt.mu);
  for (const auto& p : rt.policies) {
    if (p.name == info.name)
      throw InputError(fmt::format("register_policy: a policy named '{}' is already registered; names are unique "
                                   "for the life of the process",
                                   info.name));
  }
  rt.policies.push_back(std::move(info));
}

std::unique_ptr<Policy> make_policy(const PolicyContext& ctx, Cfg& entry) {
  const PolicyInfo& info = find_policy(entry.need_string("name"), entry, "name");
  entry.touch("label");
  std::unique_ptr<Policy> p = info.make(ctx, entry);
  entry.finish();
  return p;
}

}  // namespace moesim
