// The policy registry's run-time registration (the Python package's way in): names it refuses,
// and the built-in order it keeps. Registering a valid policy here would add it to every later
// test that walks the registry in this process, so the accepted path is tested from Python
// (python/tests/test_policies.py).
#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <string>

#include "app/scenario.hpp"
#include "error_fixture.hpp"
#include "policies/registry.hpp"

using namespace moesim;
using moesim::testing::input_error;

namespace {
PolicyInfo named(const std::string& name) {
  return {name, "test", [](const PolicyContext&, Cfg&) -> std::unique_ptr<Policy> { return nullptr; }};
}
}  // namespace

TEST_CASE("registry: the built-in policies in policies/list.inc order", "[registry]") {
  const std::vector<PolicyInfo> all = policy_registry();
  REQUIRE(all.size() >= 9);
  const std::vector<std::string> first{"static", "eplb", "symi", "fastermoe", "oracle",
                                       "flexmoe", "smartmoe", "lazarus", "prophet"};
  for (std::size_t i = 0; i < first.size(); ++i) CHECK(all[i].name == first[i]);
}

TEST_CASE("registry: run-time registration refuses taken, empty and unusable names", "[registry]") {
  const std::size_t before = policy_registry().size();
  CHECK_THAT(input_error([] { register_policy(named("static")); }), Catch::Contains("'static' is a built-in policy"));
  CHECK_THAT(input_error([] { register_policy(named("")); }), Catch::Contains("name '' is not allowed"));
  // A comma or colon would break `--policies name:key=value,...`.
  CHECK_THAT(input_error([] { register_policy(named("a:b")); }), Catch::Contains("name 'a:b' is not allowed"));
  CHECK_THAT(input_error([] { register_policy(named("a,b")); }), Catch::Contains("letters, digits and - _ ."));
  PolicyInfo empty = named("no-factory");
  empty.make = nullptr;
  CHECK_THAT(input_error([&] { register_policy(empty); }), Catch::Contains("'no-factory' has no factory"));
  CHECK(policy_registry().size() == before);
}

TEST_CASE("registry: an unknown name lists the registered policies", "[registry]") {
  const YAML::Node n = YAML::Load("{name: nosuch}");
  const Cfg cfg(n, "s.yaml", "policies[0]");
  CHECK_THAT(input_error([&] { (void)find_policy("nosuch", cfg, "name"); }),
             Catch::Contains("unknown policy 'nosuch'; registered policies: static, eplb, symi"));
}

TEST_CASE("registry: scenarios/all-policies.yaml names every line of policies/list.inc", "[registry][scenario]") {
  std::ifstream in(std::string(MOESIM_SOURCE_DIR) + "/policies/list.inc");
  REQUIRE(in);
  std::set<std::string> listed;
  std::string line;
  const std::string tag = "MOESIM_POLICY(";
  while (std::getline(in, line))
    if (line.rfind(tag, 0) == 0) listed.insert(line.substr(tag.size(), line.find(')') - tag.size()));
  REQUIRE(listed.size() >= 20);
  const Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/all-policies.yaml", {}, std::nullopt);
  std::set<std::string> named_in_scenario;
  for (const PolicyEntry& e : s.policies) named_in_scenario.insert(e.name);
  CHECK(named_in_scenario == listed);
  CHECK(s.policies.size() == listed.size());  // each once
}
