#include "models/profile.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "kernels/collectives.hpp"
#include "models/embedded.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/strings.hpp"

namespace moesim {
namespace {

constexpr const char* kFormat = "moesim-profile-1";
const std::vector<std::string> kKernels = {"gemm",      "batched_gemm", "grouped_gemm", "grouped_gemm_custom",
                                           "gating",    "permute",      "unpermute",    "stream"};

// Kernels whose series answer gemm_ns(): the ones the simulator's GEMMs are timed with.
bool answers_gemm(const std::string& kernel) {
  return kernel == "gemm" || kernel == "batched_gemm" || kernel == "grouped_gemm";
}


int dtype_size(const std::string& d) { return d == "fp32" ? 4 : 2; }

std::vector<std::string> read_strings(Cfg& c, const std::string& key) {
  c.touch(key);
  std::vector<std::string> out;
  if (!c.has(key)) return out;
  const YAML::Node n = c.node()[key];
  if (!n.IsSequence()) c.fail(key, "expected a list of strings");
  for (std::size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar()) c.fail(key, fmt::format("item {} must be a string", i));
    out.push_back(n[i].Scalar());
  }
  return out;
}

double point_value(const Cfg& s, const YAML::Node& v, std::size_t i, std::size_t j) {
  static const char* names[] = {"m", "median_ns", "p10_ns", "p90_ns"};
  try {
    if (v.IsScalar()) {
      const double x = v.as<double>();
      if (std::isfinite(x)) return x;
    }
  } catch (const YAML::Exception&) {
  }
  s.fail("points", fmt::format("point {}: {} must be a number, found '{}'", i, names[j], v.IsScalar() ? v.Scalar() : "?"));
}

ProfileSeries parse_series(Cfg s) {
  ProfileSeries out;
  out.kernel = s.get_enum("kernel", "", kKernels);
  if (out.kernel.empty()) s.fail("kernel", fmt::format("is required; one of {}", join(kKernels)));
  out.use = s.get_string("use", "");
  const bool is_stream = out.kernel == "stream";
  out.n = is_stream ? s.get_int("n", 0, 0, 0) : s.need_int("n", 1, std::int64_t{1} << 40);
  out.k = is_stream ? s.get_int("k", 0, 0, 0) : s.need_int("k", 1, std::int64_t{1} << 40);
  out.group = s.get_int("group", 0, 0, 1 << 20);
  out.rows_per_batch = s.get_int("rows_per_batch", 0, 0, std::int64_t{1} << 40);
  s.touch("points");
  const YAML::Node pts = s.node()["points"];
  if (!pts || !pts.IsSequence() || pts.size() == 0)
    s.fail("points", "is required: a list of [m, median_ns, p10_ns, p90_ns], m ascending");
  for (std::size_t i = 0; i < pts.size(); ++i) {
    const YAML::Node p = pts[i];
    if (!p.IsSequence() || p.size() != 4)
      s.fail("points", fmt::format("point {} must be [m, median_ns, p10_ns, p90_ns]", i));
    ProfilePoint q{point_value(s, p[0], i, 0), point_value(s, p[1], i, 1), point_value(s, p[2], i, 2),
                   point_value(s, p[3], i, 3)};
    if (q.m < 1) s.fail("points", fmt::format("point {}: m must be >= 1, found {}", i, q.m));
    if (q.median_ns <= 0) s.fail("points", fmt::format("point {}: median_ns must be > 0, found {}", i, q.median_ns));
    if (!(q.p10_ns <= q.median_ns && q.median_ns <= q.p90_ns))
      s.fail("points", fmt::format("point {}: needs p10_ns <= median_ns <= p90_ns, found {}, {}, {}", i, q.p10_ns,
                                   q.median_ns, q.p90_ns));
    if (!out.points.empty() && q.m <= out.points.back().m)
      s.fail("points", fmt::format("point {}: m must ascend, found {} after {}", i, q.m, out.points.back().m));
    out.points.push_back(q);
  }
  s.finish();
  return out;
}

const std::vector<std::string> kCollectives = {"all_reduce", "all_to_all"};

CollectiveSeries parse_collective_series(Cfg s, int gpus) {
  static const char* names[] = {"bytes", "median_ns", "p10_ns", "p90_ns", "busbw_gbps"};
  CollectiveSeries out;
  out.collective = s.get_enum("collective", "", kCollectives);
  if (out.collective.empty()) s.fail("collective", fmt::format("is required; one of {}", join(kCollectives)));
  s.touch("points");
  const YAML::Node pts = s.node()["points"];
  if (!pts || !pts.IsSequence() || pts.size() == 0)
    s.fail("points",
           "is required: a list of [bytes, median_ns, p10_ns, p90_ns, busbw_gbps], bytes ascending");
  for (std::size_t i = 0; i < pts.size(); ++i) {
    const YAML::Node p = pts[i];
    if (!p.IsSequence() || p.size() != 5)
      s.fail("points", fmt::format("point {} must be [bytes, median_ns, p10_ns, p90_ns, busbw_gbps]", i));
    double v[5];
    for (std::size_t j = 0; j < 5; ++j) {
      bool ok = false;
      try {
        if (p[j].IsScalar()) {
          v[j] = p[j].as<double>();
          ok = std::isfinite(v[j]);
        }
      } catch (const YAML::Exception&) {
      }
      if (!ok)
        s.fail("points", fmt::format("point {}: {} must be a number, found '{}'", i, names[j],
                                     p[j].IsScalar() ? p[j].Scalar() : "?"));
    }
    CollectivePoint q{v[0], v[1], v[2], v[3], v[4]};
    if (q.bytes < 1) s.fail("points", fmt::format("point {}: bytes must be >= 1, found {}", i, q.bytes));
    if (q.median_ns <= 0)
      s.fail("points", fmt::format("point {}: median_ns must be > 0, found {}", i, q.median_ns));
    if (!(q.p10_ns <= q.median_ns && q.median_ns <= q.p90_ns))
      s.fail("points", fmt::format("point {}: needs p10_ns <= median_ns <= p90_ns, found {}, {}, {}", i,
                                   q.p10_ns, q.median_ns, q.p90_ns));
    if (!out.points.empty() && q.bytes <= out.points.back().bytes)
      s.fail("points", fmt::format("point {}: bytes must ascend, found {} after {}", i, q.bytes,
                                   out.points.back().bytes));
    // The bus bandwidth is derived, so it must agree with the time (to the 3 significant digits
    // written, and 0.01 GB/s).
    const double want = collective_busbw_gbps(out.collective, q.bytes, q.median_ns, gpus);
    if (std::abs(q.busbw_gbps - want) > 0.005 * want + 0.01)
      s.fail("points", fmt::format("point {}: busbw_gbps is {} but {} bytes in {} ns on {} GPUs give {:.4g} "
                                   "(nccl-tests' definition, doc/PERFORMANCE.md)",
                                   i, q.busbw_gbps, q.bytes, q.median_ns, gpus, want));
    out.points.push_back(q);
  }
  s.finish();
  return out;
}

CollectiveProfile parse_collectives(Cfg c) {
  CollectiveProfile p;
  p.present = true;
  p.backend = c.get_enum("backend", "", {"nccl", "cpu"});
  if (p.backend.empty()) c.fail("backend", "is required; one of nccl, cpu");
  p.device = c.need_string("device");
  p.gpus = static_cast<int>(c.need_int("gpus", 1, 1 << 20));
  p.nccl = c.get_string("nccl", "");
  if (p.backend == "nccl" && p.nccl.empty())
    c.fail("nccl", "is required when backend is nccl: the NCCL version");
  p.dtype = c.get_enum("dtype", "bf16", {"bf16", "fp32"});
  p.date = c.get_string("date", "");
  {
    Cfg t = c.child("timing");
    p.warmup = static_cast<int>(t.get_int("warmup", 0, 0, 1 << 20));
    p.reps = static_cast<int>(t.get_int("reps", 0, 0, 1 << 20));
    p.budget_s = t.get_double("budget_s", 0, 0, 1e6);
    t.finish();
  }
  p.method = c.get_string("method", "");
  c.touch("results");
  const YAML::Node res = c.node()["results"];
  if (!res || !res.IsSequence())
    c.fail("results", "is required: a list of {collective: all_reduce|all_to_all, points: [...]}");
  for (std::size_t i = 0; i < res.size(); ++i) {
    Cfg sc(res[i], c.origin(), fmt::format("{}.results[{}]", c.path(), i));
    CollectiveSeries s = parse_collective_series(sc, p.gpus);
    for (const auto& prev : p.series)
      if (prev.collective == s.collective)
        sc.fail("collective", fmt::format("a second {} series; keep one", s.collective));
    p.series.push_back(std::move(s));
  }
  c.finish();
  return p;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  return out + "\"";
}

std::string describe(const ProfileSeries& s) {
  if (s.kernel == "stream") return "stream";
  return fmt::format("{} n={} k={}", s.kernel, s.n, s.k);
}

std::string range_text(double lo, double hi) {
  return lo == hi ? fmt::format("{}", lo) : fmt::format("{}..{}", lo, hi);
}

}  // namespace

