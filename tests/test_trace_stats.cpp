// Trace statistics on hand-made counts, the generator's bursts and skew decay, the calibrated
// presets against the published figures, and opening TRACE for `moesim trace stats`.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/file_fixture.hpp"
#include "traces/stats.hpp"
#include "traces/trace.hpp"

using Catch::Matchers::Contains;
using moesim::InputError;
using moesim::IterationCounts;
using moesim::LayerTraceStats;
using moesim::SyntheticTraceSpec;
using moesim::TraceShape;
using moesim::TraceSource;
using moesim::TraceStats;
using moesim::TraceStatsOptions;
using moesim::TraceStatsReport;
using moesim::testing::TempDir;

namespace fs = std::filesystem;

namespace {

// Iterations held in memory.
class MemoryTrace final : public TraceSource {
 public:
  MemoryTrace(const TraceShape& shape, std::vector<IterationCounts> its)
      : shape_(shape), its_(std::move(its)) {}
  [[nodiscard]] TraceShape shape() const override { return shape_; }
  bool next(IterationCounts& out) override {
    if (pos_ >= its_.size()) return false;
    out = its_[pos_++];
    return true;
  }
  void rewind() override { pos_ = 0; }
  [[nodiscard]] std::string describe() const override { return "memory"; }

 private:
  TraceShape shape_;
  std::vector<IterationCounts> its_;
  std::size_t pos_ = 0;
};

using Rows = std::vector<std::vector<std::vector<std::int64_t>>>;  // [layer][src][expert]

IterationCounts make_iteration(const Rows& rows) {
  const TraceShape s{static_cast<int>(rows.size()), static_cast<int>(rows[0].size()),
                     static_cast<int>(rows[0][0].size())};
  IterationCounts it;
  it.reset(s);
  for (int l = 0; l < s.layers; ++l) {
    for (int g = 0; g < s.gpus; ++g) {
      for (int e = 0; e < s.experts; ++e) {
        it.at(l, g, e) =
            rows[static_cast<std::size_t>(l)][static_cast<std::size_t>(g)][static_cast<std::size_t>(e)];
      }
    }
  }
  return it;
}

TraceStatsReport stats_of(const std::vector<IterationCounts>& its, int hot_k) {
  TraceStatsOptions o;
  o.hot_k = hot_k;
  TraceStats st(its.at(0).shape, o);
  for (const auto& it : its) st.add(it);
  return st.report();
}

// Per-expert loads of one layer, summed over source GPUs.
std::vector<double> loads_of(const IterationCounts& c, int layer) {
  std::vector<double> v(static_cast<std::size_t>(c.shape.experts), 0.0);
  for (int g = 0; g < c.shape.gpus; ++g) {
    for (int e = 0; e < c.shape.experts; ++e) {
      v[static_cast<std::size_t>(e)] += static_cast<double>(c.at(layer, g, e));
    }
  }
  return v;
}

// One layer, two source GPUs, five experts; expert loads (summed over the GPUs) per iteration:
//   A: [40,  0, 10, 10, 20]   total  80
//   B: [ 5, 30, 10, 10, 25]   total  80
//   C: same as B
//   D: [ 5, 30, 20, 40, 25]   total 120
std::vector<IterationCounts> abcd() {
  return {make_iteration({{{10, 0, 5, 5, 10}, {30, 0, 5, 5, 10}}}),
          make_iteration({{{5, 10, 5, 5, 25}, {0, 20, 5, 5, 0}}}),
          make_iteration({{{5, 10, 5, 5, 25}, {0, 20, 5, 5, 0}}}),
          make_iteration({{{5, 30, 20, 40, 25}, {0, 0, 0, 0, 0}}})};
}

}  // namespace

