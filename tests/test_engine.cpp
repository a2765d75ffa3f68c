#include <catch2/catch.hpp>

#include <vector>

#include "sim/engine.hpp"

using namespace moesim;

TEST_CASE("engine runs events in time order", "[engine]") {
  Engine e;
  std::vector<int> order;
  e.schedule_at(30, [&](Engine&) { order.push_back(3); });
  e.schedule_at(10, [&](Engine&) { order.push_back(1); });
  e.schedule_at(20, [&](Engine&) { order.push_back(2); });
  REQUIRE(e.run() == 3);
  REQUIRE(order == std::vector<int>{1, 2, 3});
  REQUIRE(e.now() == 30);
}

TEST_CASE("engine breaks ties by insertion sequence", "[engine]") {
  Engine e;
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) e.schedule_at(5, [&order, i](Engine&) { order.push_back(i); });
  // An event scheduled from a handler at the same time runs after those already queued.
  e.schedule_at(5, [&](Engine& en) { en.schedule_in(0, [&](Engine&) { order.push_back(1000); }); });
  e.schedule_at(4, [&](Engine&) { order.push_back(-1); });
  e.run();
  REQUIRE(order.size() == 102);
  REQUIRE(order.front() == -1);
  for (int i = 0; i < 100; ++i) REQUIRE(order[i + 1] == i);
  REQUIRE(order.back() == 1000);
}

TEST_CASE("engine handlers schedule relative to now", "[engine]") {
  Engine e;
  std::vector<TimeNs> seen;
  e.schedule_at(7, [&](Engine& en) {
    seen.push_back(en.now());
    en.schedule_in(13, [&](Engine& en2) { seen.push_back(en2.now()); });
  });
  e.run();
  REQUIRE(seen == std::vector<TimeNs>{7, 20});
  REQUIRE(e.executed() == 2);
}

TEST_CASE("engine refuses events in the past", "[engine]") {
  Engine e;
  e.schedule_at(10, [](Engine& en) { REQUIRE_THROWS_AS(en.schedule_at(9, [](Engine&) {}), std::logic_error); });
  e.run();
}

TEST_CASE("engine keeps a heap order under interleaved pushes and pops", "[engine]") {
  Engine e;
  std::vector<TimeNs> seen;
  // A pseudo-random schedule: times drawn by a fixed LCG; the run must visit them sorted.
  std::uint64_t x = 12345;
  std::vector<TimeNs> times;
  for (int i = 0; i < 1000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    times.push_back(static_cast<TimeNs>(x >> 40));
  }
  for (TimeNs t : times) e.schedule_at(t, [&seen](Engine& en) { seen.push_back(en.now()); });
  e.run();
  std::sort(times.begin(), times.end());
  REQUIRE(seen == times);
}
