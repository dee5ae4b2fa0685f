// The stepping loop of every method, and a training step, allocate nothing once sized.
// allocation_counter.hpp (first, before Eigen) counts Eigen's forbidden allocations and the
// calls of operator new.
#include "allocation_counter.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "flowmatch/detail/matrix_product.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/score/exact_score.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/train/objective.hpp"
#include "flowmatch/train/trainer.hpp"

namespace {

namespace counter = flowmatch_test::allocation_counter;
using flowmatch::ConstMatrixRef;
using flowmatch::Index;
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
  counter::eigen_allocations = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  const Matrix<double> allocated(16, 16);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(allocated.size() == 256);
  CHECK(counter::eigen_allocations > 0);
}

// ProductBuffers against Eigen's product expressions, on shapes that pack more than the stack
// limit, on blocks of larger matrices (outer stride ≠ rows) and with accumulation, through each
// of its kernels (the tiles, the tile unit, dot products for a few rows below the tiles, the
// shallow kernel for depths below the tiles', with and without a last partial packet of rows,
// Eigen's product for the rest); once sized, products of the same or smaller shapes allocate
// nothing.
template <class Scalar>
void check_product_buffers() {
  using Block = Eigen::Block<Matrix<Scalar>>;
  flowmatch::detail::ProductBuffers<Scalar> products;
  const Scalar tolerance = std::numeric_limits<Scalar>::epsilon() * 512;
  const auto close = [tolerance](const Matrix<Scalar>& actual, const Matrix<Scalar>& expected) {
    return (actual - expected).cwiseAbs().maxCoeff() <= tolerance * expected.cwiseAbs().maxCoeff();
  };
  for (const auto& [rows, depth, cols] :
       {std::array<Index, 3>{256, 256, 300}, std::array<Index, 3>{3, 128, 257},
        std::array<Index, 3>{200, 2, 1}, std::array<Index, 3>{5, 7, 3},
        std::array<Index, 3>{34, 37, 45}, std::array<Index, 3>{37, 3, 41},
        std::array<Index, 3>{64, 1, 20}, std::array<Index, 3>{60, 37, 5}}) {
    INFO(rows << "x" << depth << " times " << depth << "x" << cols);
    const Matrix<Scalar> lhs = Matrix<Scalar>::Random(rows, depth);
    const Matrix<Scalar> lhs_transposed = lhs.transpose();
    const Matrix<Scalar> rhs_storage = Matrix<Scalar>::Random(depth + 3, cols + 2);
    const auto rhs = rhs_storage.block(1, 2, depth, cols);  // a block: outer stride ≠ rows
    const Matrix<Scalar> rhs_transposed = rhs.transpose();
    const Matrix<Scalar> start = Matrix<Scalar>::Random(rows, cols);
    const Matrix<Scalar> expected = lhs * rhs;
    Matrix<Scalar> out_storage = Matrix<Scalar>::Random(rows + 1, cols);
    Block out = out_storage.topRows(rows);
    // Results, sized before allocation is forbidden.
    Matrix<Scalar> plain(rows, cols), transposed_lhs(rows, cols), transposed_rhs(rows, cols),
        accumulated(rows, cols);
    for (int repeat = 0; repeat < 2; ++repeat) {
      // The first round may grow the buffers; the second must not allocate.
      counter::eigen_allocations = 0;
      Eigen::internal::set_is_malloc_allowed(repeat == 0);
      products.multiply(lhs, rhs, out);
      plain = out;
      products.multiply_transposed_lhs(lhs_transposed, rhs, out);
      transposed_lhs = out;
      products.multiply_transposed_rhs(lhs, rhs_transposed, out);
      transposed_rhs = out;
      out = start;
      products.multiply(lhs, rhs, out, true);
      accumulated = out;
      Eigen::internal::set_is_malloc_allowed(true);
      CHECK(close(plain, expected));
      CHECK(close(transposed_lhs, expected));
      CHECK(close(transposed_rhs, expected));
      CHECK(close(accumulated, start + expected));
      if (repeat == 1) CHECK(counter::eigen_allocations == 0);
    }
  }
}

TEST_CASE("products with kept packing buffers equal Eigen's and allocate nothing", "[no-malloc]") {
  check_product_buffers<float>();
  check_product_buffers<double>();
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
      if (!flowmatch::is_adaptive(method)) options.step_size = 0.01;
      options.rtol = options.atol = 1e-8;
      options.return_trajectory = trajectory;
      std::size_t observed = 0;
      // The first accepted step has sized every stepper; from then on allocation is an error
      // (Eigen asserts), until the solver returns.
      options.observer = [&observed](double, const Matrix<double>&, const flowmatch::SolverStats&) {
        Eigen::internal::set_is_malloc_allowed(false);
        ++observed;
      };
      counter::eigen_allocations = 0;
      flowmatch::SolveResult<double> result;
      {
        const AllowMallocOnExit guard;
        result = flowmatch::integrate(flow, x0, grid, options);
      }
      INFO(flowmatch::method_name(method));
      CHECK(counter::eigen_allocations == 0);
      CHECK(observed == result.stats.accepted);
      CHECK(observed > 1);
      CHECK(result.state.allFinite());
    }
  }
}