TEST_CASE("trace stats: load imbalance on hand-made counts", "[trace-stats]") {
  const TraceStatsReport r = stats_of(abcd(), 2);
  REQUIRE(r.iterations == 4);
  REQUIRE(r.layers.size() == 1);
  const LayerTraceStats& s = r.layers[0];
  CHECK(s.assignments == 80 + 80 + 80 + 120);
  CHECK(s.empty_iterations == 0);

  // max/mean: A 40/16 = 2.5, B and C 30/16 = 1.875, D 40/24 = 1.6667; mean 7.91667/4.
  CHECK(s.max_over_mean.n == 4);
  CHECK(s.max_over_mean.mean() == Approx((2.5 + 1.875 + 1.875 + 40.0 / 24.0) / 4.0));
  CHECK(s.max_over_mean.max == Approx(2.5));
  CHECK(s.max_over_mean.min == Approx(40.0 / 24.0));

  // CV = population std-dev / mean. A: deviations from 16 are 24,-16,-6,-6,4, squares sum to
  // 920, variance 184; B: -11,14,-6,-6,9 -> 470, variance 94; D: deviations from 24 are
  // -19,6,-4,16,1 -> 670, variance 134.
  const double cv_a = std::sqrt(184.0) / 16.0;  // 0.8478
  const double cv_b = std::sqrt(94.0) / 16.0;   // 0.6060
  const double cv_d = std::sqrt(134.0) / 24.0;  // 0.4823
  CHECK(s.cv.mean() == Approx((cv_a + 2 * cv_b + cv_d) / 4.0));
  CHECK(s.cv.max == Approx(cv_a));

  // Gini = 2 sum_i i x_(i) / (n sum) - (n + 1) / n over ascending loads, n = 5.
  // A: [0,10,10,20,40]: sum i x = 0+20+30+80+200 = 330 -> 660/400 - 1.2 = 0.45.
  // B: [5,10,10,25,30]: 5+20+30+100+150 = 305 -> 610/400 - 1.2 = 0.325.
  // D: [5,20,25,30,40]: 5+40+75+120+200 = 440 -> 880/600 - 1.2 = 0.26667.
  CHECK(s.gini.mean() == Approx((0.45 + 2 * 0.325 + 880.0 / 600.0 - 1.2) / 4.0));
  CHECK(s.gini.max == Approx(0.45));

  // Top 3: A (40+20+10)/80 = 0.875, B 65/80 = 0.8125, D 95/120 = 0.79167.
  // Bottom 3: A (0+10+10)/80 = 0.25, B 25/80 = 0.3125, D 50/120 = 0.41667.
  CHECK(s.top3_share.mean() == Approx((0.875 + 2 * 0.8125 + 95.0 / 120.0) / 4.0));
  CHECK(s.bottom3_share.mean() == Approx((0.25 + 2 * 0.3125 + 50.0 / 120.0) / 4.0));

  // The overall line pools every (layer, iteration): one layer, so the same numbers.
  CHECK(r.overall.max_over_mean.mean() == Approx(s.max_over_mean.mean()));
  CHECK(r.overall.gini.n == 4);
}

TEST_CASE("trace stats: turnover of the hottest set", "[trace-stats]") {
  // Hottest 2: A {0 (40), 4 (20)}; B {1 (30), 4 (25)}: expert 1 is new -> 1/2; C the same
  // set -> 0; D {3 (40), 1 (30)}: expert 3 is new -> 1/2. Mean 1/3 over 3 pairs, max 1/2.
  const TraceStatsReport r = stats_of(abcd(), 2);
  const auto& t = r.layers[0].turnover;
  CHECK(t.n == 3);
  CHECK(t.mean() == Approx(1.0 / 3.0));
  CHECK(t.max == Approx(0.5));

  // Hottest 1: A {0}, B {1} -> 1, C {1} -> 0, D {3} -> 1: mean 2/3.
  CHECK(stats_of(abcd(), 1).layers[0].turnover.mean() == Approx(2.0 / 3.0));

  // Ties go to the lower index: with experts 0..2 tied, the hottest 2 are {0, 1} every time.
  const auto tied = stats_of({make_iteration({{{5, 5, 5, 1}}}), make_iteration({{{5, 5, 5, 1}}})}, 2);
  CHECK(tied.layers[0].turnover.mean() == 0.0);
  // All experts in the hot set: nothing can change.
  CHECK(stats_of(abcd(), 5).layers[0].turnover.max == 0.0);
}

TEST_CASE("trace stats: largest swing within 3 iterations", "[trace-stats]") {
  // Window A..C: expert 0 40/5 = 8, expert 1 30/max(0, 1) = 30, expert 2 10/10 = 1, expert 3
  // 1, expert 4 25/20 = 1.25 -> 30. Window B..D: expert 2 20/10 = 2, expert 3 40/10 = 4 -> 4.
  const TraceStatsReport r = stats_of(abcd(), 2);
  const auto& sw = r.layers[0].swing3;
  CHECK(sw.n == 2);
  CHECK(sw.max == Approx(30.0));
  CHECK(sw.mean() == Approx(17.0));
  CHECK(r.overall.swing3.max == Approx(30.0));

  // Fewer than 3 iterations: no window, no swing.
  auto two = abcd();
  two.resize(2);
  CHECK(stats_of(two, 2).layers[0].swing3.n == 0);

  // The ring of 3 keeps going: a rise over 3 iterations (2 -> 8 -> 64) is caught as 32 only
  // in the window that holds both ends, and a window that starts later sees 8.
  std::vector<IterationCounts> rise;
  for (std::int64_t v : {2, 2, 8, 64, 64, 64}) rise.push_back(make_iteration({{{v, 100}}}));
  const auto rr = stats_of(rise, 1);
  CHECK(rr.layers[0].swing3.n == 4);
  CHECK(rr.layers[0].swing3.max == Approx(32.0));  // window 2, 8, 64
  CHECK(rr.layers[0].swing3.min == Approx(1.0));   // window 64, 64, 64 (and 100s throughout)
}