std::vector<GemmNeed> required_gemms(const MoeModelSpec& md) {
  // The same shapes IterationModel's constructor and expert_fwd_ns() ask for.
  const std::int64_t t = md.tokens_per_gpu(), h = md.hidden, s = md.seq_len;
  const std::int64_t bh = static_cast<std::int64_t>(md.micro_batch_per_gpu) * md.heads;
  const std::int64_t qkv = static_cast<std::int64_t>(md.heads + 2 * md.kv_heads) * md.head_dim;
  const std::int64_t attn = static_cast<std::int64_t>(md.heads) * md.head_dim;
  return {
      {"expert up projection", "grouped_gemm", t, md.expert_ffn_hidden, h, 0},
      {"expert down projection", "grouped_gemm", t, h, md.expert_ffn_hidden, 0},
      {"attention QKV projection", "gemm", t, qkv, h, 0},
      {"attention scores", "batched_gemm", bh * s, s, md.head_dim, s},
      {"attention weighted values", "batched_gemm", bh * s, md.head_dim, s, s},
      {"attention output projection", "gemm", t, h, attn, 0},
      {"dense FFN up projection", "gemm", t, md.ffn_hidden, h, 0},
      {"dense FFN down projection", "gemm", t, h, md.ffn_hidden, 0},
      {"router", "gemm", t, md.experts, h, 0},
      {"LM head", "gemm", t, md.vocab, h, 0},
  };
}