namespace {

// Samples with each of @p methods, without and with exact scores, and computes exact and
// Hutchinson log-likelihoods with @p field, forbidding allocation from the first accepted step to
// the end of the integration (the likelihood functions allocate their results afterwards). Returns
// the number of forbidden allocations.
template <class Scalar, class Field>
std::size_t allocations_in_network_loops(const Field& field, const Matrix<Scalar>& x,
                                         std::initializer_list<Method> methods) {
  std::size_t allocations = 0;
  for (const Method method : methods) {
    INFO(flowmatch::method_name(method));
    flowmatch::SolverOptions<Scalar> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = Scalar(0.25);
    options.rtol = options.atol = Scalar(1e-4);
    std::size_t observed = 0;
    options.observer = [&observed](Scalar t, const Matrix<Scalar>&, const flowmatch::SolverStats&) {
      Eigen::internal::set_is_malloc_allowed(t == 1);  // allowed again after the last step
      ++observed;
    };
    counter::eigen_allocations = 0;
    {
      const AllowMallocOnExit guard;
      const flowmatch::SolveResult<Scalar> result = flowmatch::sample(field, x, options);
      CHECK(result.state.allFinite());
    }
    allocations += counter::eigen_allocations;
    CHECK(observed > 1);

    // Sampling with the exact score of the model's density (vjp and ∇div at every step).
    counter::eigen_allocations = 0;
    {
      const AllowMallocOnExit guard;
      const flowmatch::ScoreResult<Scalar> result = flowmatch::sample_with_score(field, x, options);
      CHECK(result.score.allFinite());
    }
    allocations += counter::eigen_allocations;

    // log_likelihood integrates from t = 1 to t = 0.
    options.observer = [&observed](Scalar t, const Matrix<Scalar>&, const flowmatch::SolverStats&) {
      Eigen::internal::set_is_malloc_allowed(t == 0);
      ++observed;
    };
    std::mt19937_64 generator(3);
    const flowmatch::Hutchinson<std::mt19937_64> hutchinson(
        2, flowmatch::ProbeDistribution::rademacher, generator);
    for (const bool exact : {true, false}) {
      counter::eigen_allocations = 0;
      {
        const AllowMallocOnExit guard;
        const flowmatch::LikelihoodResult<Scalar> result =
            exact ? flowmatch::log_likelihood(field, x, options)
                  : flowmatch::log_likelihood(field, x, options, hutchinson);
        CHECK(result.log_prob.allFinite());
      }
      allocations += counter::eigen_allocations;
    }
  }
  return allocations;
}

// The network on its own and through ParallelField over 1 and 2 threads, with chunks of
// @p chunk_columns such that the batch ends in a shorter chunk.
template <class Scalar>
void check_network_loops(const flowmatch::MlpConfig& config, Index batch, Index chunk_columns,
                         std::initializer_list<Method> methods) {
  std::mt19937_64 generator(1);
  const flowmatch::Mlp<Scalar> mlp(config, generator);
  const Matrix<Scalar> x = Matrix<Scalar>::Random(config.dim, batch);
  CHECK(allocations_in_network_loops(mlp, x, methods) == 0);
  for (const int threads : {1, 2}) {
    INFO("ParallelField over " << threads << " threads");
    flowmatch::ThreadPool pool(threads);
    CHECK(allocations_in_network_loops(flowmatch::parallel_field(mlp, pool, chunk_columns), x,
                                       methods) == 0);
  }
}

}  // namespace

// The shapes of the sampling and likelihood benchmarks: every matrix product there packs
// more than Eigen puts on the stack (a 256×256 float weight is 256 KiB), so the network's
// products keep their packing buffers between calls.
TEST_CASE("network loops at benchmark widths allocate nothing per step", "[solver][no-malloc]") {
  flowmatch::MlpConfig sampling_network;  // 2 → 4×128 SiLU → 2
  sampling_network.dim = 2;
  sampling_network.hidden = {128, 128, 128, 128};
  flowmatch::MlpConfig likelihood_network;  // 32 → 3×256 SiLU → 32
  likelihood_network.dim = 32;
  likelihood_network.hidden = {256, 256, 256};
  const auto all_methods = {Method::midpoint, Method::rk4, Method::dopri5, Method::tsit5};
  SECTION("float") {
    // 300 columns: an Mlp panel of 256 and one of 44.
    check_network_loops<float>(sampling_network, 300, 256, all_methods);
    check_network_loops<float>(likelihood_network, 12, 8, {Method::midpoint, Method::dopri5});
  }
  SECTION("double") {
    check_network_loops<double>(sampling_network, 300, 256, all_methods);
    check_network_loops<double>(likelihood_network, 12, 8, {Method::midpoint, Method::dopri5});
  }
}