TEST_CASE("trace stats: extremes, empty layers, pooling over layers", "[trace-stats]") {
  // Layer 0: one expert takes everything: max/mean 4, CV sqrt(3), Gini (n-1)/n = 0.75,
  // top 3 1.0, bottom 3 0. Layer 1: even: 1, 0, 0, 3/4, 3/4. Layer 2: nothing routed.
  const auto it = make_iteration({{{8, 0, 0, 0}}, {{2, 2, 2, 2}}, {{0, 0, 0, 0}}});
  const TraceStatsReport r = stats_of({it, it, it}, 1);
  const auto& one = r.layers[0];
  CHECK(one.max_over_mean.mean() == Approx(4.0));
  // Loads 8,0,0,0: mean 2, deviations 6,-2,-2,-2, variance 48/4 = 12, CV sqrt(12)/2 = sqrt(3).
  CHECK(one.cv.mean() == Approx(std::sqrt(3.0)));
  CHECK(one.gini.mean() == Approx(0.75));
  CHECK(one.top3_share.mean() == Approx(1.0));
  CHECK(one.bottom3_share.mean() == Approx(0.0).margin(1e-12));
  const auto& even = r.layers[1];
  CHECK(even.max_over_mean.mean() == Approx(1.0));
  CHECK(even.cv.mean() == Approx(0.0).margin(1e-12));
  CHECK(even.gini.mean() == Approx(0.0).margin(1e-12));
  CHECK(even.top3_share.mean() == Approx(0.75));
  const auto& empty = r.layers[2];
  CHECK(empty.empty_iterations == 3);
  CHECK(empty.max_over_mean.n == 0);
  CHECK(empty.turnover.n == 2);  // the hot set is still defined (ties: expert 0)
  CHECK(empty.turnover.mean() == 0.0);
  CHECK(empty.swing3.max == 0.0);  // 0 / max(0, 1)

  // Overall pools the (layer, iteration) values of the non-empty layers: max/mean (4 + 1) / 2.
  CHECK(r.overall.max_over_mean.n == 6);
  CHECK(r.overall.max_over_mean.mean() == Approx(2.5));
  CHECK(r.overall.max_over_mean.max == Approx(4.0));
  CHECK(r.overall.empty_iterations == 3);
  CHECK(r.overall.assignments == 3 * (8 + 8));

  // Fewer than 3 experts: the "top 3" is every expert.
  CHECK(stats_of({make_iteration({{{3, 1}}})}, 1).layers[0].top3_share.mean() == Approx(1.0));

  // Text and JSON: a row per layer plus "all"; summaries without values are null.
  const std::string text = moesim::format_trace_stats(r, "memory");
  CHECK_THAT(text, Contains("3 iterations; 3 MoE layers, 1 GPUs, 4 experts; hottest set k = 1"));
  CHECK_THAT(text, Contains("  all"));
  CHECK_THAT(text, Contains("3 (layer, iteration) pairs had no assignment"));
  const auto j = moesim::trace_stats_json(r, "memory");
  CHECK(j["layers"].size() == 3);
  CHECK(j["layers"][2]["max_over_mean"]["mean"].is_null());
  CHECK(j["overall"]["max_over_mean"]["mean"].get<double>() == Approx(2.5));
  // Swings: layer 0's idle experts give 0 / max(0, 1) = 0, its busy one 8/8, layer 1 2/2.
  CHECK(j["overall"]["swing3"]["max"].get<double>() == Approx(1.0));
  CHECK(j["shape"]["experts"] == 4);
}

TEST_CASE("trace stats: bad input", "[trace-stats]") {
  TraceStatsOptions o;
  o.hot_k = 6;
  CHECK_THROWS_WITH(TraceStats(TraceShape{1, 1, 5}, o),
                    Contains("hottest-set size 6 is out of range; allowed 1..5"));
  o.hot_k = 0;
  CHECK_THROWS_AS(TraceStats(TraceShape{1, 1, 5}, o), InputError);
  o.hot_k = 1;
  CHECK_THROWS_AS(TraceStats(TraceShape{0, 1, 5}, o), InputError);
  TraceStats st(TraceShape{1, 2, 5}, o);
  CHECK_THROWS_WITH(
      st.add(make_iteration({{{1, 2, 3}}})),
      Contains("has 1 MoE layers, 1 GPUs, 3 experts; the trace declared 1 MoE layers, 2 GPUs, 5 experts"));

  MemoryTrace none(TraceShape{1, 1, 2}, {});
  CHECK_THROWS_WITH(moesim::compute_trace_stats(none, o, -1), Contains("has no iterations"));
}

