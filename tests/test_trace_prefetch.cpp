// The trace read ahead on a thread of its own (traces/prefetch.hpp) must hand out exactly the
// source's iterations, in order, through rewinds, the end of the trace and errors, and a run with
// it must give every figure of a run without it.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "tests/trace_fixture.hpp"
#include "traces/prefetch.hpp"
#include "traces/replay.hpp"
#include "traces/trace.hpp"

using namespace moesim;

namespace {

// Iteration i holds counts 100 i + cell, so any reordering, repeat or skip shows.
std::vector<IterationCounts> numbered(int iterations, const TraceShape& shape) {
  std::vector<IterationCounts> its(static_cast<std::size_t>(iterations));
  for (int i = 0; i < iterations; ++i) {
    its[static_cast<std::size_t>(i)].reset(shape);
    std::vector<std::int64_t>& c = its[static_cast<std::size_t>(i)].counts;
    for (std::size_t k = 0; k < c.size(); ++k) c[k] = 100 * i + static_cast<std::int64_t>(k);
  }
  return its;
}

// Fails on its third iteration, after two good ones.
class FailingTrace final : public TraceSource {
 public:
  [[nodiscard]] TraceShape shape() const override { return TraceShape{1, 1, 2}; }
  bool next(IterationCounts& out) override {
    if (pos_ == 2) throw std::runtime_error("read error at iteration 2");
    out.reset(shape());
    out.counts[0] = pos_++;
    return true;
  }
  void rewind() override { pos_ = 0; }
  [[nodiscard]] std::string describe() const override { return "failing"; }

 private:
  std::int64_t pos_ = 0;
};

}  // namespace

TEST_CASE("trace prefetch: the source's iterations, end and rewinds", "[traces][prefetch]") {
  const TraceShape shape{2, 3, 4};
  const std::vector<IterationCounts> want = numbered(7, shape);
  for (int depth : {1, 3}) {
    INFO("depth " << depth);
    auto t = prefetch_trace(std::make_unique<testing::VectorTrace>(want), depth);
    CHECK(t->shape().experts == 4);
    CHECK(t->describe() == "vector");
    IterationCounts c;
    t->rewind();  // before anything is taken: a no-op
    for (int pass = 0; pass < 3; ++pass) {
      const int n = pass == 1 ? 3 : 7;  // a short pass, rewound mid-way
      for (int i = 0; i < n; ++i) {
        REQUIRE(t->next(c));
        CHECK(c.shape.gpus == 3);
        REQUIRE(c.counts == want[static_cast<std::size_t>(i)].counts);
      }
      if (n == 7) {
        // The end, and it stays the end until a rewind.
        CHECK_FALSE(t->next(c));
        CHECK_FALSE(t->next(c));
      }
      t->rewind();
    }
  }
}

TEST_CASE("trace prefetch: under the replay cache, the synthetic stream unchanged", "[traces][prefetch]") {
  // A budget of 3 iterations (2*3*4 int64 = 192 bytes each): later passes replay past the cache,
  // which rewinds the read-ahead source and skips forward in it.
  const TraceShape shape{2, 3, 4};
  SyntheticTraceSpec spec;
  spec.tokens_per_gpu = 500;
  spec.top_k = 2;
  spec.drift_sigma = 0.2;
  spec.seed = 5;
  auto direct = make_synthetic_trace(shape, spec);
  std::vector<IterationCounts> want(12);
  for (IterationCounts& w : want) REQUIRE(direct->next(w));
  ReplayCache cache(prefetch_trace(make_synthetic_trace(shape, spec), 2), 3 * 192.0);
  IterationCounts c;
  for (int pass = 0; pass < 3; ++pass) {
    cache.rewind();
    const int n = pass == 1 ? 5 : 12;
    for (int i = 0; i < n; ++i) {
      REQUIRE(cache.next(c));
      REQUIRE(c.counts == want[static_cast<std::size_t>(i)].counts);
    }
  }
}

TEST_CASE("trace prefetch: an error of the source reaches the caller in its place", "[traces][prefetch]") {
  auto t = prefetch_trace(std::make_unique<FailingTrace>(), 2);
  IterationCounts c;
  REQUIRE(t->next(c));
  CHECK(c.counts[0] == 0);
  REQUIRE(t->next(c));
  CHECK(c.counts[0] == 1);
  CHECK_THROWS_WITH(t->next(c), "read error at iteration 2");
  CHECK_THROWS_WITH(t->next(c), "read error at iteration 2");
  // A rewind starts over.
  t->rewind();
  REQUIRE(t->next(c));
  CHECK(c.counts[0] == 0);
}

TEST_CASE("trace prefetch: a run gives the same figures with and without it", "[traces][prefetch]") {
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/swiftmoe-gpt-small.yaml",
                             {"run.max_iterations=40", "run.stop_at_convergence=false"}, std::nullopt);
  s.policies = parse_policy_specs("static:capacity_factor=1.0,flexmoe:interval=10,eplb");
  RunOptions off;
  off.trace_prefetch = 0;
  const std::vector<PolicyResult> base = run_scenario(s, off);
  for (int jobs : {1, 2}) {
    for (int depth : {1, 2}) {
      INFO("jobs " << jobs << ", depth " << depth);
      RunOptions on;
      on.jobs = jobs;
      on.trace_prefetch = depth;
      const std::vector<PolicyResult> got = run_scenario(s, on);
      REQUIRE(got.size() == base.size());
      for (std::size_t p = 0; p < got.size(); ++p) {
        INFO(base[p].label);
        CHECK(got[p].simulated_ns == base[p].simulated_ns);
        CHECK(got[p].events == base[p].events);
        CHECK(got[p].drop_rate == base[p].drop_rate);
        CHECK(got[p].mean_moved_bytes == base[p].mean_moved_bytes);
        REQUIRE(got[p].rows.size() == base[p].rows.size());
        for (std::size_t i = 0; i < got[p].rows.size(); ++i) {
          const IterationResult &x = got[p].rows[i].result, &y = base[p].rows[i].result;
          INFO("iteration " << i);
          CHECK(x.iteration_ns == y.iteration_ns);
          CHECK(x.tokens_routed == y.tokens_routed);
          CHECK(x.tokens_dropped == y.tokens_dropped);
          CHECK(x.a2a_bytes == y.a2a_bytes);
        }
      }
    }
  }
  // The figures are those of the trace: a run on another seed differs (the check above can fail).
  Scenario other = s;
  other.seed = s.seed + 1;
  other.trace.synthetic.seed = s.trace.synthetic.seed + 1;
  const std::vector<PolicyResult> moved = run_scenario(other, off);
  CHECK(moved[0].drop_rate != base[0].drop_rate);
  CHECK(moved[2].simulated_ns != base[2].simulated_ns);
}
