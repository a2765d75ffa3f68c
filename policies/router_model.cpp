#include "policies/router_model.hpp"

#include "policies/capacity.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moesim::router {

NextChoice parse_next_choice(Cfg& p, const std::string& key, const std::string& def,
                             const std::vector<std::string>& allowed) {
  const std::string v = p.get_enum(key, def, allowed);
  if (v == "source") return NextChoice::Source;
  if (v == "room") return NextChoice::Room;
  return NextChoice::Uniform;
}

std::string next_choice_name(NextChoice c) {
  switch (c) {
    case NextChoice::Source: return "source";
    case NextChoice::Room: return "room";
    case NextChoice::Uniform: return "uniform";
  }
  return "uniform";
}

void apportion(std::int64_t amount, const double* weight, int n, std::int64_t* out) {
  double total = 0.0;
  for (int i = 0; i < n; ++i) total += weight[i];
  std::fill(out, out + n, std::int64_t{0});
  if (!(total > 0.0) || amount <= 0) return;
  std::vector<double> frac(static_cast<std::size_t>(n), 0.0);
  std::int64_t given = 0;
  for (int i = 0; i < n; ++i) {
    const double share = static_cast<double>(amount) * (weight[i] / total);
    const auto f = static_cast<std::int64_t>(std::floor(share));
    out[i] = f;
    frac[i] = share - static_cast<double>(f);
    given += f;
  }
  // Rounding of the shares can leave `given` a little off `amount` either way; settle exactly.
  std::vector<int> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return frac[a] > frac[b]; });
  for (std::size_t k = 0; given < amount; k = (k + 1) % order.size()) {
    if (weight[order[k]] > 0.0) {
      ++out[order[k]];
      ++given;
    }
  }
  for (int i = n - 1; given > amount && i >= 0; --i) {
    if (out[i] > 0) {
      --out[i];
      --given;
    }
  }
}

std::int64_t cost_of(double cost, std::int64_t n) { return std::llround(cost * static_cast<double>(n)); }

RouteStats rebalance_to_targets(const std::int64_t* counts, int G, int E, const std::int64_t* target,
                                NextChoice mode, std::int64_t* out) {
  RouteStats st;
  const auto cells = static_cast<std::size_t>(G) * E;
  std::copy(counts, counts + cells, out);
  std::vector<std::int64_t> load(static_cast<std::size_t>(E), 0);
  for (int s = 0; s < G; ++s)
    for (int e = 0; e < E; ++e) load[e] += counts[static_cast<std::size_t>(s) * E + e];
  std::vector<double> room(static_cast<std::size_t>(E), 0.0), w(static_cast<std::size_t>(std::max(G, E)));
  std::vector<std::int64_t> part(static_cast<std::size_t>(std::max(G, E)));
  std::vector<std::int64_t> taken(static_cast<std::size_t>(G), 0);
  // Overloaded experts give up their excess, from each source in proportion to what it sent.
  for (int e = 0; e < E; ++e) {
    room[e] = static_cast<double>(std::max<std::int64_t>(0, target[e] - load[e]));
    const std::int64_t excess = load[e] - target[e];
    if (excess <= 0) continue;
    for (int s = 0; s < G; ++s) w[s] = static_cast<double>(counts[static_cast<std::size_t>(s) * E + e]);
    apportion(excess, w.data(), G, part.data());
    for (int s = 0; s < G; ++s) {
      out[static_cast<std::size_t>(s) * E + e] -= part[s];
      taken[s] += part[s];
    }
  }
  // Each source's taken assignments go to the experts below their target.
  for (int s = 0; s < G; ++s) {
    if (taken[s] == 0) continue;
    double total = 0.0;
    for (int e = 0; e < E; ++e) {
      const bool open = room[e] > 0.0;
      switch (mode) {
        case NextChoice::Source: w[e] = open ? static_cast<double>(counts[static_cast<std::size_t>(s) * E + e]) : 0.0; break;
        case NextChoice::Room: w[e] = room[e]; break;
        case NextChoice::Uniform: w[e] = open ? 1.0 : 0.0; break;
      }
      total += w[e];
    }
    if (total <= 0.0) std::copy(room.begin(), room.end(), w.begin());  // no next choice known: by room
    apportion(taken[s], w.data(), E, part.data());
    std::int64_t placed = 0;
    for (int e = 0; e < E; ++e) {
      out[static_cast<std::size_t>(s) * E + e] += part[e];
      placed += part[e];
    }
    // No expert below target (targets below the load): the taken assignments stay where they were.
    if (placed == 0) {
      for (int e = 0; e < E; ++e) out[static_cast<std::size_t>(s) * E + e] = counts[static_cast<std::size_t>(s) * E + e];
      continue;
    }
    st.redirected += placed;
  }
  return st;
}