TEST_CASE("trace stats: streaming reads to the end or to a limit", "[trace-stats]") {
  MemoryTrace mem(TraceShape{1, 2, 5}, abcd());
  TraceStatsOptions o;
  o.hot_k = 2;
  const auto all = moesim::compute_trace_stats(mem, o, -1);
  CHECK(all.iterations == 4);
  CHECK(all.layers[0].swing3.max == Approx(30.0));
  mem.rewind();
  CHECK(moesim::compute_trace_stats(mem, o, 2).iterations == 2);
}

// ---------------------------------------------------------------------------------------------
// Generator dynamics
// ---------------------------------------------------------------------------------------------

TEST_CASE("generator: the new dynamics are inert when off", "[trace-stats][traces]") {
  // Off means burst_prob 0 and skew_decay_iterations 0, whatever the other new fields say:
  // the counts and the description are those of the plain generator.
  SyntheticTraceSpec plain;
  plain.tokens_per_gpu = 512;
  plain.top_k = 2;
  plain.drift_sigma = 0.2;
  plain.seed = 5;
  SyntheticTraceSpec off = plain;
  off.burst_factor = 100.0;
  off.burst_rise = 3;
  off.burst_len = 40;
  off.skew_floor = 0.3;
  const TraceShape shape{3, 4, 9};
  auto a = moesim::make_synthetic_trace(shape, plain);
  auto b = moesim::make_synthetic_trace(shape, off);
  IterationCounts x;
  IterationCounts y;
  for (int i = 0; i < 50; ++i) {
    REQUIRE(a->next(x));
    REQUIRE(b->next(y));
    REQUIRE(x.counts == y.counts);
  }
  CHECK(a->describe() == "synthetic(skew=1, drift_sigma=0.2, drift_reversion=0.05, seed=5)");
  CHECK(b->describe() == a->describe());

  off.burst_prob = 0.5;
  off.skew_decay_iterations = 100;
  CHECK_THAT(moesim::make_synthetic_trace(shape, off)->describe(),
             Contains("burst_prob=0.5, burst_factor=100, burst_rise=3, burst_len=40, "
                      "skew_decay_iterations=100, skew_floor=0.3, seed=5"));
}

TEST_CASE("generator: a burst rises over burst_rise iterations and decays", "[trace-stats][traces]") {
  // Uniform, still popularity (skew 0, no drift) over 8 experts, so the only change is the
  // burst: at age a its expert's weight is F^(a/R) while rising, F^((L+1-a)/(L+1-R)) after,
  // relative to an unboosted expert. F = 32, R = 2, L = 6: ages 1..6 give 32^0.5, 32,
  // 32^0.8, 32^0.6, 32^0.4, 32^0.2, and age 7 is back to 1.
  SyntheticTraceSpec s;
  s.tokens_per_gpu = 4'000'000;
  s.skew = 0.0;
  s.drift_sigma = 0.0;
  s.drift_reversion = 0.0;
  s.burst_prob = 0.05;
  s.burst_factor = 32.0;
  s.burst_rise = 2;
  s.burst_len = 6;
  s.seed = 11;
  auto t = moesim::make_synthetic_trace(TraceShape{1, 1, 8}, s);
  IterationCounts c;
  // Load relative to the median expert's.
  const auto relative = [](std::vector<double> v) {
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[3];
    for (double& x : v) x /= median;
    return v;
  };
  int start = -1;
  int expert = -1;
  std::vector<double> path;
  for (int i = 0; i < 400 && path.size() < 7; ++i) {
    REQUIRE(t->next(c));
    const auto rel = relative(loads_of(c, 0));
    if (start < 0) {
      const auto it = std::max_element(rel.begin(), rel.end());
      if (*it > 2.0) {
        CHECK(i > 0);  // iteration 0 has no burst
        start = i;
        expert = static_cast<int>(it - rel.begin());
        // Bursts pick among the colder half; with equal popularity that is experts 0..3.
        CHECK(expert < 4);
      }
    }
    if (start >= 0) path.push_back(rel[static_cast<std::size_t>(expert)]);
  }
  REQUIRE(path.size() == 7);
  const double expected[] = {
      std::pow(32.0, 0.5), 32.0, std::pow(32.0, 0.8), std::pow(32.0, 0.6), std::pow(32.0, 0.4),
      std::pow(32.0, 0.2), 1.0};
  // 4e6 assignments: an unboosted expert's load has a relative std-dev below 0.2 %.
  for (std::size_t a = 0; a < 7; ++a) CHECK(path[a] == Approx(expected[a]).epsilon(0.02));

  // The stats see the jump within 3 iterations, in absolute loads: from N/8 before the burst to
  // N * 32 / (32 + 7) at its peak, 256/39 = 6.56x.
  t->rewind();
  TraceStatsOptions o;
  const auto r = moesim::compute_trace_stats(*t, o, start + 3);
  CHECK(r.overall.swing3.max == Approx(256.0 / 39.0).epsilon(0.02));
}

