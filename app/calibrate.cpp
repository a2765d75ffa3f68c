#include "app/calibrate.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "app/calibrate_internal.hpp"
#include "app/outputs.hpp"
#include "kernels/collectives.hpp"
#include "kernels/kernels.hpp"
#include "models/profile.hpp"
#include "models/specs.hpp"
#include "core/config.hpp"
#include "core/error.hpp"

namespace moesim {
namespace {

using kernels::Kernel;
using kernels::KernelShape;

constexpr const char* kHelp =
    "moesim calibrate --backend cuda|cpu|reference --model PRESET|file.yaml --out profile.yaml [options]\n"
    "moesim calibrate --backend cuda|cpu --collectives [--model M] --out profile.yaml [options]\n"
    "\n"
    "Times the kernels of the model's layers (gating, dispatch permutation and its inverse, the expert\n"
    "FFN as a grouped GEMM for 1 up to the largest batch of tokens per expert, the dense GEMMs of\n"
    "attention, router and LM head, a memory stream) and writes a profile for compute.profile.\n"
    "\n"
    "  --backend B        cuda (the GPU, CUDA events), cpu (Eigen, wall clock), or reference (no timing:\n"
    "                     the datasheet figures of --gpu through the stated efficiency curve)\n"
    "  --model M          a model preset or a model YAML file (a scenario file: its model section);\n"
    "                     repeat it or separate names by commas to cover several models in one profile\n"
    "  --out FILE         the profile to write\n"
    "  --gpu PRESET       reference backend: the GPU preset whose datasheet figures are used\n"
    "  --max-tokens N     the largest tokens per expert swept (default: the model's tokens per GPU)\n"
    "  --group N          experts per grouped-GEMM call, times reported per expert (default: up to 8 on\n"
    "                     cuda and reference; 1 on cpu, where experts run one after another anyway)\n"
    "  --warmup N         untimed calls before each shape (default: cuda 5, cpu 1)\n"
    "  --reps N           timed calls per shape (default: cuda 20, cpu 5)\n"
    "  --budget S         seconds of timed calls per shape before stopping early (default 0.5)\n"
    "  --quick            powers of two only, 3 timed calls, a small budget: a fast, rougher profile\n"
    "\n"
    "Collectives (a `collectives:` section; without --model the profile holds only that):\n"
    "  --collectives      also time NCCL all-reduce (sum) and all-to-all (grouped ncclSend/ncclRecv) over\n"
    "                     the GPUs of this machine, one process, 1 MiB to 1 GiB per rank in powers of two,\n"
    "                     after checking their results against the CPU twin; needs at least 2 GPUs (with\n"
    "                     fewer it says so, skips them and exits 0). cpu: the CPU twin over --ranks\n"
    "                     in-memory ranks. Prints the measured bus bandwidth next to the\n"
    "                     simulator's prediction for the same GPUs (see --cluster)\n"
    "  --ranks N          GPUs to use (default: all visible); cpu: in-memory ranks (default 4)\n"
    "  --collective-dtype bf16 (default) or fp32\n"
    "  --max-bytes N      the largest size per rank (default 1 GiB; less when GPU memory is short)\n"
    "  --cluster PRESET   the cluster preset to compare with (default: by device name, H100/H200:\n"
    "                     dgx-h100, A100: dgx-a100; on cpu: no comparison unless given)\n"
    "  --quiet            print nothing\n";

using namespace calibrate_internal;

[[noreturn]] void bad(const std::string& what) { throw InputError("moesim calibrate: " + what); }

std::int64_t parse_int(const std::string& opt, const std::string& v, std::int64_t lo, std::int64_t hi) {
  try {
    std::size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size() && x >= lo && x <= hi) return x;
  } catch (const std::exception&) {
  }
  bad(fmt::format("{} expects an integer in {}..{}, found '{}'", opt, lo, hi, v));
}

double parse_double(const std::string& opt, const std::string& v, double lo, double hi) {
  try {
    std::size_t used = 0;
    const double x = std::stod(v, &used);
    if (used == v.size() && x >= lo && x <= hi) return x;
  } catch (const std::exception&) {
  }
  bad(fmt::format("{} expects a number in {}..{}, found '{}'", opt, lo, hi, v));
}

Options parse_args(const std::vector<std::string>& args, bool& help) {
  Options o;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) bad(a + " needs a value (see moesim calibrate --help)");
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      help = true;
    } else if (a == "--backend") {
      o.backend = value();
      if (o.backend != "cuda" && o.backend != "cpu" && o.backend != "reference")
        bad(fmt::format("--backend is '{}'; allowed: cuda, cpu, reference", o.backend));
    } else if (a == "--model") {
      std::string list = value();
      for (std::size_t p = 0; p <= list.size();) {
        const std::size_t q = std::min(list.find(',', p), list.size());
        if (q > p) o.models.push_back(list.substr(p, q - p));
        p = q + 1;
      }
    } else if (a == "--out" || a == "-o") {
      o.out = value();
    } else if (a == "--gpu") {
      o.gpu = value();
    } else if (a == "--max-tokens") {
      o.max_tokens = parse_int(a, value(), 1, std::int64_t{1} << 30);
    } else if (a == "--group") {
      o.group = static_cast<int>(parse_int(a, value(), 1, 1 << 16));
    } else if (a == "--warmup") {
      o.warmup = static_cast<int>(parse_int(a, value(), 0, 1000));
    } else if (a == "--reps") {
      o.reps = static_cast<int>(parse_int(a, value(), 1, 100000));
    } else if (a == "--budget") {
      o.budget_s = parse_double(a, value(), 0.0, 3600.0);
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--quiet" || a == "-q") {
      o.quiet = true;
    } else if (a == "--collectives") {
      o.collectives = true;
    } else if (a == "--ranks") {
      o.ranks = static_cast<int>(parse_int(a, value(), 1, 1024));
    } else if (a == "--collective-dtype") {
      o.collective_dtype = value();
      if (o.collective_dtype != "bf16" && o.collective_dtype != "fp32")
        bad(fmt::format("--collective-dtype is '{}'; allowed: bf16, fp32", o.collective_dtype));
    } else if (a == "--max-bytes") {
      o.max_bytes = parse_int(a, value(), 1024, std::int64_t{1} << 40);
    } else if (a == "--cluster") {
      o.cluster = value();
    } else {
      bad(fmt::format("unknown argument '{}' (see moesim calibrate --help)", a));
    }
  }
  if (help) return o;
  if (o.backend.empty()) bad("--backend is required: cuda, cpu or reference");
  if (o.models.empty() && !o.collectives)
    bad(fmt::format("--model is required (or --collectives alone): a preset ({}) or a model YAML file",
                    fmt::join(model_preset_names(), ", ")));
  if (o.collectives && o.backend == "reference")
    bad("--collectives needs --backend cuda (NCCL on this machine's GPUs) or cpu (the CPU twin); "
        "the reference backend times nothing");
  const bool collective_flags = o.ranks > 0 || o.collective_dtype != "bf16" ||
                                o.max_bytes != (std::int64_t{1} << 30) || !o.cluster.empty();
  if (collective_flags && !o.collectives)
    bad("--ranks, --collective-dtype, --max-bytes and --cluster are for --collectives");
  if (o.out.empty()) bad("--out is required: the profile file to write");
  if (o.backend == "reference" && o.gpu.empty())
    bad(fmt::format("--backend reference needs --gpu: one of {}", fmt::join(gpu_preset_names(), ", ")));
  if (o.backend != "reference" && !o.gpu.empty())
    bad("--gpu is for --backend reference only (cuda and cpu time the device they run on)");
  return o;
}

