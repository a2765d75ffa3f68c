#pragma once
// The auxiliary load-balancing loss coefficient of a synthetic trace (trace.aux_loss_coefficient)
// mapped to the generator's imbalance: a log-linear interpolation between two published anchors,
// documented in docs/trace-format.md ("Auxiliary loss coefficient").
#include "traces/trace.hpp"

namespace moesim {

// The generator setting at one published coefficient.
struct AuxLossAnchor {
  double coefficient = 0.0;
  double skew = 0.0;
  double drift_sigma = 0.0;
  double sampling_dispersion = 1.0;
  const char* source = "";
};

// 1e-5: the SwiftMoE paper's (weak) coefficient, its Table 1 survival at capacity factor 1.
[[nodiscard]] const AuxLossAnchor& aux_loss_weak_anchor();
// 1e-2: Switch Transformer's coefficient, token drops under 1 % at capacity factor 1.
[[nodiscard]] const AuxLossAnchor& aux_loss_strong_anchor();

// Sets spec.skew, spec.drift_sigma and spec.sampling_dispersion for `coefficient`, each linear in
// log10(coefficient) between the anchors. The coefficient must lie between the anchors (nothing
// published backs an extrapolation): outside, or not finite, throws std::invalid_argument.
void apply_aux_loss_coefficient(double coefficient, SyntheticTraceSpec& spec);

}  // namespace moesim