TEST_CASE("generator: skew decays towards its floor", "[trace-stats][traces]") {
  // No drift: the log-popularity is the Zipf base scaled by g(t) = f + (1 - f) exp(-t / T).
  // With skew 1.5 and f = 0.5 the limit is exactly Zipf 0.75; at iteration 0 it is Zipf 1.5.
  SyntheticTraceSpec s;
  s.tokens_per_gpu = 4'000'000;
  s.skew = 1.5;
  s.drift_sigma = 0.0;
  s.drift_reversion = 0.0;
  s.skew_decay_iterations = 20.0;
  s.skew_floor = 0.5;
  auto t = moesim::make_synthetic_trace(TraceShape{2, 1, 16}, s);
  const auto top_share = [](double skew) {
    double h = 0.0;
    for (int r = 1; r <= 16; ++r) h += std::pow(r, -skew);
    return 1.0 / h;
  };
  const auto max_share = [](const IterationCounts& c) {
    const auto v = loads_of(c, 1);
    return *std::max_element(v.begin(), v.end()) / std::accumulate(v.begin(), v.end(), 0.0);
  };
  IterationCounts c;
  REQUIRE(t->next(c));
  CHECK(max_share(c) == Approx(top_share(1.5)).epsilon(0.01));  // 0.4456
  // Iteration 20: g = 0.5 + 0.5 / e = 0.684, so Zipf 1.5 * 0.684 = 1.026.
  for (int i = 1; i <= 20; ++i) REQUIRE(t->next(c));
  CHECK(max_share(c) == Approx(top_share(1.5 * (0.5 + 0.5 * std::exp(-1.0)))).epsilon(0.01));
  for (int i = 21; i <= 400; ++i) REQUIRE(t->next(c));
  CHECK(max_share(c) == Approx(top_share(0.75)).epsilon(0.01));  // 0.1926
  // Rewind starts from the full skew again.
  t->rewind();
  REQUIRE(t->next(c));
  CHECK(max_share(c) == Approx(top_share(1.5)).epsilon(0.01));
}

TEST_CASE("generator: new parameters are range-checked", "[trace-stats][traces]") {
  SyntheticTraceSpec s;
  s.tokens_per_gpu = 10;
  const TraceShape shape{1, 1, 4};
  const auto bad = [&](auto change, const std::string& message) {
    SyntheticTraceSpec x = s;
    change(x);
    CHECK_THROWS_WITH(moesim::make_synthetic_trace(shape, x), Contains(message));
  };
  bad([](SyntheticTraceSpec& x) { x.burst_prob = 1.5; }, "burst_prob 1.5 is out of range; allowed [0, 1]");
  bad([](SyntheticTraceSpec& x) { x.burst_factor = 0.5; }, "burst_factor 0.5 is out of range");
  bad([](SyntheticTraceSpec& x) { x.burst_rise = 4; }, "burst_rise 4 is out of range; allowed 1..3");
  bad([](SyntheticTraceSpec& x) { x.burst_len = 1; }, "burst_len 1 is out of range; allowed 2..10000");
  bad([](SyntheticTraceSpec& x) { x.skew_decay_iterations = -1; },
      "skew_decay_iterations -1 is out of range");
  bad([](SyntheticTraceSpec& x) { x.skew_floor = std::nan(""); }, "skew_floor nan is out of range");
}

// ---------------------------------------------------------------------------------------------
// Presets against the published statistics (../shared/reference/hardware-and-calibration.md,
// "Expert-load dynamics in training"), 200 iterations at the calibration batch.
// ---------------------------------------------------------------------------------------------

