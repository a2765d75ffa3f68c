// Team operations (sim/program.hpp) mean the same operation on every member lane. Random
// programs built once with team operations and once lane by lane must give every lane the same
// end and phases, and the engine the same event count and clock, run without the queue, with a
// recorded timeline (teams expanded onto the lanes) and with a zero-time message (the queue).
#include <catch2/catch.hpp>

#include <random>
#include <vector>

#include "sim/program.hpp"

using namespace moesim;

namespace {

struct Outcome {
  std::vector<TimeNs> end_ns;
  std::vector<std::array<TimeNs, kNumPhases>> busy;
  std::uint64_t events = 0;
  TimeNs now_ns = 0;
  std::size_t spans = 0;
};

// `teams` teams of `size` lanes; team t sends only to team t + 1 (so nothing deadlocks), then
// every lane has a few lane operations of its own (a global collective among them).
Outcome build_and_run(unsigned seed, bool use_teams, bool record, bool zero_send, int teams = 3, int size = 4) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const int lanes = teams * size;
  Programs pr;
  std::vector<int> team_id;
  // Two partitions: pairs and the whole team.
  std::vector<std::vector<int>> pairs, whole(1);
  for (int i = 0; i < size; i += 2) pairs.push_back({i, i + 1});
  for (int i = 0; i < size; ++i) whole[0].push_back(i);
  if (use_teams) {
    for (int t = 0; t < teams; ++t) {
      std::vector<int> l;
      for (int i = 0; i < size; ++i) l.push_back(t * size + i);
      team_id.push_back(pr.add_team(l));
    }
  }
  const int p_pairs = use_teams ? pr.add_partition(pairs) : -1, p_whole = use_teams ? pr.add_partition(whole) : -1;
  pr.reset(lanes, 0);
  pr.set_recording(record);
  // One message a (team, step) from team t to t + 1, sent and received in random positions.
  const int steps = 40;
  std::vector<std::vector<int>> team_msg(static_cast<std::size_t>(teams)), lane_msg(static_cast<std::size_t>(lanes));
  std::vector<int> sent(static_cast<std::size_t>(teams), 0), received(static_cast<std::size_t>(teams), 0);
  auto new_message = [&](int t) {
    if (use_teams) {
      team_msg[static_cast<std::size_t>(t)].push_back(pr.new_team_message());
    } else {
      for (int i = 0; i < size; ++i) lane_msg[static_cast<std::size_t>(t * size + i)].push_back(pr.new_message());
    }
  };
  bool zero_used = false;
  for (int step = 0; step < steps; ++step) {
    for (int t = 0; t < teams; ++t) {
      pr.set_label(step + 1);
      const int kind = pick(6);
      const auto phase = static_cast<Phase>(pick(kNumPhases));
      if (kind == 0) {
        const TimeNs d = pick(5) == 0 ? 0 : 1 + pick(1000);
        if (use_teams) pr.team_local(team_id[static_cast<std::size_t>(t)], phase, d);
        else for (int i = 0; i < size; ++i) pr.add_local(t * size + i, phase, d);
      } else if (kind == 1) {
        std::vector<TimeNs> d(static_cast<std::size_t>(size));
        for (TimeNs& x : d) x = pick(3) == 0 ? 0 : 1 + pick(1000);
        if (use_teams) pr.team_local(team_id[static_cast<std::size_t>(t)], phase, d);
        else for (int i = 0; i < size; ++i) pr.add_local(t * size + i, phase, d[static_cast<std::size_t>(i)]);
      } else if (kind == 2 || kind == 3) {
        const auto& part = kind == 2 ? pairs : whole;
        std::vector<TimeNs> d(part.size());
        for (TimeNs& x : d) x = 1 + pick(500);
        if (use_teams) {
          pr.team_collective(team_id[static_cast<std::size_t>(t)], kind == 2 ? p_pairs : p_whole, d, phase);
        } else {
          for (std::size_t g = 0; g < part.size(); ++g) {
            std::vector<int> m;
            for (int i : part[g]) m.push_back(t * size + i);
            pr.add_collective(m, d[g], phase);
          }
        }
      } else if (kind == 4 && t + 1 < teams) {
        // Send the next message of t (a zero-time one once, when asked).
        new_message(t);
        const int k = sent[static_cast<std::size_t>(t)]++;
        TimeNs d = 1 + pick(300);
        if (zero_send && !zero_used) {
          d = 0;
          zero_used = true;
        }
        if (use_teams) pr.team_send(team_id[static_cast<std::size_t>(t)], team_msg[static_cast<std::size_t>(t)][static_cast<std::size_t>(k)], d);
        else for (int i = 0; i < size; ++i) pr.add_send(t * size + i, lane_msg[static_cast<std::size_t>(t * size + i)][static_cast<std::size_t>(k)], d);
      } else if (kind == 5 && t > 0 && received[static_cast<std::size_t>(t)] < sent[static_cast<std::size_t>(t - 1)]) {
        const int k = received[static_cast<std::size_t>(t)]++;
        if (use_teams) pr.team_recv(team_id[static_cast<std::size_t>(t)], team_msg[static_cast<std::size_t>(t - 1)][static_cast<std::size_t>(k)], phase);
        else for (int i = 0; i < size; ++i) pr.add_recv(t * size + i, lane_msg[static_cast<std::size_t>((t - 1) * size + i)][static_cast<std::size_t>(k)], phase);
      }
    }
  }
  // Every message received, then lane operations of their own: local work, then all together.
  for (int t = 1; t < teams; ++t)
    while (received[static_cast<std::size_t>(t)] < sent[static_cast<std::size_t>(t - 1)]) {
      const int k = received[static_cast<std::size_t>(t)]++;
      if (use_teams) pr.team_recv(team_id[static_cast<std::size_t>(t)], team_msg[static_cast<std::size_t>(t - 1)][static_cast<std::size_t>(k)]);
      else for (int i = 0; i < size; ++i) pr.add_recv(t * size + i, lane_msg[static_cast<std::size_t>((t - 1) * size + i)][static_cast<std::size_t>(k)]);
    }
  std::vector<int> all;
  for (int l = 0; l < lanes; ++l) {
    pr.add_local(l, Phase::Optimizer, 1 + pick(100));
    all.push_back(l);
  }
  pr.add_collective(all, 7, Phase::GradSync);
  // A team operation after lane ones goes straight onto the lanes.
  if (use_teams) pr.team_local(team_id[0], Phase::Compute, 11);
  else for (int i = 0; i < size; ++i) pr.add_local(i, Phase::Compute, 11);

