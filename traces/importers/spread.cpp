// Count matrices without source GPUs spread over them (docs/trace-format.md), and the way back.
#include "traces/importers.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "traces/binomial.hpp"
#include "traces/importers/common.hpp"

namespace moesim {

using namespace importers;

namespace {

class SpreadTrace final : public TraceSource {
 public:
  SpreadTrace(std::unique_ptr<CountMatrixSource> m, const SpreadSpec& spec)
      : m_(std::move(m)), spec_(spec), shape_{m_->layers(), spec.gpus, m_->experts()} {
    target_ = spec_.iterations > 0 ? spec_.iterations : m_->steps();
    rewind();
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }

  bool next(IterationCounts& out) override {
    if (produced_ >= target_) return false;
    if (!m_->next(matrix_)) {
      // Cycling (more iterations than steps): the popularity repeats, the draws do not.
      m_->rewind();
      step_ = 0;
      if (!m_->next(matrix_))
        throw InputError(fmt::format("{}: the load matrix has no steps", m_->describe()));
    }
    if (out.counts.size() != static_cast<std::size_t>(shape_.layers) * static_cast<std::size_t>(shape_.gpus) *
                                 static_cast<std::size_t>(shape_.experts) ||
        out.shape.layers != shape_.layers || out.shape.gpus != shape_.gpus ||
        out.shape.experts != shape_.experts) {
      out.reset(shape_);
    }
    for (int layer = 0; layer < shape_.layers; ++layer) {
      const double* row = matrix_.data() + cells(layer, shape_.experts);
      if (spec_.tokens_per_gpu) {
        draw_batch(out, layer, row);
      } else {
        split_totals(out, layer, row);
      }
    }
    ++produced_;
    ++step_;
    return true;
  }

  void rewind() override {
    m_->rewind();
    rng_.seed(spec_.seed);
    produced_ = 0;
    step_ = 0;
  }

  [[nodiscard]] std::string describe() const override {
    if (spec_.tokens_per_gpu) {
      return fmt::format("spread({}, gpus={}, tokens_per_gpu={}, top_k={}, seed={})", m_->describe(),
                         spec_.gpus, *spec_.tokens_per_gpu, spec_.top_k, spec_.seed);
    }
    return fmt::format("spread({}, gpus={}, recorded totals, seed={})", m_->describe(), spec_.gpus,
                       spec_.seed);
  }

 private:
  // Every source GPU draws Multinomial(tokens_per_gpu * top_k, p) as a chain of binomials:
  // expert i takes Binomial(remaining, p_i / (p_i + ... + p_{E-1})). A layer without counts is
  // taken as uniform.
  void draw_batch(IterationCounts& out, int layer, const double* row) {
    const auto e_count = static_cast<std::size_t>(shape_.experts);
    double total = 0;
    for (std::size_t e = 0; e < e_count; ++e) total += row[e];
    cond_.resize(e_count);
    double tail = 0;
    for (std::size_t e = e_count; e-- > 0;) {
      const double p = total > 0 ? row[e] / total : 1.0 / static_cast<double>(e_count);
      tail += p;
      cond_[e] = tail > 0 ? std::clamp(p / tail, 0.0, 1.0) : 1.0;
    }
    remaining_.assign(static_cast<std::size_t>(shape_.gpus), *spec_.tokens_per_gpu * spec_.top_k);
    for (int ex = 0; ex + 1 < shape_.experts; ++ex) {
      const double q = cond_[static_cast<std::size_t>(ex)];
      for (int g = 0; g < shape_.gpus; ++g) {
        std::int64_t& rem = remaining_[static_cast<std::size_t>(g)];
        std::int64_t x = 0;
        if (rem > 0 && q > 0) x = q >= 1.0 ? rem : sample_binomial(rng_, rem, q);
        out.at(layer, g, ex) = x;
        rem -= x;
      }
    }
    for (int g = 0; g < shape_.gpus; ++g)
      out.at(layer, g, shape_.experts - 1) = remaining_[static_cast<std::size_t>(g)];
  }