RouteStats shift_by_bias(const std::int64_t* counts, int G, int E, const double* bias, double margin,
                         std::int64_t* out) {
  RouteStats st;
  std::vector<double> w(static_cast<std::size_t>(E));
  std::vector<double> odds(static_cast<std::size_t>(E));
  // Odds relative to the largest bias: at most 1, so that no exp overflows.
  double top = bias[0];
  for (int e = 1; e < E; ++e) top = std::max(top, bias[e]);
  for (int e = 0; e < E; ++e) odds[e] = std::exp((bias[e] - top) / margin);
  for (int s = 0; s < G; ++s) {
    const std::int64_t* row = counts + static_cast<std::size_t>(s) * E;
    std::int64_t* o = out + static_cast<std::size_t>(s) * E;
    std::int64_t total = 0;
    for (int e = 0; e < E; ++e) {
      w[e] = static_cast<double>(row[e]) * odds[e];
      total += row[e];
    }
    double wsum = 0.0;
    for (int e = 0; e < E; ++e) wsum += w[e];
    // Every expert the source chose underflowed (biases far apart): keep the gate's counts.
    if (!(wsum > 0.0)) {
      std::copy(row, row + E, o);
      continue;
    }
    apportion(total, w.data(), E, o);
    for (int e = 0; e < E; ++e) st.redirected += std::max<std::int64_t>(0, o[e] - row[e]);
  }
  return st;
}

void update_bias(const std::int64_t* load, int E, double step, double* bias) {
  std::int64_t total = 0;
  for (int e = 0; e < E; ++e) total += load[e];
  // Compare load * E with the total: the mean without a division.
  for (int e = 0; e < E; ++e) {
    const std::int64_t scaled = load[e] * E;
    if (scaled > total) bias[e] -= step;
    else if (scaled < total) bias[e] += step;
  }
}