// Small widths, where several chunk sizes alternate on each thread.
TEST_CASE("network sampling and likelihood loops allocate nothing per step",
          "[solver][no-malloc]") {
  flowmatch::MlpConfig config;
  config.dim = 3;
  config.hidden = {24, 24, 24};
  // Chunks of 64, 64 and 22 columns: every thread alternates between two chunk sizes.
  check_network_loops<double>(config, 150, 64,
                              {Method::midpoint, Method::rk4, Method::dopri5, Method::tsit5});
}

// A training step of the sampling benchmark's network (batch 1024, chunks of 256 columns), with
// and without conditions and label dropout, on 1 and 2 threads: after the first steps size the
// buffers, further steps allocate nothing, neither through Eigen nor through operator new.
template <class Scalar>
void check_training_step_allocations(bool conditional, int threads) {
  using Trainer = flowmatch::FlowMatchingTrainer<Scalar>;
  std::mt19937_64 generator(3);
  flowmatch::MlpConfig config;
  config.dim = 2;
  config.cond_dim = conditional ? 3 : 0;
  config.hidden = {128, 128, 128, 128};
  flowmatch::Mlp<Scalar> model(config, generator);
  const Matrix<Scalar> data = Matrix<Scalar>::Random(2, 5000);
  flowmatch::TrainerOptions<Scalar> options;
  options.batch_size = 1024;
  options.chunk_columns = 256;
  options.threads = threads;
  options.max_gradient_norm = Scalar(1);
  auto objective = flowmatch::FlowMatchingObjective<Scalar>::independent(Scalar(0.01));
  objective.label_dropout = Scalar(0.2);
  Trainer trainer =
      conditional ? Trainer(std::move(model), objective,
                            Trainer::resample(data, Matrix<Scalar>::Identity(3, 5000)), options, 9)
                  : Trainer(std::move(model), objective, Trainer::resample(data), options, 9);
  trainer.step();
  trainer.step();
  counter::eigen_allocations = 0;
  counter::operator_new_calls = 0;
  {
    const AllowMallocOnExit guard;
    Eigen::internal::set_is_malloc_allowed(false);
    counter::counting = true;
    for (int step = 0; step < 3; ++step) trainer.step();
    counter::counting = false;
  }
  CHECK(counter::eigen_allocations == 0);
  CHECK(counter::operator_new_calls == 0);
  CHECK(trainer.step_count() == 5);
}

TEST_CASE("a training step allocates nothing once the trainer is sized", "[train][no-malloc]") {
  for (const int threads : {1, 2}) {
    for (const bool conditional : {false, true}) {
      INFO("threads " << threads << ", conditional " << conditional);
      check_training_step_allocations<float>(conditional, threads);
      check_training_step_allocations<double>(conditional, threads);
    }
  }
}

TEST_CASE("argument checks that pass allocate nothing", "[no-malloc]") {
  namespace detail = flowmatch::detail;
  const Matrix<double> batch = Matrix<double>::Ones(3, 4);
  const flowmatch::Vector<double> weights = flowmatch::Vector<double>::Ones(4);
  flowmatch::SolverOptions<double> options;
  options.tstops = {0.25, 0.75};
  const std::size_t allocations = flowmatch_test::allocations_during([&] {
    detail::require_shape("f: x", batch, 3, 4);
    detail::require_finite("f: x", batch);
    detail::require_finite("f: weights", weights);
    detail::require_nonempty_batch("f: x", batch);
    detail::require_finite_value("f: value", 0.5);
    detail::require_unit_time("f: t", 1.0);
    detail::require_nonnegative("f: value", 0.0);
    detail::require_positive("f: value", 1e-300);
    detail::require_in_range("f: value", 0.0, 0.0, 1.0);
    detail::require_count("f: count", 1, 1);
    detail::validate_options(options);
  });
  CHECK(allocations == 0);
}

TEST_CASE("the allocation counters see allocations", "[no-malloc]") {
  counter::operator_new_calls = 0;
  counter::counting = true;
  std::vector<int>* allocated = new std::vector<int>(100);
  counter::counting = false;
  const std::size_t size = allocated->size();
  delete allocated;
  CHECK(size == 100);
#ifndef FLOWMATCH_TEST_UNDER_ASAN
  CHECK(counter::operator_new_calls >= 2);
#endif
}