std::vector<std::string> profile_preset_names() {
  std::vector<std::string> out;
  for (const auto& [path, text] : embedded_presets()) {
    if (path.rfind("profiles/", 0) == 0 && path.size() > 14) out.push_back(path.substr(9, path.size() - 14));
  }
  return out;
}

ComputeProfile parse_profile(const std::string& text, const std::string& origin) {
  Cfg c(load_yaml_string(text, origin), origin, "");
  if (!c.node() || c.node().IsNull()) throw InputError(fmt::format("{}: empty file; expected a moesim profile", origin));
  const std::string format = c.get_string("format", "");
  if (format != kFormat)
    c.fail("format", fmt::format("is '{}'; a moesim profile has format: {} (written by moesim calibrate)", format, kFormat));
  ComputeProfile p;
  p.origin = origin;
  p.measured = c.get_bool("measured", false);
  p.backend = c.get_enum("backend", "cuda", {"cuda", "cpu", "reference"});
  p.device = c.get_string("device", "");
  p.driver = c.get_string("driver", "");
  p.toolkit = c.get_string("toolkit", "");
  p.library = c.get_string("library", "");
  p.date = c.get_string("date", "");
  p.dtype = c.get_enum("dtype", "bf16", {"bf16", "fp16", "fp32"});
  p.compute_dtype = c.get_enum("compute_dtype", p.dtype, {"bf16", "fp16", "fp32"});
  p.models = read_strings(c, "models");
  {
    Cfg t = c.child("timing");
    p.warmup = static_cast<int>(t.get_int("warmup", 0, 0, 1 << 20));
    p.reps = static_cast<int>(t.get_int("reps", 0, 0, 1 << 20));
    p.budget_s = t.get_double("budget_s", 0, 0, 1e6);
    t.finish();
  }
  p.method = c.get_string("method", "");
  p.command = c.get_string("command", "");
  p.sources = read_strings(c, "sources");
  if (!p.measured && p.sources.empty())
    c.fail("sources", "is required when measured is false: say where the figures come from");
  if (c.has("collectives")) p.collectives = parse_collectives(c.child("collectives"));
  c.touch("collectives");
  c.touch("series");
  const YAML::Node ser = c.node()["series"];
  // A profile of collectives alone (moesim calibrate --collectives without --model) has no kernels.
  const bool may_be_empty = p.collectives.present;
  if (!ser || ser.IsNull()) {
    if (!may_be_empty) c.fail("series", "is required: the list of timed kernels");
  } else if (!ser.IsSequence() || (ser.size() == 0 && !may_be_empty)) {
    c.fail("series", "is required: the list of timed kernels");
  }
  std::set<std::pair<std::int64_t, std::int64_t>> gemm_keys;
  bool stream_seen = false;
  for (std::size_t i = 0; ser && ser.IsSequence() && i < ser.size(); ++i) {
    Cfg sc(ser[i], origin, fmt::format("series[{}]", i));
    ProfileSeries s = parse_series(sc);
    // One series per GEMM shape: the lookup must not have to choose.
    if (answers_gemm(s.kernel) && !gemm_keys.insert({s.n, s.k}).second)
      sc.fail("kernel", fmt::format("a second GEMM series for n={} k={}; keep one", s.n, s.k));
    if (s.kernel == "stream") {
      if (stream_seen) sc.fail("kernel", "a second stream series; keep one");
      stream_seen = true;
    }
    p.series.push_back(std::move(s));
  }
  c.finish();
  return p;
}

