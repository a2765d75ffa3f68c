// DeepSeek-V3's auxiliary-loss-free load balancing (DeepSeek-V3 technical report, arXiv
// 2412.19437, section 2.1.2; Wang et al., arXiv 2408.15664): a bias per (layer, expert) is added
// to the affinity scores for the top-k selection only (the gate weights still use the raw
// scores); after every step each expert's bias drops by gamma when it was overloaded and rises by
// gamma when under-loaded. The trace is the unbiased gate's routing: the bias re-routes it
// through the score-margin model (router_model.hpp, shift_by_bias). Placement never changes.
#include <algorithm>

#include "policies/registry.hpp"
#include "policies/router_model.hpp"

namespace moesim {
namespace {

class AuxFreePolicy final : public router::RouterPolicy {
 public:
  // source: DeepSeek-V3 uses no token dropping (arXiv 2412.19437, section 2.1.2, "No Token-
  // Dropping"): capacity factor 0 = dropless.
  AuxFreePolicy(const PolicyContext& ctx, Cfg& p) : RouterPolicy(ctx, p, "auxfree", 0.0, 0.1) {
    // source: DeepSeek-V3 report section 4.2: bias update speed gamma = 0.001 for the first
    // 14.3T tokens (0 for the last 500B).
    bias_step_ = p.get_double("bias_step", 1e-3, 0.0, 1.0);
    // Assumption (nothing published): the spread of a token's sigmoid affinity for an expert near
    // the top-k cut; a bias of `score_margin` multiplies the expert's selection odds by e. With
    // 0.05 a 2x overload is corrected in about 0.05 ln 2 / 0.001 = 35 steps.
    score_margin_ = p.get_double("score_margin", 0.05, 1e-9, 1e9);
    // The bias is global per layer (the report updates it from the whole batch's load).
    bias_.assign(static_cast<std::size_t>(ctx.moe_layers) * ctx.experts, 0.0);
  }

 protected:
  router::RouteStats route(int layer, const std::int64_t* counts, const Placement& pl, std::int64_t* out) override {
    router::RouteStats st = router::shift_by_bias(counts, pl.gpus, ctx_.experts,
                                                  bias_.data() + static_cast<std::size_t>(layer) * ctx_.experts,
                                                  score_margin_, out);
    st.quality_dropped = router::cost_of(redirect_cost_, st.redirected);
    return st;
  }

  // The bias moves on the loads the biased gate produced this step (the same routing dispatch
  // used: the bias has not changed since).
  void observe(int, const IterationCounts& counts, const Placement& current) override {
    const int E = ctx_.experts, G = counts.shape.gpus;
    std::vector<std::int64_t> shifted(static_cast<std::size_t>(G) * E), load(static_cast<std::size_t>(E));
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      double* b = bias_.data() + static_cast<std::size_t>(l) * E;
      (void)router::shift_by_bias(counts.layer_ptr(l), G, E, b, score_margin_, shifted.data());
      expert_loads(shifted.data(), G, E, load.data());
      router::update_bias(load.data(), E, bias_step_, b);
    }
    (void)current;
  }

  [[nodiscard]] nlohmann::json own_parameters() const override {
    double lo = 0.0, hi = 0.0;
    for (double b : bias_) {
      lo = std::min(lo, b);
      hi = std::max(hi, b);
    }
    return {{"bias_step", bias_step_}, {"score_margin", score_margin_}, {"bias_min", lo}, {"bias_max", hi}};
  }

 private:
  double bias_step_ = 1e-3;
  double score_margin_ = 0.05;
  std::vector<double> bias_;  // [layer * experts + e]
};

}  // namespace

PolicyInfo moesim_policy_auxfree() {
  return {"auxfree",
          "DeepSeek-V3 auxiliary-loss-free balancing: a per-expert selection bias updated by +-gamma each step "
          "(arXiv 2412.19437; Wang et al., arXiv 2408.15664), score-margin re-routing model",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<AuxFreePolicy>(ctx, p);
          }};
}

}  // namespace moesim