TEST_CASE("presets: names and lookup", "[trace-stats][presets]") {
  CHECK((moesim::synthetic_preset_names() == std::vector<std::string>{"gpt-small-16e", "qwen3-128e"}));
  CHECK_FALSE(moesim::synthetic_preset("gpt-small").has_value());
  const auto g = moesim::synthetic_preset("gpt-small-16e");
  REQUIRE(g.has_value());
  CHECK(g->top_k == 1);
  CHECK(g->tokens_per_gpu == 2048);
  CHECK(g->burst_prob > 0.0);
  const auto* q = moesim::find_synthetic_preset("qwen3-128e");
  REQUIRE(q != nullptr);
  CHECK(q->shape.experts == 128);
  CHECK(q->shape.gpus == 32);
  CHECK(q->spec.top_k == 8);
  CHECK(q->spec.tokens_per_gpu == 4096);
}

TEST_CASE("presets: gpt-small-16e matches SwiftMoE and Pro-Prophet", "[trace-stats][presets]") {
  const auto* p = moesim::find_synthetic_preset("gpt-small-16e");
  REQUIRE(p != nullptr);
  REQUIRE(p->shape.gpus == 16);
  REQUIRE(p->spec.tokens_per_gpu == 2048);
  for (std::uint64_t seed : {1, 2}) {
    SyntheticTraceSpec s = p->spec;
    s.seed = seed;
    auto t = moesim::make_synthetic_trace(p->shape, s);
    TraceStatsOptions o;
    o.hot_k = 1;
    const auto r = moesim::compute_trace_stats(*t, o, 200);
    // "The 3 heaviest experts take over 50 % of tokens and the 3 lightest under 5 % in most
    // layers": in at least 3/4 of the layers, on average over the iterations.
    int heavy = 0;
    int light = 0;
    int bursty = 0;
    for (const auto& l : r.layers) {
      heavy += l.top3_share.mean() > 0.5 ? 1 : 0;
      light += l.bottom3_share.mean() < 0.05 ? 1 : 0;
      bursty += l.swing3.max > 16.0 ? 1 : 0;
    }
    INFO("seed " << seed << ": top-3 " << r.overall.top3_share.mean() << ", bottom-3 "
                 << r.overall.bottom3_share.mean() << ", swing " << r.overall.swing3.max);
    CHECK(heavy >= 9);
    CHECK(light >= 9);
    // "One expert's load can swing more than 16x within 3 iterations": somewhere, and not
    // absurdly more.
    CHECK(r.overall.swing3.max > 16.0);
    CHECK(r.overall.swing3.max < 200.0);
    CHECK(bursty >= 6);
    CHECK(r.overall.top3_share.mean() < 0.7);
  }
}

TEST_CASE("presets: qwen3-128e matches TopoEP", "[trace-stats][presets]") {
  const auto* p = moesim::find_synthetic_preset("qwen3-128e");
  REQUIRE(p != nullptr);
  auto t = moesim::make_synthetic_trace(p->shape, p->spec);
  TraceStatsOptions o;
  o.hot_k = 8;
  const auto r = moesim::compute_trace_stats(*t, o, 200);
  // "Per-layer max/mean expert load about 7 on average, peaks 9 to 13": the mean over
  // (layer, iteration) within 7 +- 1, and the per-layer peak over the 200 iterations within
  // 9..13 on average and for most layers (a peak is a maximum: longer traces reach higher).
  double peak_sum = 0.0;
  int in_range = 0;
  for (const auto& l : r.layers) {
    peak_sum += l.max_over_mean.max;
    in_range += l.max_over_mean.max >= 9.0 && l.max_over_mean.max <= 13.0 ? 1 : 0;
  }
  const double peak_mean = peak_sum / static_cast<double>(r.layers.size());
  INFO("max/mean " << r.overall.max_over_mean.mean() << ", mean layer peak " << peak_mean << ", turnover "
                   << r.overall.turnover.mean());
  CHECK(r.overall.max_over_mean.mean() > 6.0);
  CHECK(r.overall.max_over_mean.mean() < 8.0);
  CHECK(peak_mean >= 9.0);
  CHECK(peak_mean <= 13.0);
  CHECK(in_range * 4 >= static_cast<int>(r.layers.size()) * 3);
  // "16 % to 20 % of the 8 hottest experts change between consecutive micro-batches".
  CHECK(r.overall.turnover.mean() >= 0.16);
  CHECK(r.overall.turnover.mean() <= 0.20);
}

// ---------------------------------------------------------------------------------------------
// Opening TRACE
// ---------------------------------------------------------------------------------------------