ComputeProfile load_profile(const std::string& name_or_path) {
  const auto& presets = embedded_presets();
  if (auto it = presets.find("profiles/" + name_or_path + ".yaml"); it != presets.end()) {
    return parse_profile(std::string(it->second), "models/profiles/" + name_or_path + ".yaml");
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(name_or_path, ec)) {
    throw InputError(fmt::format("profile '{}' is neither a shipped profile ({}) nor a readable file", name_or_path,
                                 join(profile_preset_names())));
  }
  std::ifstream f(name_or_path, std::ios::binary);
  std::stringstream text;
  text << f.rdbuf();
  if (!f) throw InputError(fmt::format("profile '{}': cannot read the file", name_or_path));
  return parse_profile(text.str(), name_or_path);
}

std::string profile_to_yaml(const ComputeProfile& p) {
  std::string o;
  o += "# moesim calibration profile: kernel times per shape (docs/calibration.md).\n";
  o += fmt::format("format: {}\n", kFormat);
  o += fmt::format("measured: {}\n", p.measured ? "true" : "false");
  o += fmt::format("backend: {}\n", p.backend);
  o += fmt::format("device: {}\n", quote(p.device));
  o += fmt::format("driver: {}\n", quote(p.driver));
  o += fmt::format("toolkit: {}\n", quote(p.toolkit));
  o += fmt::format("library: {}\n", quote(p.library));
  o += fmt::format("date: {}\n", quote(p.date));
  o += fmt::format("dtype: {}\n", p.dtype);
  o += fmt::format("compute_dtype: {}\n", p.compute_dtype.empty() ? p.dtype : p.compute_dtype);
  o += "models: [";
  for (std::size_t i = 0; i < p.models.size(); ++i) o += (i ? ", " : "") + quote(p.models[i]);
  o += "]\n";
  o += fmt::format("timing: {{warmup: {}, reps: {}, budget_s: {}}}\n", p.warmup, p.reps, p.budget_s);
  o += fmt::format("method: {}\n", quote(p.method));
  if (!p.command.empty()) o += fmt::format("command: {}\n", quote(p.command));
  o += "sources:";
  if (p.sources.empty()) o += " []";
  o += "\n";
  for (const auto& s : p.sources) o += "  - " + quote(s) + "\n";
  o += p.series.empty() ? "series: []\n" : "series:\n";
  for (const auto& s : p.series) {
    o += fmt::format("  - kernel: {}\n", s.kernel);
    if (!s.use.empty()) o += fmt::format("    use: {}\n", quote(s.use));
    o += fmt::format("    n: {}\n    k: {}\n", s.n, s.k);
    if (s.group > 0) o += fmt::format("    group: {}\n", s.group);
    if (s.rows_per_batch > 0) o += fmt::format("    rows_per_batch: {}\n", s.rows_per_batch);
    o += "    points:  # [m, median_ns, p10_ns, p90_ns]\n";
    for (const auto& q : s.points) o += fmt::format("      - [{}, {}, {}, {}]\n", q.m, q.median_ns, q.p10_ns, q.p90_ns);
  }
  if (p.collectives.present) {
    const CollectiveProfile& c = p.collectives;
    o += "# NCCL collectives on the GPUs of one machine (moesim calibrate --collectives); sizes and bus\n";
    o += "# bandwidth as nccl-tests defines them (doc/PERFORMANCE.md).\n";
    o += "collectives:\n";
    o += fmt::format("  backend: {}\n", c.backend);
    o += fmt::format("  device: {}\n", quote(c.device));
    o += fmt::format("  gpus: {}\n", c.gpus);
    if (!c.nccl.empty()) o += fmt::format("  nccl: {}\n", quote(c.nccl));
    o += fmt::format("  dtype: {}\n", c.dtype);
    if (!c.date.empty()) o += fmt::format("  date: {}\n", quote(c.date));
    o += fmt::format("  timing: {{warmup: {}, reps: {}, budget_s: {}}}\n", c.warmup, c.reps, c.budget_s);
    if (!c.method.empty()) o += fmt::format("  method: {}\n", quote(c.method));
    o += c.series.empty() ? "  results: []\n" : "  results:\n";
    for (const auto& s : c.series) {
      o += fmt::format("    - collective: {}\n", s.collective);
      o += "      points:  # [bytes, median_ns, p10_ns, p90_ns, busbw_gbps]\n";
      for (const auto& q : s.points)
        o += fmt::format("        - [{}, {}, {}, {}, {}]\n", q.bytes, q.median_ns, q.p10_ns, q.p90_ns,
                         q.busbw_gbps);
    }
  }
  return o;
}

