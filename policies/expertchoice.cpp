// Expert-choice routing (Zhou et al., "Mixture-of-Experts with Expert Choice Routing", NeurIPS
// 2022, arXiv 2202.09368): each expert picks its top-C tokens of the batch, C = n k c / E (n
// tokens, E experts, c the capacity factor, k the trace model's top-k so that c = 1 keeps its
// compute): every expert processes exactly C, nothing is cut by capacity, a token may get any
// number of experts, and a token no expert picks passes through the residual connection only.
//
// Model (docs/policies-router.md): an expert takes C of the assignments the gate gave it (the
// highest-affinity ones; from its sources in proportion to what each sent) or all of them and
// fills up to C with its next-highest tokens, from the sources in proportion to `fill_from`.
// Tokens left with no expert, for the convergence model: a gate assignment is unchosen with
// probability u = U / R (U unchosen of R), a token gets a filler with probability about
// min(1, F / n) (F fillers), independently, so n u^k (1 - min(1, F / n)) tokens get no expert;
// each costs `residual_cost` x k drops, and every filler that replaced an unchosen assignment
// (min(U, F)) costs `redirect_cost`.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "policies/registry.hpp"
#include "policies/router_model.hpp"

namespace moesim {
namespace {

class ExpertChoicePolicy final : public router::RouterPolicy {
 public:
  // No dispatch capacity of its own (loads are exactly C); redirect cost the shared assumption.
  ExpertChoicePolicy(const PolicyContext& ctx, Cfg& p) : RouterPolicy(ctx, p, "expertchoice", -1.0, 0.1) {
    // source: the paper's capacity factor is c = average experts per token (EC-CF2: c = 2,
    // compared with top-2 GShard); here C = tokens * k / E * capacity_factor with the trace's k,
    // so 1 keeps the trace model's expert compute (the paper's compute-matched comparison).
    ec_capacity_factor_ = p.get_double("capacity_factor", 1.0, 1e-6, 1e6);
    if (ec_capacity_factor_ * ctx.top_k > ctx.experts) {
      p.fail("capacity_factor", fmt::format("{} x top_k {} > {} experts: an expert would have to take more tokens than "
                                            "the batch has; allowed (0, {}]",
                                            ec_capacity_factor_, ctx.top_k, ctx.experts,
                                            static_cast<double>(ctx.experts) / ctx.top_k));
    }
    // Assumption: a token no expert picks loses what a token dropped by all its k experts loses.
    residual_cost_ = p.get_double("residual_cost", 1.0, 0.0, 1.0);
    // Assumption: an expert's next-best tokens come from the sources in proportion to their tokens
    // (affinity does not depend on where a token is); `unchosen`: in proportion to the
    // assignments the source's experts did not take (next-best tokens are those that lost theirs).
    fill_from_ = p.get_enum("fill_from", "tokens", {"tokens", "unchosen"});
  }

 protected:
  router::RouteStats route(int, const std::int64_t* counts, const Placement& pl, std::int64_t* out) override {
    const int E = ctx_.experts, G = pl.gpus, k = ctx_.top_k;
    std::vector<std::int64_t> load(static_cast<std::size_t>(E)), part(static_cast<std::size_t>(G)),
        unchosen(static_cast<std::size_t>(G), 0), sent(static_cast<std::size_t>(G), 0);
    expert_loads(counts, G, E, load.data());
    std::int64_t R = 0;
    for (std::int64_t x : load) R += x;
    const auto C = static_cast<std::int64_t>(std::floor(ec_capacity_factor_ * static_cast<double>(R) / E));
    std::vector<double> w(static_cast<std::size_t>(G));
    std::int64_t U = 0, F = 0;
    // Each expert keeps min(load, C) of its gate assignments.
    for (int e = 0; e < E; ++e) {
      const std::int64_t keep = std::min(load[e], C);
      for (int s = 0; s < G; ++s) w[s] = static_cast<double>(counts[static_cast<std::size_t>(s) * E + e]);
      apportion_col(keep, w, part);
      for (int s = 0; s < G; ++s) {
        const std::int64_t n = counts[static_cast<std::size_t>(s) * E + e];
        out[static_cast<std::size_t>(s) * E + e] = part[s];
        unchosen[s] += n - part[s];
        sent[s] += n;
      }
      U += load[e] - keep;
    }
    // Under-loaded experts fill up to C.
    for (int s = 0; s < G; ++s) w[s] = static_cast<double>(fill_from_ == "unchosen" ? unchosen[s] : sent[s]);
    double wsum = 0.0;
    for (double x : w) wsum += x;
    if (wsum <= 0.0)
      for (int s = 0; s < G; ++s) w[s] = static_cast<double>(sent[s]);
    for (int e = 0; e < E; ++e) {
      const std::int64_t need = C - std::min(load[e], C);
      if (need <= 0) continue;
      apportion_col(need, w, part);
      for (int s = 0; s < G; ++s) out[static_cast<std::size_t>(s) * E + e] += part[s];
      F += need;
    }
    router::RouteStats st;
    st.redirected = std::min(U, F);
    const double tokens = static_cast<double>(R) / k;
    if (R > 0 && tokens > 0.0) {
      const double u = static_cast<double>(U) / static_cast<double>(R);
      const double none = tokens * std::pow(u, k) * std::max(0.0, 1.0 - static_cast<double>(F) / tokens);
      st.quality_dropped = std::llround(residual_cost_ * k * none) + router::cost_of(redirect_cost_, st.redirected);
    }
    return st;
  }

  [[nodiscard]] nlohmann::json own_parameters() const override {
    return {{"capacity_factor", ec_capacity_factor_}, {"residual_cost", residual_cost_}, {"fill_from", fill_from_}};
  }

 private:
  void apportion_col(std::int64_t amount, const std::vector<double>& w, std::vector<std::int64_t>& part) const {
    router::apportion(amount, w.data(), static_cast<int>(w.size()), part.data());
  }

  double ec_capacity_factor_ = 1.0;
  double residual_cost_ = 1.0;
  std::string fill_from_ = "tokens";
};

}  // namespace

PolicyInfo moesim_policy_expertchoice() {
  return {"expertchoice",
          "Expert-choice routing (Zhou et al., NeurIPS 2022, arXiv 2202.09368): every expert takes exactly "
          "C = n k c / E tokens, no capacity drops, tokens without an expert charged to convergence",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<ExpertChoicePolicy>(ctx, p);
          }};
}

}  // namespace moesim
