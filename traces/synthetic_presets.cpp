// The synthetic generator's presets: settings calibrated to published statistics.
#include <optional>
#include <string>
#include <vector>

#include "traces/trace.hpp"

namespace moesim {

// ---------------------------------------------------------------------------------------------
// Presets (calibration in docs/trace-format.md, "Generator dynamics and presets")
// ---------------------------------------------------------------------------------------------

const std::vector<SyntheticPreset>& synthetic_presets() {
  static const std::vector<SyntheticPreset> presets = [] {
    std::vector<SyntheticPreset> v;
    {
      // GPT-Small with 16 experts top-1 (SwiftMoE, Pro-Prophet): 12 MoE layers, 16 GPUs x 2048
      // tokens. Zipf 1.1 puts 58 % on the top 3 and 5.1 % on the bottom 3, which the walk's
      // spread turns into about 59 % and 4 % on average; the slow walk (time constant 50
      // iterations) makes loads grow and shrink; a burst per layer every 50 iterations or so
      // lifts a cold expert past 16x within 3 iterations.
      SyntheticPreset p;
      p.name = "gpt-small-16e";
      p.description =
          "GPT-Small MoE, 16 experts top-1: top 3 experts > 50 % of tokens, 3 lightest < 5 %, "
          "bursts > 16x within 3 iterations";
      p.shape = TraceShape{12, 16, 16};
      p.spec.tokens_per_gpu = 2048;
      p.spec.top_k = 1;
      p.spec.skew = 1.1;
      p.spec.drift_sigma = 0.08;
      p.spec.drift_reversion = 0.02;
      p.spec.burst_prob = 0.02;
      p.spec.burst_factor = 32.0;
      p.spec.burst_rise = 2;
      p.spec.burst_len = 6;
      v.push_back(p);
    }
    {
      // Qwen3-30B-A3B, 128 experts top-8 (TopoEP): 48 MoE layers, 32 GPUs x 4096 tokens.
      // Zipf 0.54 gives max/mean about 7; a fast, strongly reverting walk (log-popularity
      // within about 0.21 of the base, 60 % of it pulled back each iteration) turns over 18 %
      // of the 8 hottest experts per iteration while keeping the peaks near 11.5. No bursts:
      // none were measured, and a cold expert lifted 16x would push max/mean past the peaks.
      SyntheticPreset p;
      p.name = "qwen3-128e";
      p.description =
          "Qwen3-30B-A3B, 128 experts top-8: max/mean about 7 (peaks 9-13), 16-20 % turnover of "
          "the 8 hottest experts per iteration";
      p.shape = TraceShape{48, 32, 128};
      p.spec.tokens_per_gpu = 4096;
      p.spec.top_k = 8;
      p.spec.skew = 0.54;
      p.spec.drift_sigma = 0.19;
      p.spec.drift_reversion = 0.6;
      v.push_back(p);
    }
    return v;
  }();
  return presets;
}

std::vector<std::string> synthetic_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : synthetic_presets()) names.push_back(p.name);
  return names;
}

const SyntheticPreset* find_synthetic_preset(const std::string& name) {
  for (const auto& p : synthetic_presets()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::optional<SyntheticTraceSpec> synthetic_preset(const std::string& name) {
  const SyntheticPreset* p = find_synthetic_preset(name);
  if (p == nullptr) return std::nullopt;
  return p->spec;
}

}  // namespace moesim