double collective_busbw_gbps(const std::string& collective, double bytes, double time_ns, int ranks) {
  return kernels::collective_bus_gbps(
      collective == "all_reduce" ? kernels::CollectiveOp::AllReduce : kernels::CollectiveOp::AllToAll, bytes,
      time_ns, ranks);
}

// ---------------------------------------------------------------------------------------------

ProfileCompute::Curve ProfileCompute::make_curve(const ProfileSeries& s) {
  Curve c;
  c.n = s.n;
  c.k = s.k;
  c.what = describe(s);
  // More rows never take less time: noise that says otherwise is flattened (running maximum).
  double run = 0;
  for (const auto& q : s.points) {
    run = std::max(run, q.median_ns);
    c.m.push_back(q.m);
    c.t.push_back(run);
  }
  for (std::size_t i = 0; i + 1 < c.m.size(); ++i) {
    c.inv_log_dm.push_back(1.0 / std::log(c.m[i + 1] / c.m[i]));
    c.log_dt.push_back(std::log(c.t[i + 1] / c.t[i]));
  }
  return c;
}

double ProfileCompute::Curve::at(double x) const {
  if (!(x >= m.front() && x <= m.back())) return -1.0;
  const auto hi = static_cast<std::size_t>(std::upper_bound(m.begin(), m.end(), x) - m.begin());
  if (hi == m.size()) return t.back();
  const std::size_t lo = hi - 1;
  if (x == m[lo]) return t[lo];
  // t = t_lo * (t_hi / t_lo) ^ (log(x / m_lo) / log(m_hi / m_lo)): a straight line in log-log.
  return t[lo] * std::exp(std::log(x / m[lo]) * inv_log_dm[lo] * log_dt[lo]);
}