MoeModelSpec load_model_arg(const std::string& m) {
  std::error_code ec;
  const bool is_file = std::filesystem::is_regular_file(m, ec) ||
                       (m.size() > 5 && (m.ends_with(".yaml") || m.ends_with(".yml")));
  if (!is_file) {
    YAML::Node n;
    n["preset"] = m;
    return load_model(Cfg(n, "--model", ""));
  }
  YAML::Node root = load_yaml_file(m);
  // A scenario file names its model in a `model:` section.
  if (root.IsMap() && root["model"] && root["model"].IsMap()) return load_model(Cfg(root["model"], m, "model"));
  return load_model(Cfg(root, m, ""));
}

// Tokens per expert: powers of two and the points half-way between them (1, 2, 3, 4, 6, 8, 12, ...),
// then `max` itself; --quick keeps the powers of two.
std::set<std::int64_t> token_sweep(std::int64_t max, bool quick) {
  std::set<std::int64_t> out;
  for (std::int64_t p = 1; p <= max; p *= 2) {
    out.insert(p);
    if (!quick && p >= 2 && p + p / 2 <= max) out.insert(p + p / 2);
  }
  out.insert(max);
  return out;
}

struct Planned {
  ProfileSeries meta;  // everything but the points
  Kernel kernel = Kernel::Gemm;
  std::int64_t batch = 1;  // grouped: experts per call; permute: experts
  std::set<std::int64_t> ms;
};

