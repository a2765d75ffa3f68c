// Global-batch load balancing (Qiu et al., "Demons in the Detail: On Implementing Load Balancing
// Loss for Training Specialized Mixture-of-Expert Models", arXiv 2501.11873): the load-balancing
// loss is computed on expert frequencies gathered over the global batch (all data-parallel
// ranks and micro-batches) instead of each micro-batch, so a micro-batch may stay unbalanced (a
// domain's tokens may prefer their experts) while the batch as a whole is balanced.
//
// Model (docs/policies-router.md): the trace is the gate's routing under a weak loss; the
// balancing pressure moves each expert's total over all sources `strength` of the way to the mean
// (scope global: column totals only, each source keeps its own deviation, i.e. the per-micro-batch
// imbalance stays) or each source's own counts to their mean (scope micro: the micro-batch loss).
// Moved assignments go to the under-loaded experts by the score-margin model and cost
// `redirect_cost` of a drop each: global balancing moves fewer assignments, which is the quality
// difference the paper reports. Capacity is per (source, expert) by default (DeepSpeed's rule),
// so the per-micro-batch imbalance that stays still drops tokens.
#include <fmt/format.h>

#include <cmath>

#include "policies/registry.hpp"
#include "policies/router_model.hpp"

namespace moesim {
namespace {

class GlobalBatchPolicy final : public router::RouterPolicy {
 public:
  // Assumption: capacity factor 1 per (source, expert), static's default, so that a comparison
  // with static isolates the router change.
  GlobalBatchPolicy(const PolicyContext& ctx, Cfg& p) : RouterPolicy(ctx, p, "globalbatch", 1.0, 0.1, "source") {
    scope_ = p.get_enum("scope", "global", {"global", "micro"});
    // Assumption: the balance loss at its usual coefficient (1e-2, Switch Transformer) nearly
    // evens the expert loads; 1 = all the way to the mean.
    strength_ = p.get_double("strength", 1.0, 0.0, 1.0);
    next_ = router::parse_next_choice(p, "next_choice", "room", {"source", "room", "uniform"});
  }

 protected:
  router::RouteStats route(int, const std::int64_t* counts, const Placement& pl, std::int64_t* out) override {
    const int E = ctx_.experts, G = pl.gpus;
    router::RouteStats st;
    if (scope_ == "global") {
      st = router::rebalance_to_targets(counts, G, E, targets(counts, G, E).data(), next_, out);
    } else {
      for (int s = 0; s < G; ++s) {
        const std::int64_t* row = counts + static_cast<std::size_t>(s) * E;
        const router::RouteStats r =
            router::rebalance_to_targets(row, 1, E, targets(row, 1, E).data(), next_, out + static_cast<std::size_t>(s) * E);
        st.redirected += r.redirected;
      }
    }
    st.quality_dropped = router::cost_of(redirect_cost_, st.redirected);
    return st;
  }

  [[nodiscard]] nlohmann::json own_parameters() const override {
    return {{"scope", scope_}, {"strength", strength_}, {"next_choice", router::next_choice_name(next_)}};
  }

 private:
  // Each expert's total moved `strength` of the way to the mean, as integers summing to the
  // total (largest remainder).
  [[nodiscard]] std::vector<std::int64_t> targets(const std::int64_t* counts, int G, int E) const {
    std::vector<std::int64_t> load(static_cast<std::size_t>(E), 0), t(static_cast<std::size_t>(E));
    expert_loads(counts, G, E, load.data());
    std::int64_t total = 0;
    for (std::int64_t x : load) total += x;
    const double mean = static_cast<double>(total) / E;
    std::vector<double> w(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) w[e] = static_cast<double>(load[e]) + strength_ * (mean - static_cast<double>(load[e]));
    router::apportion(total, w.data(), E, t.data());
    return t;
  }

  std::string scope_ = "global";
  double strength_ = 1.0;
  router::NextChoice next_ = router::NextChoice::Room;
};

}  // namespace

PolicyInfo moesim_policy_globalbatch() {
  return {"globalbatch",
          "Global-batch load-balancing loss (Qiu et al., arXiv 2501.11873): expert loads balanced over the global "
          "batch, per-micro-batch imbalance kept; score-margin re-routing model",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<GlobalBatchPolicy>(ctx, p);
          }};
}

}  // namespace moesim
