// Iterations as dependency graphs (sim/op_graph.hpp) and as Chakra execution traces
// (traces/chakra_et.hpp): a graph replays to the iteration time it came from, by hand and for
// every layout, and survives a write and a read.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "core/error.hpp"
#include "sim/op_graph.hpp"
#include "traces/chakra_et.hpp"

using namespace moesim;

namespace {

OpGraph::Node compute(int rank, TimeNs ns, std::vector<std::int64_t> deps = {}) {
  OpGraph::Node n;
  n.kind = OpGraph::Kind::Compute;
  n.rank = rank;
  n.duration_ns = ns;
  n.deps = std::move(deps);
  return n;
}

OpGraph::Node coll(int rank, int instance, TimeNs ns, std::vector<std::int64_t> deps) {
  OpGraph::Node n = compute(rank, ns, std::move(deps));
  n.kind = OpGraph::Kind::Collective;
  n.collective = instance;
  return n;
}

OpGraph::Node msg(bool send, int rank, int peer, TimeNs ns, std::vector<std::int64_t> deps) {
  OpGraph::Node n = compute(rank, ns, std::move(deps));
  n.kind = send ? OpGraph::Kind::Send : OpGraph::Kind::Recv;
  n.peer = peer;
  n.tag = 7;
  return n;
}

// Two ranks: compute, an all-reduce of both, then rank 0 sends rank 1 a message it waits for.
OpGraph hand_graph() {
  OpGraph g;
  g.ranks = 2;
  g.collective_members = {{0, 1}};
  g.nodes = {compute(0, 100), coll(0, 0, 50, {0}), msg(true, 0, 1, 30, {1}),
             compute(1, 200), coll(1, 0, 50, {3}), msg(false, 1, 0, 0, {4}), compute(1, 10, {5})};
  return g;
}

struct Captured {
  std::optional<OpGraph> graph;
  TimeNs iteration_ns = 0;
};

Captured capture(const std::string& file, std::vector<std::string> overrides, const std::string& policy,
                 std::int64_t iteration) {
  overrides.push_back("run.max_iterations=" + std::to_string(iteration + 1));
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/" + file, overrides, std::nullopt);
  s.policies = parse_policy_specs(policy);
  Captured c;
  RunOptions ro;
  ro.timeline_iterations = {iteration};
  ro.on_recorded = [&](const std::string&, std::int64_t, const IterationModel& m, const IterationResult& r) {
    c.graph = m.graph();
    c.iteration_ns = r.iteration_ns;
  };
  (void)run_scenario(s, ro);
  REQUIRE(c.graph.has_value());
  return c;
}

std::string temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("moesim-chakra-" + name);
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

TEST_CASE("graph replay: a hand-worked two-rank iteration", "[chakra]") {
  const GraphReplay r = replay_graph(hand_graph());
  // The all-reduce starts when rank 1 arrives at 200 and ends at 250 on both; rank 0 sends at 250
  // and goes on (it is done); the message lands at 280 and rank 1's last 10 ns end at 290.
  CHECK(r.rank_end_ns == std::vector<TimeNs>{250, 290});
  CHECK(r.makespan_ns == 290);
  CHECK(r.node_end_ns == std::vector<TimeNs>{100, 250, 250, 200, 250, 280, 290});
}

TEST_CASE("graph replay: broken graphs are named errors", "[chakra]") {
  OpGraph cycle = hand_graph();
  cycle.nodes[0].deps = {2};
  CHECK_THROWS_WITH(replay_graph(cycle, "g"), Catch::Contains("never ends") && Catch::Contains("node 0"));
  OpGraph lonely = hand_graph();
  lonely.nodes[2].tag = 8;
  CHECK_THROWS_WITH(replay_graph(lonely, "g"), Catch::Contains("which no node sends"));
  OpGraph wrong_group = hand_graph();
  wrong_group.collective_members = {{0, 1, 2}};
  wrong_group.ranks = 3;
  CHECK_THROWS_WITH(replay_graph(wrong_group, "g"), Catch::Contains("reached by ranks [0,1]"));
  OpGraph disagree = hand_graph();
  disagree.nodes[4].duration_ns = 51;
  CHECK_THROWS_WITH(replay_graph(disagree, "g"), Catch::Contains("collective 0 has 51 ns"));
}

TEST_CASE("graph replay: every layout's recorded iteration replays to its own time", "[chakra]") {
  struct Case {
    std::string file;
    std::vector<std::string> overrides;
    std::string policy;
  };
  const std::vector<Case> cases = {
      // Pipeline 4, tensor 2 with sequence parallelism, 16 micro-batches.
      {"mixtral-4x8-h100.yaml", {}, "static:capacity_factor=1.25"},
      {"qwen3-30b-a3b-32xh100.yaml", {}, "eplb"},
      {"swiftmoe-gpt-small.yaml", {}, "symi"},
      // Two lanes a GPU: chunked all-to-all, overlapped gradient buckets, ZeRO-3.
      {"swiftmoe-gpt-small.yaml", {"overlap.a2a_chunks=2"}, "flexmoe:interval=1"},
      {"qwen3-30b-a3b-32xh100.yaml", {"overlap.grad_sync=true"}, "static:capacity_factor=1.25"},
      {"qwen3-30b-a3b-32xh100.yaml", {"parallelism.zero_stage=3"}, "static:capacity_factor=1.25"},
  };
  for (const Case& c : cases) {
    INFO(c.file << " " << c.policy << " " << (c.overrides.empty() ? "" : c.overrides.front()));
    const Captured cap = capture(c.file, c.overrides, c.policy, 1);
    const GraphReplay r = replay_graph(*cap.graph);
    CHECK(r.makespan_ns == cap.iteration_ns);
    CHECK(cap.iteration_ns > 0);
  }
}

TEST_CASE("Chakra ET: export then import gives the same iteration", "[chakra]") {
  if (!chakra_supported()) {
    WARN("built without Protobuf: Chakra round trip skipped");
    return;
  }
  const Captured cap = capture("mixtral-4x8-h100.yaml", {}, "static:capacity_factor=1.25", 2);
  const std::string dir = temp_dir("mixtral");
  write_chakra_et(*cap.graph, dir);
  CHECK(std::filesystem::is_regular_file(dir + "/moesim.0.et"));
  CHECK(std::filesystem::is_regular_file(dir + "/comm_group.json"));
  const OpGraph back = read_chakra_et(dir);
  REQUIRE(back.ranks == cap.graph->ranks);
  REQUIRE(back.nodes.size() == cap.graph->nodes.size());
  CHECK(replay_graph(back, dir).makespan_ns == cap.iteration_ns);
  // Every all-to-all carries its per-peer sizes: what rank a sends b is what b receives from a.
  int a2a = 0;
  for (const OpGraph::Node& n : back.nodes) {
    if (n.kind != OpGraph::Kind::Collective || n.comm != CommKind::AllToAll || n.out_split_bytes.empty()) continue;
    ++a2a;
    const auto& members = back.collective_members[static_cast<std::size_t>(n.collective)];
    REQUIRE(n.out_split_bytes.size() == members.size());
  }
  CHECK(a2a > 0);
  // Two lanes a GPU (chunked all-to-all): their meeting points survive the files too.
  const Captured two = capture("swiftmoe-gpt-small.yaml", {"overlap.a2a_chunks=2"}, "symi", 1);
  const std::string dir2 = temp_dir("chunks");
  write_chakra_et(*two.graph, dir2);
  CHECK(replay_graph(read_chakra_et(dir2), dir2).makespan_ns == two.iteration_ns);
  std::filesystem::remove_all(dir2);
  std::map<std::pair<int, int>, std::vector<const OpGraph::Node*>> by_instance;
  for (const OpGraph::Node& n : back.nodes)
    if (n.kind == OpGraph::Kind::Collective && !n.out_split_bytes.empty()) by_instance[{n.collective, n.rank}].push_back(&n);
  int checked = 0;
  for (const auto& [key, nodes] : by_instance) {
    if (++checked > 200) break;  // the first instances' members: enough to catch a transposed matrix
    const auto& members = back.collective_members[static_cast<std::size_t>(key.first)];
    const std::size_t me = static_cast<std::size_t>(std::find(members.begin(), members.end(), key.second) - members.begin());
    for (std::size_t j = 0; j < members.size(); ++j) {
      const auto peer = by_instance.find({key.first, members[j]});
      REQUIRE(peer != by_instance.end());
      REQUIRE(nodes.front()->out_split_bytes[j] == peer->second.front()->in_split_bytes[me]);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("Chakra ET: bad files are named errors", "[chakra]") {
  if (!chakra_supported()) {
    CHECK_THROWS_AS(read_chakra_et("/nonexistent"), InputError);
    return;
  }
  CHECK_THROWS_WITH(read_chakra_et("/nonexistent-moesim"), Catch::Contains("no moesim.0.et"));
  const std::string dir = temp_dir("bad");
  OpGraph g = hand_graph();
  g.nodes[1].comm = CommKind::AllReduce;
  g.nodes[4].comm = CommKind::AllReduce;
  write_chakra_et(g, dir);
  CHECK(replay_graph(read_chakra_et(dir)).makespan_ns == 290);
  {  // a truncated rank file
    std::ifstream in(dir + "/moesim.1.et", std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(dir + "/moesim.1.et", std::ios::binary) << data.substr(0, data.size() - 3);
  }
  CHECK_THROWS_WITH(read_chakra_et(dir), Catch::Contains("moesim.1.et: byte"));
  write_chakra_et(g, dir);
  std::ofstream(dir + "/comm_group.json") << "{\"9\": [0, 1]}";
  CHECK_THROWS_WITH(read_chakra_et(dir), Catch::Contains("process group '1' is not in"));
  std::ofstream(dir + "/comm_group.json") << "{\"1\": [0, 5]}";
  CHECK_THROWS_WITH(read_chakra_et(dir), Catch::Contains("rank 5 is not one of 0..1"));
  std::filesystem::remove_all(dir);
}
