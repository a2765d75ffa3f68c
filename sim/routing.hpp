#pragma once
// Routing data as the simulator and the policies see it: token counts per (layer, source GPU,
// expert) of one iteration, and the source that yields them iteration by iteration. traces/
// implements the sources (files, importers, the generator); policies see only these types.
#include <cstdint>
#include <string>
#include <vector>

namespace moesim {

struct TraceShape {
  int layers = 0;  // MoE layers (the trace's layer index counts MoE layers only)
  int gpus = 0;    // source GPUs
  int experts = 0;
};

// Counts of one iteration: index [layer][src][expert], flattened. A count is a number of
// (token, expert) assignments: with top-k each token contributes k.
struct IterationCounts {
  TraceShape shape;
  std::vector<std::int64_t> counts;

  void reset(const TraceShape& s) {
    shape = s;
    counts.assign(static_cast<std::size_t>(s.layers) * s.gpus * s.experts, 0);
  }
  [[nodiscard]] std::int64_t& at(int layer, int src, int expert) {
    return counts[(static_cast<std::size_t>(layer) * shape.gpus + src) * shape.experts + expert];
  }
  [[nodiscard]] std::int64_t at(int layer, int src, int expert) const {
    return counts[(static_cast<std::size_t>(layer) * shape.gpus + src) * shape.experts + expert];
  }
  // Pointer to the [src][expert] matrix of one layer.
  [[nodiscard]] const std::int64_t* layer_ptr(int layer) const {
    return counts.data() + static_cast<std::size_t>(layer) * shape.gpus * shape.experts;
  }
};

// Cross-layer routing: how often an assignment to expert i at MoE layer l is followed by one to
// expert j at MoE layer l + 1 (a token's rank-r choice paired with its rank-r choice; a static
// profile, not per iteration or source). ExFlow- and MoETuner-style placements plan on it, and the
// iteration model charges the tokens that change GPU between the two layers when a policy's
// dispatch lets tokens follow their experts (LayerDispatch::tokens_follow).
struct CrossLayerPairs {
  int experts = 0;
  // [l][i * experts + j] for the pair (l, l + 1), l < layers - 1; an empty entry: not recorded.
  std::vector<std::vector<double>> weight;
  std::string source;  // where they came from, for summaries

  [[nodiscard]] int layers() const { return static_cast<int>(weight.size()) + 1; }
  [[nodiscard]] bool has(int l) const {
    return l >= 0 && l < static_cast<int>(weight.size()) && !weight[static_cast<std::size_t>(l)].empty();
  }
  // Layers [first, first + count) as a profile of their own (a pipeline stage's MoE layers).
  [[nodiscard]] CrossLayerPairs slice(int first, int count) const {
    CrossLayerPairs out{experts, {}, source};
    for (int l = first; l + 1 < first + count; ++l)
      out.weight.push_back(has(l) ? weight[static_cast<std::size_t>(l)] : std::vector<double>{});
    return out;
  }
};

class TraceSource {
 public:
  virtual ~TraceSource() = default;
  [[nodiscard]] virtual TraceShape shape() const = 0;
  // Fills `out` with the next iteration; false at the end of the trace.
  virtual bool next(IterationCounts& out) = 0;
  // Back to the first iteration (each policy replays the same trace).
  virtual void rewind() = 0;
  // A one-line description for summaries.
  [[nodiscard]] virtual std::string describe() const = 0;
};

}  // namespace moesim
