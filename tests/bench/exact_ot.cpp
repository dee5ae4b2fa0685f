// Exact minibatch optimal transport with Google Benchmark: solve_assignment on the squared
// Euclidean cost between two point clouds of N ∈ {1024, 4096} points in d ∈ {2, 32} dimensions,
// in double and in float. The cost is computed before the timed loop; an iteration is one
// solve_assignment. The counter total_cost is the optimal Σ_i C_iσ(i) (not divided by N).
//
// Usage: exact_ot_bench [--points-dir DIR] [Google Benchmark flags]
//   --points-dir DIR  read the clouds from DIR/x0_N{n}_d{d}.npy and DIR/x1_N{n}_d{d}.npy
//                     (float64 arrays of shape [n, d], as tests/bench/exact_ot_vs_pot.py writes
//                     them), so that other solvers can be run on the same problems; without it
//                     both clouds are standard normal, drawn with fixed seeds.
// Names: exact_ot/<double|float>/N:<n>/d:<d>.
#include <cstdint>
#include <iostream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

#include <benchmark/benchmark.h>

#include "flowmatch/coupling/exact_ot.hpp"
#include "flowmatch/io/npy.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;

constexpr const char* usage = "usage: exact_ot_bench [--points-dir DIR] [benchmark flags]\n";

template <class Scalar>
Matrix<Scalar> standard_normal_points(Index dim, Index count, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal;
  Matrix<double> points(dim, count);
  for (double& value : points.reshaped()) value = normal(generator);
  return points.cast<Scalar>();
}

template <class Scalar>
Matrix<Scalar> load_points(const std::string& path, Index dim, Index count) {
  Matrix<Scalar> points = flowmatch::io::load_npy_batch<Scalar>(path);
  if (points.rows() != dim || points.cols() != count) {
    throw std::runtime_error(path + " holds " + std::to_string(points.cols()) + " points in " +
                             std::to_string(points.rows()) + " dimensions, expected " +
                             std::to_string(count) + " in " + std::to_string(dim));
  }
  return points;
}

// The two clouds x0, x1 (d×N each) of one workload.
template <class Scalar>
std::pair<Matrix<Scalar>, Matrix<Scalar>> workload_points(const std::string& points_dir, Index dim,
                                                          Index count) {
  if (points_dir.empty()) {
    return {standard_normal_points<Scalar>(dim, count, 1),
            standard_normal_points<Scalar>(dim, count, 2)};
  }
  const std::string suffix = "_N" + std::to_string(count) + "_d" + std::to_string(dim) + ".npy";
  return {load_points<Scalar>(points_dir + "/x0" + suffix, dim, count),
          load_points<Scalar>(points_dir + "/x1" + suffix, dim, count)};
}

template <class Scalar>
void solve_assignment_benchmark(benchmark::State& state,
                                const std::pair<Matrix<Scalar>, Matrix<Scalar>>& points) {
  const Matrix<Scalar> cost = flowmatch::squared_euclidean_cost(points.first, points.second);
  flowmatch::AssignmentResult<Scalar> result;
  for (auto _ : state) {
    result = flowmatch::solve_assignment(cost);
    // On the whole result: libbenchmark 1.7's DoNotOptimize may corrupt a lone double (GCC).
    benchmark::DoNotOptimize(result);
  }
  state.counters["total_cost"] = static_cast<double>(result.total_cost);
}

template <class Scalar>
void register_workloads(const std::string& type, const std::string& points_dir) {
  for (const Index count : {1024, 4096}) {
    for (const Index dim : {2, 32}) {
      auto points = std::make_shared<const std::pair<Matrix<Scalar>, Matrix<Scalar>>>(
          workload_points<Scalar>(points_dir, dim, count));
      const std::string name =
          "exact_ot/" + type + "/N:" + std::to_string(count) + "/d:" + std::to_string(dim);
      benchmark::RegisterBenchmark(name.c_str(), [points](benchmark::State& state) {
        solve_assignment_benchmark<Scalar>(state, *points);
      })->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::string points_dir;
  for (int k = 1; k < argc; ++k) {
    const std::string argument = argv[k];
    const std::string flag = "--points-dir";
    if (argument == flag && k + 1 < argc) {
      points_dir = argv[++k];
    } else if (argument.rfind(flag + "=", 0) == 0) {
      points_dir = argument.substr(flag.size() + 1);
    } else {
      std::cerr << "exact_ot_bench: unrecognised argument " << argument << "\n" << usage;
      return 1;
    }
  }
  try {
    register_workloads<double>("double", points_dir);
    register_workloads<float>("float", points_dir);
  } catch (const std::exception& error) {
    std::cerr << "exact_ot_bench: " << error.what() << "\n";
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
