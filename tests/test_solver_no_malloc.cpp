// The stepping loop of every method allocates nothing once its steppers are sized.
// EIGEN_RUNTIME_NO_MALLOC must be defined before Eigen is included anywhere in this program.
// Eigen reports a forbidden allocation through eigen_assert, which release builds compile out;
// here eigen_assert counts failures instead, in every build type.
#include <cstddef>

namespace {
std::size_t failed_eigen_assertions = 0;
void record_failed_eigen_assertion() {
  ++failed_eigen_assertions;
}
}  // namespace

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(condition) ((condition) ? void(0) : record_failed_eigen_assertion())
#include <catch2/catch.hpp>

#include <random>
#include <vector>

#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::ConstMatrixRef;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Method;

// An in-place, allocation-free field: u_t(x) = μ + (t s² − (1 − t))/σ_t² · (x − tμ).
struct GaussianFlow {
  flowmatch::Vector<double> mu;
  double s;
  void operator()(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    const double rate = (t * s * s - (1 - t)) / (t * t * s * s + (1 - t) * (1 - t));
    for (Eigen::Index j = 0; j < x.cols(); ++j) out.col(j) = rate * (x.col(j) - t * mu) + mu;
  }
};

// Re-enables allocation however the test leaves its scope.
struct AllowMallocOnExit {
  ~AllowMallocOnExit() { Eigen::internal::set_is_malloc_allowed(true); }
};

}  // namespace

TEST_CASE("a forbidden allocation is detected", "[solver][no-malloc]") {
  failed_eigen_assertions = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  const Matrix<double> allocated(16, 16);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(allocated.size() == 256);
  CHECK(failed_eigen_assertions > 0);
}

TEST_CASE("no allocation after the first accepted step", "[solver][no-malloc]") {
  const GaussianFlow flow{flowmatch::Vector<double>::Constant(4, 0.5), 0.7};
  const Matrix<double> x0 = Matrix<double>::Random(4, 64);
  const std::vector<double> grid{0.0, 0.2, 0.25, 0.8, 1.0};
  for (const Method method :
       {Method::euler, Method::midpoint, Method::heun2, Method::heun3, Method::rk4, Method::rk38,
        Method::dopri5, Method::rkf78, Method::tsit5}) {
    for (const bool trajectory : {false, true}) {
      flowmatch::SolverOptions<double> options;
      options.method = method;
      options.step_size = 0.01;
      options.rtol = options.atol = 1e-8;
      options.return_trajectory = trajectory;
      std::size_t observed = 0;
      // The first accepted step has sized every stepper; from then on allocation is an error
      // (Eigen asserts), until the solver returns.
      options.observer = [&observed](double, const Matrix<double>&, const flowmatch::SolverStats&) {
        Eigen::internal::set_is_malloc_allowed(false);
        ++observed;
      };
      failed_eigen_assertions = 0;
      flowmatch::SolveResult<double> result;
      {
        const AllowMallocOnExit guard;
        result = flowmatch::integrate(flow, x0, grid, options);
      }
      INFO(flowmatch::method_name(method));
      CHECK(failed_eigen_assertions == 0);
      CHECK(observed == result.stats.accepted);
      CHECK(observed > 1);
      CHECK(result.state.allFinite());
    }
  }
}

namespace {

// Samples with every method class and computes exact and Hutchinson log-likelihoods with
// @p field, forbidding allocation from the first accepted step to the end of the integration
// (the likelihood functions allocate their results afterwards). Returns the number of
// forbidden allocations.
template <class Field>
std::size_t allocations_in_network_loops(const Field& field, const Matrix<double>& x) {
  std::size_t allocations = 0;
  for (const Method method : {Method::midpoint, Method::rk4, Method::dopri5, Method::tsit5}) {
    flowmatch::SolverOptions<double> options;
    options.method = method;
    options.step_size = 0.1;
    options.rtol = options.atol = 1e-6;
    std::size_t observed = 0;
    options.observer = [&observed](double t, const Matrix<double>&, const flowmatch::SolverStats&) {
      Eigen::internal::set_is_malloc_allowed(t == 1.0);  // allowed again after the last step
      ++observed;
    };
    failed_eigen_assertions = 0;
    {
      const AllowMallocOnExit guard;
      const flowmatch::SolveResult<double> result = flowmatch::sample(field, x, options);
      CHECK(result.state.allFinite());
    }
    allocations += failed_eigen_assertions;
    CHECK(observed > 1);

    // log_likelihood integrates from t = 1 to t = 0.
    options.observer = [&observed](double t, const Matrix<double>&, const flowmatch::SolverStats&) {
      Eigen::internal::set_is_malloc_allowed(t == 0.0);
      ++observed;
    };
    std::mt19937_64 generator(3);
    const flowmatch::Hutchinson<std::mt19937_64> hutchinson(
        2, flowmatch::ProbeDistribution::rademacher, generator);
    for (const bool exact : {true, false}) {
      failed_eigen_assertions = 0;
      {
        const AllowMallocOnExit guard;
        const flowmatch::LikelihoodResult<double> result =
            exact ? flowmatch::log_likelihood(field, x, options)
                  : flowmatch::log_likelihood(field, x, options, hutchinson);
        CHECK(result.log_prob.allFinite());
      }
      allocations += failed_eigen_assertions;
    }
  }
  return allocations;
}

}  // namespace

// Sizes are kept small enough for Eigen's matrix products to pack their operands on the stack
// (below EIGEN_STACK_ALLOCATION_LIMIT); larger products allocate their packing buffers
// themselves.
TEST_CASE("network sampling and likelihood loops allocate nothing per step",
          "[solver][no-malloc]") {
  flowmatch::MlpConfig config;
  config.dim = 3;
  config.hidden = {24, 24, 24};
  std::mt19937_64 generator(1);
  const flowmatch::Mlp<double> mlp(config, generator);
  const Matrix<double> x = Matrix<double>::Random(3, 150);
  CHECK(allocations_in_network_loops(mlp, x) == 0);
  for (const int threads : {1, 2}) {
    INFO("ParallelField over " << threads << " threads");
    flowmatch::ThreadPool pool(threads);
    // Chunks of 64, 64 and 22 columns: every thread alternates between two chunk sizes.
    CHECK(allocations_in_network_loops(flowmatch::parallel_field(mlp, pool, 64), x) == 0);
  }
}