ProfileCompute::ProfileCompute(ComputeProfile profile, const GpuProfile& gpu)
    : profile_(std::move(profile)), roofline_(gpu), elem_bytes_(dtype_size(profile_.dtype)) {
  for (const auto& s : profile_.series) {
    if (answers_gemm(s.kernel)) gemm_.push_back(make_curve(s));
    if (s.kernel == "stream") {
      stream_ = make_curve(s);
      has_stream_ = true;
    }
  }
}

std::string ProfileCompute::name() const {
  return fmt::format("profile({}{})", profile_.origin, profile_.device.empty() ? "" : ": " + profile_.device);
}

TimeNs ProfileCompute::miss(const std::string& what, double m, const Curve* c, TimeNs roofline) const {
  misses_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(miss_mu_);
  auto [it, fresh] = miss_log_.try_emplace(what);
  Miss& r = it->second;
  if (fresh) {
    r.lo = r.hi = m;
    r.measured = c == nullptr ? "no series" : "measured " + range_text(c->m.front(), c->m.back());
  }
  r.lo = std::min(r.lo, m);
  r.hi = std::max(r.hi, m);
  ++r.count;
  return roofline;
}

TimeNs ProfileCompute::gemm_ns(double m, double n, double k, int elem_bytes) const {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  const auto ni = static_cast<std::int64_t>(std::llround(n)), ki = static_cast<std::int64_t>(std::llround(k));
  const Curve* c = nullptr;
  for (const Curve& g : gemm_)
    if (g.n == ni && g.k == ki) {
      c = &g;
      break;
    }
  if (c != nullptr && elem_bytes == elem_bytes_) {
    const double t = c->at(m);
    if (t >= 0) return std::max<TimeNs>(1, static_cast<TimeNs>(std::llround(t)));
  }
  const std::string what = elem_bytes != elem_bytes_ ? fmt::format("gemm n={} k={} ({}-byte operands)", ni, ki, elem_bytes)
                                                     : fmt::format("gemm n={} k={}", ni, ki);
  return miss(what, m, elem_bytes == elem_bytes_ ? c : nullptr, roofline_.gemm_ns(m, n, k, elem_bytes));
}

TimeNs ProfileCompute::memory_ns(double bytes) const {
  if (bytes <= 0) return 0;
  if (has_stream_) {
    const double t = stream_.at(bytes);
    if (t >= 0) return std::max<TimeNs>(1, static_cast<TimeNs>(std::llround(t)));
  }
  return miss("stream (bytes)", bytes, has_stream_ ? &stream_ : nullptr, roofline_.memory_ns(bytes));
}

std::string ProfileCompute::roofline_report() const {
  std::lock_guard<std::mutex> lock(miss_mu_);
  if (miss_log_.empty()) return "";
  std::string out = fmt::format("compute profile {}: {} lookups outside the measured shapes used the roofline:",
                                profile_.origin, misses_.load(std::memory_order_relaxed));
  for (const auto& [what, r] : miss_log_)
    out += fmt::format(" {} at m {} ({}; {} lookups);", what, range_text(r.lo, r.hi), r.measured, r.count);
  out.back() = '.';
  return out;
}

ProfileCompute::RooflineLog ProfileCompute::take_roofline_log() {
  std::lock_guard<std::mutex> lock(miss_mu_);
  RooflineLog log{misses_.exchange(0, std::memory_order_relaxed), std::move(miss_log_)};
  miss_log_.clear();
  return log;
}