TEST_CASE("trace stats input: CSV shape scan", "[trace-stats]") {
  TempDir d;
  const std::string csv = d.write("t.csv",
                                  "\xEF\xBB\xBF# a comment\n"
                                  "iteration,layer,src_gpu,expert,tokens\n"
                                  "0,0,0,0,5\n"
                                  "0,1,2,3,7\n"
                                  "\n"
                                  "1,0,1,6,1\n");
  const TraceShape s = moesim::scan_csv_trace_shape(csv);
  CHECK(s.layers == 2);
  CHECK(s.gpus == 3);
  CHECK(s.experts == 7);

  CHECK_THROWS_WITH(moesim::scan_csv_trace_shape(d.write("h.csv", "iter,layer\n0,0\n")),
                    Contains("h.csv:1: expected the header"));
  CHECK_THROWS_WITH(
      moesim::scan_csv_trace_shape(d.write("n.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,-1,0,1\n")),
      Contains("n.csv:2: src_gpu -1 is negative"));
  CHECK_THROWS_WITH(
      moesim::scan_csv_trace_shape(d.write("x.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,0,x,1\n")),
      Contains("x.csv:2: column 'expert': 'x' is not an integer"));
  CHECK_THROWS_WITH(
      moesim::scan_csv_trace_shape(d.write("f.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,0,1\n")),
      Contains("f.csv:2: expected 5 fields"));
  CHECK_THROWS_WITH(moesim::scan_csv_trace_shape(d.write("e.csv", "iteration,layer,src_gpu,expert,tokens\n")),
                    Contains("e.csv:2: the trace has no data rows"));
  CHECK_THROWS_WITH(moesim::scan_csv_trace_shape(d.write("z.csv", "")),
                    Contains("z.csv:1: the file is empty"));
  CHECK_THROWS_WITH(moesim::scan_csv_trace_shape(d.file("missing.csv")), Contains("no such file"));
}

TEST_CASE("trace stats input: files, presets and format hooks", "[trace-stats]") {
  TempDir d;
  const std::string csv = d.write("t.csv",
                                  "iteration,layer,src_gpu,expert,tokens\n"
                                  "0,0,0,0,40\n0,0,1,2,10\n0,0,1,3,10\n0,0,0,4,20\n"
                                  "1,0,0,1,30\n1,0,0,0,5\n1,0,1,2,10\n1,0,1,3,10\n1,0,0,4,25\n");
  // Shape inferred from the rows.
  auto in = moesim::open_stats_input(csv, TraceShape{}, {});
  REQUIRE(in.source != nullptr);
  CHECK(in.iterations == -1);
  CHECK(in.top_k == 0);
  CHECK(in.source->shape().experts == 5);
  CHECK(in.source->shape().gpus == 2);
  TraceStatsOptions o;
  o.hot_k = moesim::default_hot_k(5, in.top_k);
  CHECK(o.hot_k == 1);
  const auto r = moesim::compute_trace_stats(*in.source, o, in.iterations);
  CHECK(r.iterations == 2);
  CHECK(r.layers[0].max_over_mean.max == Approx(2.5));

  // A given shape is used as is (wider than the rows) or rejected by the reader (narrower).
  CHECK(moesim::open_stats_input(csv, TraceShape{1, 4, 0}, {}).source->shape().gpus == 4);
  CHECK_THROWS_WITH(moesim::open_stats_input(csv, TraceShape{0, 0, 4}, {}),
                    Contains("expert 4 is out of range; the scenario has 4 experts"));

  // Synthetic presets.
  auto syn = moesim::open_stats_input("synthetic:gpt-small-16e:iterations=5:seed=3", TraceShape{}, {});
  CHECK(syn.iterations == 5);
  CHECK(syn.top_k == 1);
  CHECK(syn.source->shape().layers == 12);
  CHECK_THAT(syn.source->describe(), Contains("seed=3"));
  CHECK(moesim::open_stats_input("synthetic:qwen3-128e", TraceShape{2, 0, 0}, {}).source->shape().layers ==
        2);
  CHECK(moesim::open_stats_input("synthetic:qwen3-128e", TraceShape{}, {}).iterations == 200);
  CHECK_THROWS_WITH(moesim::open_stats_input("synthetic:nope", TraceShape{}, {}),
                    Contains("unknown synthetic preset 'nope'; presets: gpt-small-16e, qwen3-128e"));
  CHECK_THROWS_WITH(moesim::open_stats_input("synthetic:gpt-small-16e:iters=3", TraceShape{}, {}),
                    Contains("unknown parameter 'iters=3'"));
  CHECK_THROWS_WITH(moesim::open_stats_input("synthetic:gpt-small-16e:iterations=x", TraceShape{}, {}),
                    Contains("iterations 'x' is not a non-negative integer"));
  CHECK_THROWS_AS(moesim::open_stats_input("synthetic:gpt-small-16e:iterations=0", TraceShape{}, {}),
                  InputError);
  // A shape too large to hold one iteration in memory is refused, not allocated.
  CHECK_THROWS_WITH(moesim::open_stats_input("synthetic:gpt-small-16e", TraceShape{100000, 100000, 0}, {}),
                    Contains("at most 2^28"));
  const std::string wide = d.write("wide.csv", "iteration,layer,src_gpu,expert,tokens\n0,9999,9999,9999,1\n");
  CHECK_THROWS_WITH(
      moesim::open_stats_input(wide, TraceShape{}, {}),
      Contains("the shape 10000 MoE layers, 10000 GPUs, 10000 experts has 1000000000000 counts"));

  // Another format plugs in through a hook; CSV remains the fallback.
  const std::string fake = d.write("t.fake", "FAKE....");
  CHECK(moesim::file_starts_with(fake, "FAKE"));
  CHECK_FALSE(moesim::file_starts_with(csv, "FAKE"));
  CHECK_FALSE(moesim::file_starts_with(d.file("missing"), "FAKE"));
  TraceShape seen{-1, -1, -1};
  const std::vector<moesim::TraceFileFormat> formats = {
      {"fake", [](const std::string& p) { return moesim::file_starts_with(p, "FAKE"); },
       [&seen](const std::string&, const TraceShape& expected) -> std::unique_ptr<TraceSource> {
         seen = expected;
         return std::make_unique<MemoryTrace>(TraceShape{1, 2, 5}, abcd());
       }}};
  auto hooked = moesim::open_stats_input(fake, TraceShape{0, 2, 0}, formats);
  CHECK(hooked.source->describe() == "memory");
  CHECK(seen.gpus == 2);
  CHECK(seen.layers == 0);
  CHECK(moesim::open_stats_input(csv, TraceShape{}, formats).source->describe() == "csv(" + csv + ")");

  CHECK(moesim::default_hot_k(8, 0) == 2);
  CHECK(moesim::default_hot_k(16, 0) == 4);
  CHECK(moesim::default_hot_k(256, 0) == 8);
  CHECK(moesim::default_hot_k(2, 0) == 1);
  CHECK(moesim::default_hot_k(128, 8) == 8);
}