RouterPolicy::RouterPolicy(const PolicyContext& ctx, Cfg& p, std::string name, double cf_default,
                           double redirect_cost_default, const std::string& capacity_per_default)
    : Policy(ctx), name_(std::move(name)) {
  // A negative default: the policy has no dispatch capacity of its own (expertchoice sets its
  // loads exactly) and the keys are not read.
  has_capacity_ = cf_default >= 0.0;
  has_redirect_cost_ = redirect_cost_default >= 0.0;
  if (has_capacity_) {
    capacity_factor_ = p.get_double("capacity_factor", cf_default, 0.0, 1e6);
    capacity_per_ = p.get_enum("capacity_per", capacity_per_default, {"replica", "source"});
    // Floor of the per-source capacity: 0 by default so that a capacity is exactly the formula
    // (DeepSpeed's default is 4, the SwiftMoE setup's 2; set it to compare with static).
    min_capacity_ = p.get_int("min_capacity", 0, 0, 1LL << 40);
  }
  // Assumption (no paper measures it): a redirected assignment is computed by an expert the gate
  // ranked lower, so it loses a fraction of what a dropped one loses (docs/policies-router.md).
  // A negative default: the policy redirects nothing and the key is not read.
  if (has_redirect_cost_) redirect_cost_ = p.get_double("redirect_cost", redirect_cost_default, 0.0, 1.0);
  else redirect_cost_ = 0.0;
  // source: DeepSpeed ZeRO stage 1 over an expert's replicas, as static's default.
  shard_optimizer_ = p.get_bool("shard_optimizer", true);
  const int slots = ctx.gpus * ctx.slots_per_gpu;
  if (slots < ctx.experts) {
    p.fail("", fmt::format("{} keeps a fixed round-robin placement that needs at least one slot per expert: {} slots "
                           "({} GPUs x {}) for {} experts",
                           name_, slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
  }
  if (ctx.slots_per_gpu > ctx.experts) {
    p.fail("", fmt::format("{}: placement.slots_per_gpu {} > {} experts would hold an expert twice on one GPU", name_,
                           ctx.slots_per_gpu, ctx.experts));
  }
  if (capacity_factor_ > 0.0 && capacity_per_ == "source") {
    source_capacity_ = deepspeed_capacity(ctx.tokens_per_gpu, ctx.top_k, ctx.experts, capacity_factor_, min_capacity_);
  } else if (capacity_factor_ > 0.0) {
    // Per replica, summed over sources: cf * k * T * G / (G * S), as eplb's and symi's.
    replica_capacity_ = static_cast<std::int64_t>(std::ceil(capacity_factor_ * ctx.top_k *
                                                            static_cast<double>(ctx.tokens_per_gpu) /
                                                            static_cast<double>(ctx.slots_per_gpu)));
  }
}

Placement RouterPolicy::initial_placement() {
  Placement pl;
  pl.gpus = ctx_.gpus;
  pl.slots_per_gpu = ctx_.slots_per_gpu;
  std::vector<int> layout(pl.num_slots());
  for (int slot = 0; slot < pl.num_slots(); ++slot) layout[slot] = slot % ctx_.experts;
  pl.expert_of_slot.assign(ctx_.moe_layers, layout);
  return pl;
}

RouteStats RouterPolicy::routed_counts(int layer, const std::int64_t* counts, const Placement& placement,
                                       std::vector<std::int64_t>& out) {
  out.assign(static_cast<std::size_t>(placement.gpus) * ctx_.experts, 0);
  return route(layer, counts, placement, out.data());
}

void RouterPolicy::dispatch(int layer, const std::int64_t* counts, const Placement& placement, LayerDispatch& out) {
  const RouteStats st = routed_counts(layer, counts, placement, routed_);
  std::int64_t source_drops = 0;
  if (source_capacity_ >= 0) {
    for (std::int64_t& n : routed_) {
      source_drops += std::max<std::int64_t>(0, n - source_capacity_);
      n = std::min(n, source_capacity_);
    }
  }
  EvenDispatchOptions opt;
  opt.replica_capacity = replica_capacity_;
  opt.prefer_local_node = prefer_local_node_;
  opt.gpus_per_node = ctx_.cluster->gpus_per_node;
  dispatch_even(placement, layer, ctx_.experts, routed_.data(), opt, out);
  // The gate routed the trace's assignments, null ones included; capacity drops come from the
  // dispatch, quality-equivalent drops from the router change.
  std::int64_t routed = 0;
  for (std::size_t i = 0; i < static_cast<std::size_t>(placement.gpus) * ctx_.experts; ++i) routed += counts[i];
  out.routed = routed;
  out.dropped += source_drops + st.quality_dropped;
}

PolicyDecision RouterPolicy::after_iteration(int iteration, const IterationCounts& counts, const Placement& current) {
  observe(iteration, counts, current);
  return {};
}

SyncPlan RouterPolicy::sync_plan(int, const Placement& current, const Placement&) {
  return default_sync_plan(ctx_, current, shard_optimizer_);
}

nlohmann::json RouterPolicy::parameters() const {
  nlohmann::json j;
  if (has_capacity_) {
    j["capacity_factor"] = capacity_factor_;
    j["capacity_per"] = capacity_per_;
    j["min_capacity"] = min_capacity_;
    j["replica_capacity"] = replica_capacity_;
    j["source_capacity"] = source_capacity_;
  }
  if (has_redirect_cost_) j["redirect_cost"] = redirect_cost_;
  j["shard_optimizer"] = shard_optimizer_;
  // Marks a policy whose slots receive other counts than the gate's (tests/test_policy_invariants).
  j["redirects"] = true;
  const nlohmann::json own = own_parameters();
  for (const auto& [k, v] : own.items()) j[k] = v;
  return j;
}

}  // namespace moesim::router