Kernel kernel_of(const std::string& k) {
  if (k == "grouped_gemm") return Kernel::GroupedGemm;
  if (k == "batched_gemm") return Kernel::BatchedGemm;
  return Kernel::Gemm;
}

void add_use(ProfileSeries& s, const std::string& use) {
  if (s.use.find(use) == std::string::npos) s.use += (s.use.empty() ? "" : "; ") + use;
}

std::vector<Planned> plan(const std::vector<MoeModelSpec>& models, const Options& o) {
  std::vector<Planned> out;
  auto find_gemm = [&](std::int64_t n, std::int64_t k) -> Planned* {
    for (auto& p : out)
      if ((p.meta.kernel == "gemm" || p.meta.kernel == "batched_gemm" || p.meta.kernel == "grouped_gemm") &&
          p.meta.n == n && p.meta.k == k)
        return &p;
    return nullptr;
  };
  auto find = [&](const std::string& kernel, std::int64_t n, std::int64_t k, std::int64_t batch) -> Planned* {
    for (auto& p : out)
      if (p.meta.kernel == kernel && p.meta.n == n && p.meta.k == k && p.batch == batch) return &p;
    return nullptr;
  };
  for (const MoeModelSpec& md : models) {
    const std::int64_t t = md.tokens_per_gpu();
    const std::set<std::int64_t> tokens = [&] {
      auto s = token_sweep(o.max_tokens > 0 ? o.max_tokens : t, o.quick);
      s.insert(t);  // shared experts and a dense FFN of the expert's width run all t tokens
      return s;
    }();
    const int default_group = o.backend == "cpu" ? 1 : 8;
    const std::int64_t group = std::min<std::int64_t>(o.group > 0 ? o.group : default_group, md.experts);
    const std::string tag = " (" + md.name + ")";
    // Expert GEMMs first: a dense GEMM of the same shape joins their wider sweep.
    for (const GemmNeed& need : required_gemms(md)) {
      Planned* p = find_gemm(need.n, need.k);
      if (p == nullptr) {
        Planned q;
        q.meta.kernel = need.kernel;
        q.meta.n = need.n;
        q.meta.k = need.k;
        q.kernel = kernel_of(need.kernel);
        if (need.kernel == "grouped_gemm") q.meta.group = q.batch = group;
        if (need.kernel == "batched_gemm") q.meta.rows_per_batch = need.rows_per_batch;
        out.push_back(q);
        p = &out.back();
      }
      add_use(p->meta, need.use + tag);
      if (need.kernel == "grouped_gemm") {
        p->ms.insert(tokens.begin(), tokens.end());
      } else {
        p->ms.insert(need.m);
      }
    }
    // The hand-written grouped GEMM, for comparison; on the CPU both are the same code.
    if (o.backend == "cuda") {
      for (const GemmNeed& need : required_gemms(md)) {
        if (need.kernel != "grouped_gemm") continue;
        Planned* p = find("grouped_gemm_custom", need.n, need.k, group);
        if (p == nullptr) {
          Planned q;
          q.meta.kernel = "grouped_gemm_custom";
          q.meta.n = need.n;
          q.meta.k = need.k;
          q.meta.group = q.batch = group;
          q.kernel = Kernel::GroupedGemmCustom;
          out.push_back(q);
          p = &out.back();
        }
        add_use(p->meta, need.use + tag + ", hand-written kernel");
        p->ms.insert(tokens.begin(), tokens.end());
      }
    }
    // Gating and the permutations run over the tokens of one GPU.
    const std::set<std::int64_t> gpu_tokens = token_sweep(t, true);
    const std::tuple<const char*, Kernel, std::int64_t, std::int64_t, std::int64_t, const char*> small[] = {
        {"gating", Kernel::Gating, md.experts, md.top_k, 1, "router softmax and top-k"},
        {"permute", Kernel::Permute, md.hidden, md.top_k, md.experts, "dispatch permutation"},
        {"unpermute", Kernel::Unpermute, md.hidden, md.top_k, 1, "combine (inverse permutation)"},
    };
    for (const auto& [name, kern, n, k, batch, use] : small) {
      Planned* p = find(name, n, k, batch);
      if (p == nullptr) {
        Planned q;
        q.meta.kernel = name;
        q.meta.n = n;
        q.meta.k = k;
        q.kernel = kern;
        q.batch = batch;
        out.push_back(q);
        p = &out.back();
      }
      add_use(p->meta, std::string(use) + tag);
      p->ms.insert(gpu_tokens.begin(), gpu_tokens.end());
    }
  }
  // The optimizer's memory-bound update: bytes streamed, 1 MiB up to what the device holds easily.
  Planned s;
  s.meta.kernel = "stream";
  s.meta.use = "optimizer and other memory-bound kernels (bytes moved)";
  s.kernel = Kernel::Stream;
  const int top = o.backend == "cpu" ? (o.quick ? 24 : 28) : (o.quick ? 30 : 32);
  for (int e = 20; e <= top; ++e) s.ms.insert(std::int64_t{1} << e);
  out.push_back(s);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reference profiles: no timing, the datasheet figures through a stated efficiency curve:
//   time = launch + max(FLOPs / (peak x e(m)), bytes / (HBM bandwidth x kHbmEfficiency))
//   e(m) = gemm_efficiency x m / (m + kHalfRows), m the rows of one GEMM.
constexpr double kLaunchNs = 4000.0;     // kernel launch and library set-up per call
constexpr double kHalfRows = 64.0;       // rows at which a GEMM reaches half its large-GEMM efficiency
constexpr double kHbmEfficiency = 0.8;   // share of the datasheet HBM bandwidth a streaming kernel gets

std::string reference_method(const GpuProfile& g) {
  return fmt::format(
      "not measured: time = {:g} ns launch + max(FLOPs / ({:g} TFLOP/s x e(m)), bytes / ({:g} GB/s x {:g})), "
      "e(m) = {:g} x m / (m + {:g}), m the rows of one GEMM; grouped GEMMs share one launch over the group; "
      "gating, permutations and streams are memory-bound",
      kLaunchNs, g.peak_tflops, g.hbm_gbps, kHbmEfficiency, g.gemm_efficiency, kHalfRows);
}

double reference_ns(const KernelShape& s, const GpuProfile& g, int elem_bytes) {
  const double m = static_cast<double>(s.m), n = static_cast<double>(s.n), k = static_cast<double>(s.k);
  const double batch = static_cast<double>(std::max<std::int64_t>(1, s.batch));
  const double hbm = g.hbm_gbps * kHbmEfficiency;  // bytes per ns
  auto gemm = [&](double rows) {
    const double eff = g.gemm_efficiency * rows / (rows + kHalfRows);
    const double flops = 2.0 * rows * n * k;
    const double bytes = (rows * k + k * n + rows * n) * elem_bytes;
    return std::max(flops / (g.peak_tflops * 1e3 * eff), bytes / hbm);
  };
  switch (s.kernel) {
    case Kernel::Gemm: return kLaunchNs + gemm(m);
    case Kernel::BatchedGemm: return kLaunchNs + batch * gemm(m);
    case Kernel::GroupedGemm:
    case Kernel::GroupedGemmCustom: return kLaunchNs + batch * gemm(m);
    case Kernel::Gating: return kLaunchNs + (m * n * 4 + m * k * 8) / hbm;
    case Kernel::Permute: return kLaunchNs + (2.0 * m * k * n * elem_bytes + m * k * 12) / hbm;
    case Kernel::Unpermute: return kLaunchNs + (m * k * n * elem_bytes + m * n * elem_bytes + m * k * 8) / hbm;
    case Kernel::Stream: return kLaunchNs + m / hbm;
  }
  return 0.0;
}


}  // namespace