// The command line. Hidden (its own tag, so "[trace-stats]" does not select it) until
// `moesim trace stats` is dispatched from app/main.cpp; then tag it "[trace-stats][cli]".
namespace {

int run_cli(const std::string& args, std::string& output) {
  const fs::path log = fs::temp_directory_path() / ("moesim_trace_stats_cli_" + std::to_string(::getpid()));
  const std::string cmd = std::string(MOESIM_BINARY) + " " + args + " > " + log.string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  output = ss.str();
  fs::remove(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

TEST_CASE("moesim trace stats: table, JSON and errors", "[trace-stats][cli]") {
  TempDir d;
  const std::string csv = d.write("t.csv",
                                  "iteration,layer,src_gpu,expert,tokens\n"
                                  "0,0,0,0,40\n0,0,1,2,10\n0,0,1,3,10\n0,0,0,4,20\n"
                                  "1,0,0,1,30\n1,0,0,0,5\n1,0,1,2,10\n1,0,1,3,10\n1,0,0,4,25\n"
                                  "2,0,0,1,30\n2,0,0,0,5\n2,0,1,2,10\n2,0,1,3,10\n2,0,0,4,25\n");
  std::string out;
  REQUIRE(run_cli("trace stats " + csv + " --top 2", out) == 0);
  CHECK_THAT(out, Contains("3 iterations; 1 MoE layers, 2 GPUs, 5 experts; hottest set k = 2"));
  CHECK_THAT(out, Contains("30.0"));  // the swing of expert 1 (0 -> 30)

  REQUIRE(run_cli("trace stats " + csv + " --json --shape 1,2,6", out) == 0);
  const auto j = nlohmann::json::parse(out);
  CHECK(j["shape"]["experts"] == 6);
  CHECK(j["hot_k"] == 1);
  CHECK(j["overall"]["swing3"]["max"].get<double>() == Approx(30.0));

  REQUIRE(run_cli("trace stats synthetic:gpt-small-16e:iterations=20 --json", out) == 0);
  CHECK(nlohmann::json::parse(out)["iterations"] == 20);

  CHECK(run_cli("trace stats " + csv + " --shape 1,2", out) == 2);
  CHECK_THAT(out, Contains("--shape"));
  CHECK(run_cli("trace stats " + csv + " --top 9", out) == 2);
  CHECK_THAT(out, Contains("hottest-set size 9 is out of range"));
  CHECK(run_cli("trace stats " + d.file("missing.csv"), out) == 2);
  CHECK_THAT(out, Contains("no such file"));
  CHECK(run_cli("trace stats", out) == 2);
  CHECK(run_cli("trace stats --help", out) == 0);
  CHECK_THAT(out, Contains("synthetic:<preset>"));
}