  Engine e;
  pr.run(e, 1000);
  Outcome o;
  for (int l = 0; l < lanes; ++l) {
    o.end_ns.push_back(pr.end_ns(l));
    o.busy.push_back(pr.busy(l));
  }
  o.events = e.executed();
  o.now_ns = e.now();
  o.spans = pr.spans().size();
  return o;
}

void check_same(const Outcome& a, const Outcome& b) {
  CHECK(a.end_ns == b.end_ns);
  CHECK(a.busy == b.busy);
  CHECK(a.events == b.events);
  CHECK(a.now_ns == b.now_ns);
  CHECK(a.spans == b.spans);
}

}  // namespace

TEST_CASE("teams: the same ends, phases and events as the lanes' own operations", "[program]") {
  for (unsigned seed = 1; seed <= 60; ++seed) {
    INFO("seed " << seed);
    const Outcome lanes = build_and_run(seed, false, false, false);
    check_same(build_and_run(seed, true, false, false), lanes);
    // A recorded timeline expands the teams and runs the queue: the same, span for span.
    const Outcome recorded = build_and_run(seed, false, true, false);
    check_same(build_and_run(seed, true, true, false), recorded);
    CHECK(recorded.events == lanes.events);
    // A zero-time message: the queue runs both.
    check_same(build_and_run(seed, true, false, true), build_and_run(seed, false, false, true));
  }
}

TEST_CASE("teams: every nanosecond of a member is in some phase", "[program]") {
  // Team 0's two members: 100 ns and 300 ns of compute, then a collective of 50 ns over both:
  // the first waits 200 ns; then a message of 25 ns to team 1, which computes 10 ns first.
  Programs pr;
  const int t0 = pr.add_team({0, 1}), t1 = pr.add_team({2, 3});
  const int both = pr.add_partition({{0, 1}});
  pr.reset(4, 0);
  const int m = pr.new_team_message();
  const std::vector<TimeNs> work{100, 300};
  pr.team_local(t0, Phase::Compute, work);
  const std::vector<TimeNs> a2a{50};
  pr.team_collective(t0, both, a2a, Phase::AllToAll);
  pr.team_send(t0, m, 25);
  pr.team_local(t1, Phase::Compute, 10);
  pr.team_recv(t1, m);
  Engine e;
  pr.run(e, 0);
  CHECK(pr.end_ns(0) == 350);
  CHECK(pr.busy(0)[static_cast<int>(Phase::Wait)] == 200);
  CHECK(pr.end_ns(2) == 375);
  CHECK(pr.busy(2)[static_cast<int>(Phase::Bubble)] == 365);
  // Events: 2 runs of work, 1 collective, 2 receives that wait, 2 runs on team 1, 4 first steps.
  CHECK(e.executed() == 11);
  CHECK(e.now() == 375);
}
