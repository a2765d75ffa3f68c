#pragma once
// Router-side policies (auxfree, globalbatch, expertchoice, nullexperts, locmoe) change where
// tokens go, not where experts live. The trace records only what the unbalanced gate chose
// ([src][expert] counts), not how close each token's next choices scored, so these policies share
// one documented *score-margin model* of where an assignment taken from expert e goes
// (docs/policies-router.md, "The score-margin model"):
//   - `source`: to the experts ranked next for that source, taken to be proportional to the
//     source's own counts of them (a source that often picks expert j also often ranks it next);
//   - `room`: to the under-loaded experts, in proportion to how far each is below its target
//     (what a balancer that raises under-loaded experts' scores does);
//   - `uniform`: evenly over the candidate experts.
// Every split of an integer count is exact: largest remainder, ties to the lower index.
// Redirected assignments are still computed but by a lower-scored expert: each counts as
// `redirect_cost` of a dropped assignment in the convergence model (an assumption, a parameter).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "policies/common.hpp"
#include "sim/policy.hpp"

namespace moesim::router {

enum class NextChoice { Source, Room, Uniform };

[[nodiscard]] NextChoice parse_next_choice(Cfg& p, const std::string& key, const std::string& def,
                                           const std::vector<std::string>& allowed);
[[nodiscard]] std::string next_choice_name(NextChoice c);

// out[i] = amount split over n cells in proportion to weight[i] >= 0: floors, then the remainder
// one by one to the largest fractional parts (ties to the lower index). Zero total weight: all 0
// (the caller decides the fallback). Sum of out == amount whenever some weight is > 0.
void apportion(std::int64_t amount, const double* weight, int n, std::int64_t* out);

// What one layer's routing change did, in assignments.
struct RouteStats {
  std::int64_t redirected = 0;       // moved from the gate's expert to another one
  std::int64_t removed = 0;          // taken out of the dispatch (null experts): not sent, not computed
  std::int64_t quality_dropped = 0;  // drop-equivalents charged to convergence (on top of capacity drops)
};

// llround(cost * n): the quality-equivalent drops of n assignments at `cost` each (per layer;
// rounding to the nearest assignment is the model's only rounding).
[[nodiscard]] std::int64_t cost_of(double cost, std::int64_t n);

// Moves assignments so that each expert's total (over the G sources) becomes target[e]
// (sum of targets == sum of counts): an expert above its target gives up the excess, taken from
// its sources in proportion to what each sent; each source's taken assignments go to the experts
// below their target, weighted by `mode` (Source: the source's own counts of them, falling back
// to Room when they are all 0; Room: the target minus the total; Uniform: evenly). Row sums are
// kept exactly; with Room the column totals reach their targets up to one assignment per source.
// counts, out: [G][E].
[[nodiscard]] RouteStats rebalance_to_targets(const std::int64_t* counts, int G, int E, const std::int64_t* target,
                                              NextChoice mode, std::int64_t* out);

// Auxiliary-loss-free top-k selection shifted by a per-expert bias: a bias b multiplies an
// expert's selection odds at every source by exp(b / margin) (a logistic score-margin model:
// `margin` is the spread of a token's affinity for an expert near the top-k cut). Each source's
// assignments are re-apportioned by n[s][e] * exp(b[e] / margin); row sums are kept; an expert a
// source never chose stays at 0 for it (its margin there is unknown). redirected = assignments
// gained by experts over the gate's counts.
[[nodiscard]] RouteStats shift_by_bias(const std::int64_t* counts, int G, int E, const double* bias, double margin,
                                       std::int64_t* out);

// DeepSeek-V3's bias update after a step: b[e] += step * sign(mean - load[e]) (overloaded experts
// lose `step`, under-loaded ones gain it, one exactly at the mean keeps its bias).
void update_bias(const std::int64_t* load, int E, double step, double* bias);

// The part the router-side policies share: a fixed round-robin placement (slot i holds expert
// i mod E, as static's), dispatch of the re-routed counts evenly over replicas with an optional
// per-replica capacity, the default sync plan, and the common parameters. A subclass implements
// route(): the layer's [src][expert] counts after the router change.
class RouterPolicy : public Policy {
 public:
  // `cf_default`: the system's capacity factor (0 = dropless); `redirect_cost_default`: the
  // quality cost of a redirected assignment, in drops (the callers name their sources).
  // `capacity_per_default`: "replica" (each replica accepts cf k T / S summed over sources, as
  // symi's and eplb's) or "source" (each source may send an expert ceil(k T / E cf), floored at
  // min_capacity, as static's DeepSpeed rule; not padded here).
  RouterPolicy(const PolicyContext& ctx, Cfg& p, std::string name, double cf_default, double redirect_cost_default,
               const std::string& capacity_per_default = "replica");

  [[nodiscard]] std::string name() const override { return name_; }
  [[nodiscard]] Placement initial_placement() override;
  void dispatch(int layer, const std::int64_t* counts, const Placement& placement, LayerDispatch& out) override;
  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override;
  [[nodiscard]] SyncPlan sync_plan(int iteration, const Placement& current, const Placement& next) override;
  [[nodiscard]] nlohmann::json parameters() const override;

  // The counts route() gives for `counts` on `placement` (for tests and the docs' figures).
  [[nodiscard]] RouteStats routed_counts(int layer, const std::int64_t* counts, const Placement& placement,
                                         std::vector<std::int64_t>& out);

 protected:
  virtual RouteStats route(int layer, const std::int64_t* counts, const Placement& placement,
                           std::int64_t* out) = 0;
  // Called after each iteration with the gate's counts (auxfree updates its bias here).
  virtual void observe(int /*iteration*/, const IterationCounts& /*counts*/, const Placement& /*current*/) {}
  [[nodiscard]] virtual nlohmann::json own_parameters() const = 0;

  double redirect_cost_ = 0.1;
  bool prefer_local_node_ = false;  // locmoe: send to a same-node replica when there is one
  std::int64_t min_capacity_ = 0;

 private:
  std::string name_;
  bool has_capacity_ = true;
  bool has_redirect_cost_ = true;
  double capacity_factor_ = 0.0;
  std::int64_t replica_capacity_ = -1;
  std::string capacity_per_ = "replica";
  std::int64_t source_capacity_ = -1;
  bool shard_optimizer_ = true;
  std::vector<std::int64_t> routed_;  // reused [src][expert] buffer
};

}  // namespace moesim::router