int cmd_calibrate(const std::vector<std::string>& args) {
  bool help = false;
  Options o = parse_args(args, help);
  if (help) {
    std::cout << kHelp << "\nProfiles and how the simulator uses them: docs/calibration.md.\n";
    return 0;
  }
  std::vector<MoeModelSpec> models;
  for (const auto& m : o.models) models.push_back(load_model_arg(m));
  for (std::size_t i = 1; i < models.size(); ++i)
    if (models[i].dtype != models[0].dtype)
      bad(fmt::format("--model: '{}' is {} but '{}' is {}; one profile covers one dtype", models[i].name,
                      to_string(models[i].dtype), models[0].name, to_string(models[0].dtype)));
  const int elem_bytes = models.empty() ? 2 : dtype_bytes(models[0].dtype);
  if (!o.cluster.empty())
    (void)predict_collective(o.cluster, "all_reduce", 1 << 20, 2);  // a bad preset fails now

  // The collectives' backend first: a machine without NCCL fails before minutes of kernel timing.
  std::unique_ptr<kernels::CollectiveBackend> coll;
  if (o.collectives) {
    if (o.backend == "cuda") {
      std::string why;
      coll = kernels::make_nccl_collectives(o.ranks, &why);
      if (!coll) throw InputError("moesim calibrate --backend cuda --collectives: " + why);
    } else {
      coll = kernels::make_cpu_collectives(o.ranks > 0 ? o.ranks : 4);
    }
  }

  GpuProfile gpu;
  std::unique_ptr<kernels::KernelBackend> backend;
  ComputeProfile prof;
  kernels::TimingOptions timing;
  if (o.backend == "reference") {
    YAML::Node n;
    n["gpu"] = o.gpu;
    n["pcie_gbps"] = 1;  // load_cluster needs a complete cluster; only the GPU is used
    n["host_memory_bytes"] = 1e9;
    gpu = load_cluster(Cfg(n, "--gpu", "")).gpu;
    prof.measured = false;
    prof.device = gpu.name + " (datasheet figures)";
    prof.method = reference_method(gpu);
    prof.sources = gpu.sources;
    prof.sources.push_back("efficiency curve and launch time: moesim's stated assumption, docs/calibration.md");
    prof.compute_dtype = to_string(models[0].dtype);
  } else {
    if (models.empty()) {
      // Collectives alone: no kernel backend.
    } else if (o.backend == "cuda") {
      std::string why;
      backend = kernels::make_cuda_backend(&why);
      if (!backend) throw InputError("moesim calibrate --backend cuda: " + why);
    } else {
      backend = kernels::make_cpu_backend();
    }
    const bool gpu_side = o.backend == "cuda";
    timing.warmup = o.warmup >= 0 ? o.warmup : (o.quick ? 1 : gpu_side ? 5 : 1);
    timing.reps = o.reps > 0 ? o.reps : (o.quick ? 3 : gpu_side ? 20 : 5);
    timing.min_reps = std::min(timing.reps, o.quick ? 2 : 3);
    timing.budget_s = o.budget_s >= 0 ? o.budget_s : (o.quick ? 0.05 : 0.5);
    prof.measured = true;
    if (backend) {
      const kernels::DeviceInfo d = backend->device();
      prof.device = d.name;
      prof.driver = d.driver;
      prof.toolkit = d.toolkit;
      prof.library = d.library;
    } else {
      const kernels::CollectiveDeviceInfo d = coll->info();
      prof.device = d.name;
      prof.driver = d.driver;
      prof.toolkit = d.toolkit;
      prof.library = d.nccl.empty() ? "" : "NCCL " + d.nccl;
    }
    prof.compute_dtype = gpu_side ? "bf16" : "fp32";
    if (backend) {  // the collectives' timing is in their own section
      prof.warmup = timing.warmup;
      prof.reps = timing.reps;
      prof.budget_s = timing.budget_s;
    }
    if (models.empty()) {
      prof.method = "collectives only (moesim calibrate --collectives without --model): no kernel series";
    } else if (gpu_side) {
      prof.method =
          "measured: CUDA events around each call, calls queued back to back after warm-up; grouped GEMM "
          "times are per expert (call time / group), grouped_gemm the faster of cuBLAS's grouped call and "
          "one GEMM per expert";
    } else {
      prof.method =
          "measured: wall clock around each call on the CPU (Eigen GEMMs in fp32); grouped GEMM times are "
          "per expert (call time / group)";
    }
  }
  prof.backend = o.backend;
  prof.command = "moesim calibrate";
  for (const auto& a : args) prof.command += " " + a;
  prof.date = utc_now();
  prof.dtype = models.empty() ? "bf16" : to_string(models[0].dtype);
  for (const auto& m : models) prof.models.push_back(m.name);

  const auto start = std::chrono::steady_clock::now();
  std::size_t shapes = 0;
  for (Planned& p : models.empty() ? std::vector<Planned>{} : plan(models, o)) {
    const auto s0 = std::chrono::steady_clock::now();
    ProfileSeries s = p.meta;
    for (std::int64_t m : p.ms) {
      KernelShape shape{p.kernel, m, s.n, s.k, p.batch};
      double m_recorded = static_cast<double>(m);
      if (p.kernel == Kernel::BatchedGemm) {
        // m counts the rows of the whole batch; one GEMM has rows_per_batch of them.
        shape.batch = std::max<std::int64_t>(1, m / s.rows_per_batch);
        shape.m = s.rows_per_batch;
        m_recorded = static_cast<double>(shape.batch * s.rows_per_batch);
      }
      ProfilePoint q;
      q.m = m_recorded;
      const double per = p.kernel == Kernel::GroupedGemm || p.kernel == Kernel::GroupedGemmCustom
                             ? static_cast<double>(p.batch)
                             : 1.0;
      if (backend) {
        const kernels::SampleStats st = kernels::sample_stats(backend->time(shape, timing));
        q.median_ns = st.median / per;
        q.p10_ns = st.p10 / per;
        q.p90_ns = st.p90 / per;
      } else {
        q.median_ns = q.p10_ns = q.p90_ns = reference_ns(shape, gpu, elem_bytes) / per;
      }
      // Tenths of a nanosecond are below any timer's resolution; a timer can read 0 for a copy
      // of nothing, and a profile holds positive times.
      for (double* v : {&q.median_ns, &q.p10_ns, &q.p90_ns}) *v = std::round(*v * 10.0) / 10.0;
      q.median_ns = std::max(q.median_ns, 1.0);
      q.p10_ns = std::clamp(q.p10_ns, 1.0, q.median_ns);
      q.p90_ns = std::max(q.p90_ns, q.median_ns);
      if (!s.points.empty() && q.m <= s.points.back().m) continue;
      s.points.push_back(q);
      ++shapes;
    }
    if (!o.quiet) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
      std::cout << fmt::format("{:<20} n={:<7} k={:<7} {:>3} shapes  {:>7.2f} s  {}\n", s.kernel, s.n, s.k,
                               s.points.size(), secs, s.use);
    }
    prof.series.push_back(std::move(s));
  }
  if (coll) {
    kernels::TimingOptions ct;
    ct.warmup = o.warmup >= 0 ? o.warmup : 5;
    ct.reps = o.reps > 0 ? o.reps : (o.quick ? 5 : 20);
    ct.min_reps = std::min(ct.reps, 3);
    ct.budget_s = o.budget_s >= 0 ? o.budget_s : (o.quick ? 0.1 : 0.5);
    CollectiveRun cr = run_collectives(*coll, o, ct);
    if (cr.measured) {
      prof.collectives = std::move(cr.section);
      const std::string preset =
          !o.cluster.empty() ? o.cluster
                             : (o.backend == "cuda" ? default_cluster_for(prof.collectives.device) : "");
      if (!o.quiet) {
        if (!preset.empty()) {
          std::cout << collective_comparison(prof.collectives, preset);
        } else if (o.backend == "cuda") {
          std::cout << fmt::format(
              "no cluster preset matches '{}'; pass --cluster PRESET ({}) to compare with the "
              "simulator\n",
              prof.collectives.device, fmt::join(cluster_preset_names(), ", "));
        }
      }
    }
  }
  if (prof.series.empty() && !prof.collectives.present) {
    if (!o.quiet) std::cout << fmt::format("nothing measured: {} not written\n", o.out);
    return 0;
  }
  write_file_atomic(o.out, profile_to_yaml(prof));
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!o.quiet)
    std::cout << fmt::format(
        "wrote {} ({} backend, {}: {} series, {} shapes{}) in {:.1f} s\n", o.out, o.backend, prof.device,
        prof.series.size(), shapes,
        prof.collectives.present ? fmt::format(", collectives on {} ranks", prof.collectives.gpus) : "",
        total);
  return 0;
}

}  // namespace moesim
