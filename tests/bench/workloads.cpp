// The performance workloads of flowmatch, with Google Benchmark. Each benchmark reports, next to
// its time, the GEMM FLOP rate it achieves and the rate of the same matrix products done as
// bare Eigen GEMMs in the same run (measured just before the benchmark), and their ratio:
//
//   gflops      2·m·n·k summed over the matrix products of one iteration, per second of CPU
//               time of the process (so that other programs on a shared machine count less);
//   ref_gflops  the same products as plain `C.noalias() = A * B` on random matrices, per CPU
//               second;
//   efficiency  gflops / ref_gflops (the figure to raise; absolute times are noise on a shared
//               machine);
//   cores       CPU seconds per wall-clock second during the benchmark (how many threads really
//               ran; below the thread count when the machine is busy);
//   nfe         field evaluations per iteration;
//   fwd_evals   (likelihood only) the time of one evaluation of the augmented dynamics
//               (velocity and divergence) in units of one velocity evaluation.
//
// Workloads (fixed seeds, networks initialised as nn.Linear):
//   sample/...      2-D, MLP [x, t] → 4×128 SiLU → 2, N = 1024, 16384, 262144, midpoint with 50
//                   steps and dopri5 at rtol = atol = 1e-5;
//   likelihood/...  32-D, MLP 33 → 3×256 SiLU → 32, N = 1024, 8192, midpoint with 100 steps,
//                   exact divergence and Hutchinson with one Rademacher probe;
//   train_step/...  loss, backward and Adam at batch 1024 for the sampling MLP;
//   exact_ot/...    exact OT pairing of two minibatches of 256 and 1024 in 2-D and 64-D.
// The name ends in /plain for the network called directly, /threads:T for the network wrapped
// in a ParallelField over T threads (chunks of 256 columns).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "flowmatch/coupling/exact_ot.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/flow_matching_loss.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Mlp;
using flowmatch::MlpConfig;
using Clock = std::chrono::steady_clock;

// One matrix product (rows×inner)·(inner×cols), repeated `count` times per iteration.
struct Product {
  Index rows;
  Index inner;
  Index cols;
  Index count = 1;
};

