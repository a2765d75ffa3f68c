// Null (zero-computation) experts: AdaMoE (Zeng et al., arXiv 2406.13233) adds null experts to
// the top-k choice so that a token may use fewer real experts; MoE++ (Jin et al., arXiv
// 2410.07348) adds zero, copy and constant experts. An assignment to a null expert is neither
// sent nor computed. Model: a share `null_share` of each source's assignments goes to null
// experts, taken from its experts in proportion to its counts (a null expert competes with every
// real one alike: assumption); nothing else changes. The papers report no loss of quality, so a
// null assignment costs `null_cost` (default 0) of a drop.
#include <fmt/format.h>

#include <cmath>

#include "policies/registry.hpp"
#include "policies/router_model.hpp"

namespace moesim {
namespace {

class NullExpertsPolicy final : public router::RouterPolicy {
 public:
  // Assumption: dropless as the Mixtral fine-tuning AdaMoE reports on; nothing is redirected to
  // another real expert, so there is no redirect_cost.
  NullExpertsPolicy(const PolicyContext& ctx, Cfg& p) : RouterPolicy(ctx, p, "nullexperts", 0.0, -1.0) {
    // source: AdaMoE (arXiv 2406.13233, abstract): on Mixtral-8x7B fine-tuned for ARC-C it cuts
    // the average expert load (FLOPs) by 14.5 % while raising accuracy by 1.69 %. MoE++ reports
    // 1.1-2.1x expert throughput (a null share between about 9 % and 52 %).
    null_share_ = p.get_double("null_share", 0.145, 0.0, 1.0);
    // source: AdaMoE and MoE++ report equal or better quality with their null experts.
    null_cost_ = p.get_double("null_cost", 0.0, 0.0, 1.0);
  }

 protected:
  router::RouteStats route(int, const std::int64_t* counts, const Placement& pl, std::int64_t* out) override {
    const int E = ctx_.experts, G = pl.gpus;
    router::RouteStats st;
    std::vector<double> w(static_cast<std::size_t>(E));
    std::vector<std::int64_t> nulls(static_cast<std::size_t>(E));
    for (int s = 0; s < G; ++s) {
      const std::int64_t* row = counts + static_cast<std::size_t>(s) * E;
      std::int64_t total = 0;
      for (int e = 0; e < E; ++e) {
        w[e] = static_cast<double>(row[e]);
        total += row[e];
      }
      const std::int64_t n = std::llround(null_share_ * static_cast<double>(total));
      router::apportion(n, w.data(), E, nulls.data());
      for (int e = 0; e < E; ++e) out[static_cast<std::size_t>(s) * E + e] = row[e] - nulls[e];
      st.removed += n;
    }
    st.quality_dropped = router::cost_of(null_cost_, st.removed);
    return st;
  }

  [[nodiscard]] nlohmann::json own_parameters() const override {
    return {{"null_share", null_share_}, {"null_cost", null_cost_}};
  }

 private:
  double null_share_ = 0.145;
  double null_cost_ = 0.0;
};

}  // namespace

PolicyInfo moesim_policy_nullexperts() {
  return {"nullexperts",
          "Null (zero-computation) experts, AdaMoE (arXiv 2406.13233) / MoE++ (arXiv 2410.07348): a share of the "
          "assignments is neither sent nor computed",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<NullExpertsPolicy>(ctx, p);
          }};
}

}  // namespace moesim