  // Each recorded count c is split over the GPUs uniformly at random: GPU g takes
  // Binomial(remaining, 1 / (G - g)), the last GPU the rest, so the totals are kept exactly.
  void split_totals(IterationCounts& out, int layer, const double* row) {
    for (int ex = 0; ex < shape_.experts; ++ex) {
      const double c = row[ex];
      if (c != std::floor(c)) {
        throw InputError(
            fmt::format("{}: step {}, layer {}, expert {}: count {} is not a whole number; without a batch "
                        "size the recorded "
                        "counts are split over the source GPUs as they are (give tokens_per_gpu and top_k to "
                        "sample at a batch "
                        "size instead)",
                        m_->describe(), step_, layer, ex, c));
      }
      auto rem = static_cast<std::int64_t>(c);
      for (int g = 0; g + 1 < shape_.gpus; ++g) {
        const std::int64_t x =
            rem > 0 ? sample_binomial(rng_, rem, 1.0 / static_cast<double>(shape_.gpus - g)) : 0;
        out.at(layer, g, ex) = x;
        rem -= x;
      }
      out.at(layer, shape_.gpus - 1, ex) = rem;
    }
  }

  std::unique_ptr<CountMatrixSource> m_;
  SpreadSpec spec_;
  TraceShape shape_;
  std::mt19937_64 rng_;
  std::vector<double> matrix_;
  std::vector<double> cond_;
  std::vector<std::int64_t> remaining_;
  std::int64_t target_ = 0;
  std::int64_t produced_ = 0;
  std::int64_t step_ = 0;  // index of the matrix step being spread (for messages)
};

class CollapsedTrace final : public CountMatrixSource {
 public:
  CollapsedTrace(std::unique_ptr<TraceSource> t, std::int64_t iterations)
      : t_(std::move(t)), steps_(iterations) {}
  [[nodiscard]] int layers() const override { return t_->shape().layers; }
  [[nodiscard]] int experts() const override { return t_->shape().experts; }
  [[nodiscard]] std::int64_t steps() const override { return steps_; }
  bool next(std::vector<double>& out) override {
    if (done_ >= steps_ || !t_->next(it_)) return false;
    const TraceShape s = t_->shape();
    out.assign(cells(s.layers, s.experts), 0.0);
    for (int l = 0; l < s.layers; ++l) {
      for (int g = 0; g < s.gpus; ++g) {
        for (int e = 0; e < s.experts; ++e)
          out[cells(l, s.experts) + static_cast<std::size_t>(e)] += static_cast<double>(it_.at(l, g, e));
      }
    }
    ++done_;
    return true;
  }
  void rewind() override {
    t_->rewind();
    done_ = 0;
  }
  [[nodiscard]] std::string describe() const override {
    return fmt::format("summed over GPUs({})", t_->describe());
  }

 private:
  std::unique_ptr<TraceSource> t_;
  std::int64_t steps_;
  std::int64_t done_ = 0;
  IterationCounts it_;
};

}  // namespace

std::unique_ptr<TraceSource> spread_over_gpus(std::unique_ptr<CountMatrixSource> matrix,
                                              const SpreadSpec& spec) {
  const std::string who = matrix->describe();
  if (spec.gpus < 1 || spec.gpus > (1 << 24)) {
    throw InputError(
        fmt::format("{}: the counts have no source-GPU detail; the number of source GPUs to spread "
                    "them over must be 1..2^24, found {}",
                    who, spec.gpus));
  }
  if (spec.tokens_per_gpu) {
    if (*spec.tokens_per_gpu < 0 || *spec.tokens_per_gpu > (std::int64_t{1} << 40)) {
      throw InputError(
          fmt::format("{}: tokens_per_gpu {} is out of range; allowed 0..2^40", who, *spec.tokens_per_gpu));
    }
    if (spec.top_k < 1 || spec.top_k > matrix->experts()) {
      throw InputError(fmt::format("{}: top_k {} is out of range; allowed 1..{} (the number of experts)", who,
                                   spec.top_k, matrix->experts()));
    }
  }
  if (spec.iterations < 0)
    throw InputError(fmt::format("{}: iterations {} is negative", who, spec.iterations));
  if (matrix->steps() < 1) throw InputError(fmt::format("{}: the load matrix has no steps", who));
  return std::make_unique<SpreadTrace>(std::move(matrix), spec);
}

std::unique_ptr<CountMatrixSource> collapse_gpus(std::unique_ptr<TraceSource> trace,
                                                 std::int64_t iterations) {
  return std::make_unique<CollapsedTrace>(std::move(trace), iterations);
}

}  // namespace moesim