void ProfileCompute::merge_roofline_log(const RooflineLog& log) {
  misses_.fetch_add(log.lookups, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(miss_mu_);
  for (const auto& [what, m] : log.misses) {
    auto [it, fresh] = miss_log_.try_emplace(what, m);
    if (fresh) continue;
    it->second.lo = std::min(it->second.lo, m.lo);
    it->second.hi = std::max(it->second.hi, m.hi);
    it->second.count += m.count;
  }
}

std::unique_ptr<ComputeModel> make_compute_model(const GpuProfile& gpu, const MoeModelSpec& model,
                                                 const std::string& profile, bool fallback_roofline,
                                                 std::vector<std::string>* warnings) {
  if (profile.empty()) return std::make_unique<RooflineCompute>(gpu);
  auto warn = [&](const std::string& w) {
    if (warnings != nullptr) warnings->push_back(w);
  };
  ComputeProfile p;
  try {
    p = load_profile(profile);
  } catch (const InputError& e) {
    if (!fallback_roofline) throw;
    warn(fmt::format("{}; compute.fallback is roofline, so the roofline of {} is used instead", e.what(), gpu.name));
    return std::make_unique<RooflineCompute>(gpu);
  }
  const std::string calibrated_for = p.models.empty() ? "" : fmt::format(" (calibrated for {})", join(p.models));
  if (dtype_size(p.dtype) != dtype_bytes(model.dtype)) {
    const std::string what = fmt::format("profile {}{} times {} operands but model '{}' is {}", p.origin, calibrated_for,
                                         p.dtype, model.name, to_string(model.dtype));
    if (!fallback_roofline) throw InputError(what + "; calibrate it: moesim calibrate --model " + model.name);
    warn(what + "; compute.fallback is roofline, so the roofline of " + gpu.name + " is used instead");
    return std::make_unique<RooflineCompute>(gpu);
  }
  std::vector<std::string> missing;
  std::set<std::pair<std::int64_t, std::int64_t>> seen;
  for (const GemmNeed& need : required_gemms(model)) {
    if (!seen.insert({need.n, need.k}).second) continue;
    const ProfileSeries* s = nullptr;
    for (const auto& x : p.series)
      if (answers_gemm(x.kernel) && x.n == need.n && x.k == need.k) s = &x;
    if (s == nullptr) {
      missing.push_back(fmt::format("{} (n={} k={})", need.use, need.n, need.k));
      continue;
    }
    const double lo = s->points.front().m, hi = s->points.back().m;
    const bool grouped = need.kernel == "grouped_gemm";
    if (grouped ? (lo > 1 || hi < static_cast<double>(need.m))
                : (static_cast<double>(need.m) < lo || static_cast<double>(need.m) > hi)) {
      warn(fmt::format("profile {}: {} is measured for m {} but model '{}' needs m {}; the roofline answers outside "
                       "the measured range (flagged in the summary)",
                       p.origin, need.use, range_text(lo, hi), model.name,
                       grouped ? fmt::format("1..{}", need.m) : fmt::format("{}", need.m)));
    }
  }
  if (!missing.empty()) {
    const std::string what = fmt::format("profile {}{} has no timings for these GEMMs of model '{}': {}", p.origin,
                                         calibrated_for, model.name, join(missing, "; "));
    if (!fallback_roofline)
      throw InputError(what + fmt::format(". It was calibrated for another model shape; run moesim calibrate --model "
                                          "{} (or set compute.fallback: roofline)",
                                          model.name));
    warn(what + "; compute.fallback is roofline, so the roofline answers them (flagged in the summary)");
  }
  return std::make_unique<ProfileCompute>(std::move(p), gpu);
}

std::string compute_fallback_note(const ComputeModel& compute) {
  const auto* pc = dynamic_cast<const ProfileCompute*>(&compute);
  return pc == nullptr ? "" : pc->roofline_report();
}

}  // namespace moesim
