// Entropic minibatch OT with Google Benchmark: sinkhorn on the squared Euclidean cost between
// two point clouds, in double and in float, for regularisations ε given as fractions of the
// mean cost. The cost is computed before the timed loop; an iteration is one sinkhorn call
// (wall time). Counters, from the result of the last call:
//   iterations      the (φ, ψ) updates run (SinkhornResult::iterations);
//   marginal_error  SinkhornResult::marginal_error;
//   row_error, column_error
//                   Σ_i |Σ_j π_ij − 1/N| and Σ_j |Σ_i π_ij − 1/M| of π = exp(log_plan), both
//                   summed in double (as tests/bench/sinkhorn_vs_pot.py computes them for POT);
//   converged       1 or 0;
//   epsilon         the absolute ε used;
//   transport_cost  ⟨C, π⟩.
//
// Usage: sinkhorn_bench [--points-dir DIR] [--epsilons F,F,...] [--tolerance T]
//                       [--max-iterations K] [--save-plans DIR] [Google Benchmark flags]
//   --points-dir DIR    every pair DIR/NAME_x0.npy, DIR/NAME_x1.npy (float64 arrays [N, d] and
//                       [M, d]) is a workload NAME, so that other solvers can be run on the
//                       same problems; without it: 1024 standard normal points against the
//                       eight-Gaussian mixture in 2-D (eight_gaussians_1024) and against a
//                       ten-component Gaussian mixture in 32-D (mixture32_1024).
//   --epsilons F,...    ε as fractions of the mean cost (default 1,0.1,0.01,0.001).
//   --tolerance T       SinkhornOptions::tolerance (default: the library's, per scalar type).
//   --max-iterations K  SinkhornOptions::max_iterations (default: the library's, 1000).
//   --save-plans DIR    after each benchmark, write its plan to DIR/NAME_TYPE_eps:F.npy as a
//                       float64 array of shape [M, N] (the transpose of π).
// Names: sinkhorn/<workload>/<double|float>/eps:<fraction>.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/coupling/sinkhorn.hpp"
#include "flowmatch/data/toy_datasets.hpp"
#include "flowmatch/io/npy.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;

constexpr const char* usage =
    "usage: sinkhorn_bench [--points-dir DIR] [--epsilons F,F,...] [--tolerance T]\n"
    "                      [--max-iterations K] [--save-plans DIR] [benchmark flags]\n";

struct Settings {
  std::string points_dir;
  std::vector<std::string> epsilons{"1", "0.1", "0.01", "0.001"};
  std::string tolerance;     // empty: the library's default
  Index max_iterations = 0;  // 0: the library's default
  std::string save_plans_dir;
};

// Two point clouds, d×N and d×M, in double.
using Workload = std::pair<Matrix<double>, Matrix<double>>;

Matrix<double> standard_normal_points(Index dim, Index count, std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  Matrix<double> points(dim, count);
  for (double& value : points.reshaped()) value = normal(generator);
  return points;
}

// Ten clusters in 32-D: means drawn from N(0, 4I), spread 0.5, equal weights.
Matrix<double> mixture_points(Index count, std::mt19937_64& generator) {
  const Index dim = 32;
  const Matrix<double> means = 2.0 * standard_normal_points(dim, 10, generator);
  std::uniform_int_distribution<Index> component(0, 9);
  Matrix<double> points = 0.5 * standard_normal_points(dim, count, generator);
  for (Index k = 0; k < count; ++k) points.col(k) += means.col(component(generator));
  return points;
}

std::map<std::string, Workload> built_in_workloads() {
  std::mt19937_64 generator(7);
  std::map<std::string, Workload> workloads;
  workloads["eight_gaussians_1024"] = {standard_normal_points(2, 1024, generator),
                                       flowmatch::sample_eight_gaussians(1024, generator)};
  workloads["mixture32_1024"] = {standard_normal_points(32, 1024, generator),
                                 mixture_points(1024, generator)};
  return workloads;
}

std::map<std::string, Workload> workloads_in(const std::string& dir) {
  std::map<std::string, Workload> workloads;
  const std::string suffix = "_x0.npy";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (file.size() <= suffix.size() || !file.ends_with(suffix)) continue;
    const std::string name = file.substr(0, file.size() - suffix.size());
    const std::string x1_path = dir + "/" + name + "_x1.npy";
    if (!std::filesystem::exists(x1_path)) continue;
    workloads[name] = {flowmatch::io::load_npy_batch<double>(entry.path().string()),
                       flowmatch::io::load_npy_batch<double>(x1_path)};
  }
  if (workloads.empty()) {
    throw std::runtime_error("no NAME_x0.npy with a matching NAME_x1.npy in " + dir);
  }
  return workloads;
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) items.push_back(item);
  return items;
}