double flop_count(const std::vector<Product>& products) {
  double flops = 0;
  for (const Product& p : products) {
    flops += 2.0 * static_cast<double>(p.rows * p.inner) * static_cast<double>(p.cols * p.count);
  }
  return flops;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

// Wall-clock and CPU time since construction.
struct Stopwatch {
  Clock::time_point wall_start = Clock::now();
  double cpu_start = process_cpu_seconds();
  [[nodiscard]] double wall() const { return seconds_since(wall_start); }
  [[nodiscard]] double cpu() const { return process_cpu_seconds() - cpu_start; }
};

// The FLOP rate of @p products as bare Eigen GEMMs: random operands, products of more than
// `panel` columns done panel by panel (the same flops, bounded memory); best of several runs.
// Google Benchmark may run a benchmark function several times; the rate is measured once per
// list of products and scalar type.
template <class Scalar>
double bare_gemm_rate(const std::vector<Product>& products) {
  static std::map<std::string, double> measured;
  std::string key;
  for (const Product& p : products) {
    key += std::to_string(p.rows) + "x" + std::to_string(p.inner) + "x" + std::to_string(p.cols) +
           "x" + std::to_string(p.count) + ";";
  }
  if (const auto found = measured.find(key); found != measured.end()) return found->second;
  constexpr Index panel = 4096;
  struct Operands {
    Matrix<Scalar> a, b, c;
    Index panels;
    Index last_cols;
    Index count;
  };
  std::vector<Operands> operands;
  for (const Product& p : products) {
    const Index width = std::min(panel, p.cols);
    const Index panels = (p.cols + panel - 1) / panel;
    operands.push_back({Matrix<Scalar>::Random(p.rows, p.inner),
                        Matrix<Scalar>::Random(p.inner, width), Matrix<Scalar>(p.rows, width),
                        panels, p.cols - (panels - 1) * width, p.count});
  }
  const auto run_all = [&] {
    for (Operands& o : operands) {
      for (Index repeat = 0; repeat < o.count; ++repeat) {
        for (Index k = 0; k < o.panels; ++k) {
          const Index cols = k + 1 == o.panels ? o.last_cols : o.b.cols();
          o.c.leftCols(cols).noalias() = o.a * o.b.leftCols(cols);
        }
      }
    }
    benchmark::DoNotOptimize(operands.front().c.data());
  };
  run_all();  // warm-up
  double best = 1e300;
  double total = 0;
  for (int run = 0; run < 10 && (run < 3 || total < 0.3); ++run) {
    const Stopwatch watch;
    run_all();
    const double seconds = watch.cpu();
    best = std::min(best, seconds);
    total += seconds;
  }
  return measured[key] = flop_count(products) / best;
}

// Achieved and reference rates into the benchmark's counters.
void report_rates(benchmark::State& state, double flops_per_iteration, const Stopwatch& watch,
                  double reference_rate) {
  const double iterations = static_cast<double>(state.iterations());
  const double cpu_seconds = watch.cpu();
  const double achieved = flops_per_iteration * iterations / cpu_seconds;
  state.counters["cores"] = cpu_seconds / watch.wall();
  state.counters["gflops"] = achieved * 1e-9;
  state.counters["ref_gflops"] = reference_rate * 1e-9;
  state.counters["efficiency"] = achieved / reference_rate;
}

template <class Scalar>
Matrix<Scalar> normal_batch(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  return flowmatch::StandardNormal::sample<Scalar>(rows, cols, generator);
}

template <class Scalar>
Mlp<Scalar> make_network(Index dim, std::vector<Index> hidden, std::uint64_t seed) {
  MlpConfig config;
  config.dim = dim;
  config.hidden = std::move(hidden);
  config.activation = flowmatch::Activation::silu;
  std::mt19937_64 generator(seed);
  return Mlp<Scalar>(config, generator);
}

// The products of one forward pass of @p net on N columns with a shared time (W_t·φ(t) is a
// matrix-vector product, left out).
template <class Scalar>
std::vector<Product> forward_products(const Mlp<Scalar>& net, Index columns) {
  std::vector<Product> products{{net.layer_output_size(0), net.dim(), columns}};
  for (Index layer = 1; layer < net.layer_count(); ++layer) {
    products.push_back({net.layer_output_size(layer), net.layer_input_size(layer), columns});
  }
  return products;
}

// Calls run(field) with the network itself (threads = 0) or a ParallelField over a pool of
// `threads` threads.
template <class Scalar, class Run>
void with_field(const Mlp<Scalar>& net, int threads, const Run& run) {
  if (threads == 0) {
    run(net);
    return;
  }
  flowmatch::ThreadPool pool(threads);
  run(flowmatch::parallel_field(std::cref(net), pool));
}

std::string field_suffix(int threads) {
  return threads == 0 ? "/plain" : "/threads:" + std::to_string(threads);
}

// Workload 1: sampling.
template <class Scalar>
void sample_benchmark(benchmark::State& state, flowmatch::Method method, Index columns,
                      int threads) {
  const Mlp<Scalar> net = make_network<Scalar>(2, {128, 128, 128, 128}, 1);
  const Matrix<Scalar> x0 = normal_batch<Scalar>(2, columns, 2);
  flowmatch::SolverOptions<Scalar> options;
  options.method = method;
  if (!flowmatch::is_adaptive(method)) options.step_size = Scalar(1) / Scalar(50);
  options.rtol = options.atol = Scalar(1e-5);
  const std::vector<Product> per_eval = forward_products(net, columns);
  const double reference = bare_gemm_rate<Scalar>(per_eval);
  with_field(net, threads, [&](const auto& field) {
    std::size_t nfe = 0;
    const Stopwatch watch;
    for (auto _ : state) {
      const flowmatch::SolveResult<Scalar> result = flowmatch::sample(field, x0, options);
      benchmark::DoNotOptimize(result.state.data());
      nfe = result.stats.nfe;
    }
    state.counters["nfe"] = static_cast<double>(nfe);
    state.counters["samples_per_s"] =
        static_cast<double>(columns) * static_cast<double>(state.iterations()) / watch.wall();
    report_rates(state, static_cast<double>(nfe) * flop_count(per_eval), watch, reference);
  });
}

// Workload 2: log-likelihood, exact or Hutchinson (one probe).
template <class Scalar>
void likelihood_benchmark(benchmark::State& state, bool exact, Index columns, int threads) {
  const Index dim = 32;
  const Mlp<Scalar> net = make_network<Scalar>(dim, {256, 256, 256}, 3);
  const Matrix<Scalar> x = normal_batch<Scalar>(dim, columns, 4);
  flowmatch::SolverOptions<Scalar> options;
  options.method = flowmatch::Method::midpoint;
  options.step_size = Scalar(1) / Scalar(100);
  // Velocity and divergence per evaluation: exact = forward, then forward + d tangent
  // directions + the trace contraction; Hutchinson = forward, then forward + one tangent.
  std::vector<Product> per_eval = forward_products(net, columns);
  const std::vector<Product> forward = per_eval;
  per_eval.insert(per_eval.end(), forward.begin(), forward.end());
  if (exact) {
    for (Index layer = 1; layer + 1 < net.layer_count(); ++layer) {
      per_eval.push_back(
          {net.layer_output_size(layer), net.layer_input_size(layer), dim * columns});
    }
    per_eval.push_back({1, net.layer_input_size(net.layer_count() - 1), columns, dim});
  } else {
    per_eval.insert(per_eval.end(), forward.begin(), forward.end());
  }
  const double reference = bare_gemm_rate<Scalar>(per_eval);
  with_field(net, threads, [&](const auto& field) {
    // One velocity evaluation of the same field, for the cost in forward evaluations.
    Matrix<Scalar> velocity(dim, columns);
    field(Scalar(0.5), x, velocity);
    double forward_seconds = 1e300;
    for (int run = 0; run < 5; ++run) {
      const Stopwatch forward_watch;
      field(Scalar(0.5), x, velocity);
      forward_seconds = std::min(forward_seconds, forward_watch.cpu());
    }
    std::mt19937_64 probe_generator(5);
    const flowmatch::Hutchinson<std::mt19937_64> hutchinson(
        1, flowmatch::ProbeDistribution::rademacher, probe_generator);
    std::size_t nfe = 0;
    const Stopwatch watch;
    for (auto _ : state) {
      const flowmatch::LikelihoodResult<Scalar> result =
          exact ? flowmatch::log_likelihood(field, x, options)
                : flowmatch::log_likelihood(field, x, options, hutchinson);
      benchmark::DoNotOptimize(result.log_prob.data());
      nfe = result.stats.nfe;
    }
    const double eval_seconds =
        watch.cpu() / static_cast<double>(state.iterations()) / static_cast<double>(nfe);
    state.counters["nfe"] = static_cast<double>(nfe);
    state.counters["fwd_evals"] = eval_seconds / forward_seconds;
    state.counters["fwd_evals_target"] = 1.5 * static_cast<double>(dim + 1);
    report_rates(state, static_cast<double>(nfe) * flop_count(per_eval), watch, reference);
  });
}

// Workload 3: one training step (loss, backward, Adam) at batch 1024.
template <class Scalar>
void train_step_benchmark(benchmark::State& state) {
  const Index batch = 1024;
  Mlp<Scalar> net = make_network<Scalar>(2, {128, 128, 128, 128}, 6);
  flowmatch::FlowMatchingBatch<Scalar> data;
  std::mt19937_64 generator(7);
  std::uniform_real_distribution<double> uniform;
  data.t.resize(batch);
  for (Scalar& t : data.t) t = Scalar(uniform(generator));
  data.x_t = normal_batch<Scalar>(2, batch, 8);
  data.u_t = normal_batch<Scalar>(2, batch, 9);
  // Forward with per-sample times (W_t·φ is a product), then per layer the weight gradient
  // δ·hᵀ and, above the first layer, the propagated adjoint Wᵀ·δ.
  std::vector<Product> products = forward_products(net, batch);
  products.push_back({net.layer_output_size(0), 1, batch});
  for (Index layer = 0; layer < net.layer_count(); ++layer) {
    products.push_back({net.layer_output_size(layer), batch, net.layer_input_size(layer)});
    if (layer > 0) {
      products.push_back({net.layer_input_size(layer), net.layer_output_size(layer), batch});
    }
  }
  const double reference = bare_gemm_rate<Scalar>(products);
  flowmatch::MlpWorkspace<Scalar> workspace;
  flowmatch::MlpGradient<Scalar> gradient;
  flowmatch::Adam<Scalar> adam(net.parameters().size());
  const Stopwatch watch;
  for (auto _ : state) {
    const Scalar loss = flowmatch::mlp_flow_matching_loss(net, workspace, data, gradient);
    benchmark::DoNotOptimize(loss);
    adam.step(net.parameters(), gradient.flat(), Scalar(1e-4));  // θ in place
  }
  report_rates(state, flop_count(products), watch, reference);
}

// Workload 4: exact OT pairing of two minibatches.
template <class Scalar>
void exact_ot_benchmark(benchmark::State& state, Index columns, Index dim) {
  const Matrix<Scalar> x0 = normal_batch<Scalar>(dim, columns, 10);
  const Matrix<Scalar> x1 = normal_batch<Scalar>(dim, columns, 11);
  const std::vector<Product> products{{columns, dim, columns}};  // the cost's x0ᵀ·x1
  const double reference = bare_gemm_rate<Scalar>(products);
  const Stopwatch watch;
  for (auto _ : state) {
    const flowmatch::AssignmentResult<Scalar> result = flowmatch::exact_ot_pairing(x0, x1);
    benchmark::DoNotOptimize(result.total_cost);
  }
  report_rates(state, flop_count(products), watch, reference);
}

template <class Scalar>
void register_workloads(const std::string& type) {
  using flowmatch::Method;
  for (const Index columns : {Index{1024}, Index{16384}, Index{262144}}) {
    for (const int threads : {0, 1, 2}) {
      if (threads > 0 && columns < 16384) continue;
      for (const Method method : {Method::midpoint, Method::dopri5}) {
        const std::string name = "sample/" + std::string(flowmatch::method_name(method)) + "/" +
                                 type + "/N:" + std::to_string(columns) + field_suffix(threads);
        benchmark::RegisterBenchmark(name.c_str(), sample_benchmark<Scalar>, method, columns,
                                     threads)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  for (const Index columns : {Index{1024}, Index{8192}}) {
    for (const int threads : {0, 1, 2}) {
      if (threads == 2 && columns < 8192) continue;
      for (const bool exact : {true, false}) {
        const std::string name = std::string("likelihood/") + (exact ? "exact" : "hutchinson") +
                                 "/" + type + "/N:" + std::to_string(columns) +
                                 field_suffix(threads);
        benchmark::RegisterBenchmark(name.c_str(), likelihood_benchmark<Scalar>, exact, columns,
                                     threads)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  benchmark::RegisterBenchmark(("train_step/" + type + "/batch:1024").c_str(),
                               train_step_benchmark<Scalar>)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  for (const Index columns : {Index{256}, Index{1024}}) {
    for (const Index dim : {Index{2}, Index{64}}) {
      const std::string name =
          "exact_ot/" + type + "/N:" + std::to_string(columns) + "/d:" + std::to_string(dim);
      benchmark::RegisterBenchmark(name.c_str(), exact_ot_benchmark<Scalar>, columns, dim)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_workloads<float>("float");
  register_workloads<double>("double");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