template <class Scalar>
void sinkhorn_benchmark(benchmark::State& state, const Matrix<Scalar>& cost,
                        const flowmatch::SinkhornOptions<Scalar>& options,
                        const std::string& plan_path) {
  flowmatch::SinkhornResult<Scalar> result;
  for (auto _ : state) {
    result = flowmatch::sinkhorn(cost, options);
    // On the whole result: libbenchmark 1.7's DoNotOptimize may corrupt a lone double (GCC).
    benchmark::DoNotOptimize(result);
  }
  const Matrix<double> plan = result.log_plan.template cast<double>().array().exp().matrix();
  const double rows = static_cast<double>(plan.rows());
  const double cols = static_cast<double>(plan.cols());
  state.counters["iterations"] = static_cast<double>(result.iterations);
  state.counters["marginal_error"] = static_cast<double>(result.marginal_error);
  state.counters["row_error"] = (plan.rowwise().sum().array() - 1.0 / rows).abs().sum();
  state.counters["column_error"] = (plan.colwise().sum().array() - 1.0 / cols).abs().sum();
  state.counters["converged"] = result.converged ? 1.0 : 0.0;
  state.counters["epsilon"] = static_cast<double>(result.epsilon);
  state.counters["transport_cost"] = (plan.array() * cost.template cast<double>().array()).sum();
  if (!plan_path.empty()) flowmatch::io::save_npy(plan_path, plan);
}

// The cost of a workload in one precision, computed when a benchmark first needs it (a filter
// usually selects a few of the benchmarks, and a cost of 4096² doubles takes 128 MiB).
template <class Scalar>
class LazyCost {
 public:
  explicit LazyCost(const Workload& points) : points_(points) {}

  const Matrix<Scalar>& get() {
    if (cost_.size() == 0) {
      cost_ = flowmatch::squared_euclidean_cost<Scalar>(points_.first.cast<Scalar>(),
                                                        points_.second.cast<Scalar>());
    }
    return cost_;
  }

 private:
  const Workload& points_;
  Matrix<Scalar> cost_;
};

template <class Scalar>
void register_workload(const std::string& name, const Workload& points, const std::string& type,
                       const Settings& settings) {
  auto cost = std::make_shared<LazyCost<Scalar>>(points);
  for (const std::string& fraction : settings.epsilons) {
    flowmatch::SinkhornOptions<Scalar> options;
    options.epsilon = static_cast<Scalar>(std::stod(fraction));
    options.epsilon_relative_to_mean_cost = true;
    if (!settings.tolerance.empty()) {
      options.tolerance = static_cast<Scalar>(std::stod(settings.tolerance));
    }
    if (settings.max_iterations > 0) options.max_iterations = settings.max_iterations;
    const std::string suffix = name + "/" + type + "/eps:" + fraction;
    const std::string plan_path =
        settings.save_plans_dir.empty()
            ? std::string()
            : settings.save_plans_dir + "/" + name + "_" + type + "_eps:" + fraction + ".npy";
    benchmark::RegisterBenchmark(("sinkhorn/" + suffix).c_str(),
                                 [cost, options, plan_path](benchmark::State& state) {
                                   sinkhorn_benchmark<Scalar>(state, cost->get(), options,
                                                              plan_path);
                                 })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

// Reads the flags left after benchmark::Initialize; returns false on an unknown one.
bool parse_settings(int argc, char** argv, Settings& settings) {
  const std::map<std::string, std::string*> text_flags = {
      {"--points-dir", &settings.points_dir},
      {"--tolerance", &settings.tolerance},
      {"--save-plans", &settings.save_plans_dir}};
  for (int k = 1; k < argc; ++k) {
    std::string argument = argv[k];
    std::string value;
    if (const auto equals = argument.find('='); equals != std::string::npos) {
      value = argument.substr(equals + 1);
      argument.resize(equals);
    } else if (k + 1 < argc) {
      value = argv[++k];
    } else {
      return false;
    }
    if (const auto flag = text_flags.find(argument); flag != text_flags.end()) {
      *flag->second = value;
    } else if (argument == "--epsilons") {
      settings.epsilons = split_list(value);
    } else if (argument == "--max-iterations") {
      settings.max_iterations = std::stol(value);
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Settings settings;
  if (!parse_settings(argc, argv, settings)) {
    std::cerr << "sinkhorn_bench: unrecognised arguments\n" << usage;
    return 1;
  }
  std::map<std::string, Workload> workloads;
  try {
    workloads =
        settings.points_dir.empty() ? built_in_workloads() : workloads_in(settings.points_dir);
    for (const auto& [name, points] : workloads) {
      register_workload<double>(name, points, "double", settings);
      register_workload<float>(name, points, "float", settings);
    }
  } catch (const std::exception& error) {
    std::cerr << "sinkhorn_bench: " << error.what() << "\n";
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
