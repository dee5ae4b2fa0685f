// ThreadPool and ParallelField: every task runs once, errors propagate, the chunked field equals
// the unwrapped one up to rounding, and results do not depend on the number of threads (bit
// for bit) through sampling, likelihoods, conditioning and guidance.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#if defined(__linux__)
#include <sched.h>
#endif

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/parallel/thread_pool.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace test_parallel {

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Method;
using flowmatch::Mlp;
using flowmatch::MlpConfig;
using flowmatch::ThreadPool;
using flowmatch::Vector;

template <class Scalar>
Matrix<Scalar> normal_matrix(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  return flowmatch::StandardNormal::sample<Scalar>(rows, cols, generator);
}

template <class Scalar>
Mlp<Scalar> make_mlp(Index dim, Index cond_dim, std::vector<Index> hidden, std::uint64_t seed) {
  MlpConfig config;
  config.dim = dim;
  config.cond_dim = cond_dim;
  config.hidden = std::move(hidden);
  std::mt19937_64 generator(seed);
  return Mlp<Scalar>(config, generator);
}

// max |a − b| / max |b|.
template <class A, class B>
double relative_difference(const A& a, const B& b) {
  return static_cast<double>((a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff());
}

// Runs @p compute with a ParallelField over 1 thread and over 2 threads and checks that the
// results are equal bit for bit.
template <class Field, class Compute>
void check_thread_count_invariance(const Field& field, Index chunk, const Compute& compute) {
  ThreadPool one(1);
  ThreadPool two(2);
  const auto single = compute(flowmatch::parallel_field(field, one, chunk));
  const auto dual = compute(flowmatch::parallel_field(field, two, chunk));
  CHECK(single.size() > 0);
  CHECK(single.allFinite());
  CHECK(single == dual);
}

// The encoding and the log-likelihood of each sample, one column per sample: the log-likelihood
// alone can absorb a last-bit change of the encoding in its rounding.
template <class Scalar>
Matrix<Scalar> encoding_and_log_prob(const flowmatch::LikelihoodResult<Scalar>& result) {
  Matrix<Scalar> stacked(result.noise.rows() + 1, result.noise.cols());
  stacked << result.noise, result.log_prob.transpose();
  return stacked;
}

}  // namespace

TEST_CASE("a thread pool runs every task exactly once", "[parallel]") {
  for (const int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    CHECK(pool.thread_count() == threads);
    for (const Index tasks : {Index{0}, Index{1}, Index{2}, Index{7}, Index{100}}) {
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(tasks));
      for (int repeat = 0; repeat < 3; ++repeat) {
        pool.parallel_for(tasks, [&](Index i) { ++runs[static_cast<std::size_t>(i)]; });
      }
      INFO("threads " << threads << ", tasks " << tasks);
      CHECK(std::all_of(runs.begin(), runs.end(), [](const auto& count) { return count == 3; }));
    }
  }
}

#if defined(__linux__)
// Task i runs on thread i mod T, so in a call of T tasks, task w ≥ 1 runs on worker w: each
// reports the affinity mask of the thread that runs it.
TEST_CASE("a pool pins its workers to distinct processors when they fit", "[parallel]") {
  cpu_set_t allowed;
  REQUIRE(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
  const int processors = CPU_COUNT(&allowed);
  for (int threads = 2; threads <= std::min(processors, 4); ++threads) {
    INFO("threads " << threads << " of " << processors << " processors");
    ThreadPool pool(threads);
    std::vector<cpu_set_t> masks(static_cast<std::size_t>(threads));
    pool.parallel_for(threads, [&](Index task) {
      sched_getaffinity(0, sizeof(cpu_set_t), &masks[static_cast<std::size_t>(task)]);
    });
    CHECK(CPU_EQUAL(&masks[0], &allowed));  // the caller is never pinned
    cpu_set_t taken;
    CPU_ZERO(&taken);
    for (int worker = 1; worker < threads; ++worker) {
      cpu_set_t& mask = masks[static_cast<std::size_t>(worker)];
      REQUIRE(CPU_COUNT(&mask) == 1);
      cpu_set_t outside;
      CPU_AND(&outside, &mask, &allowed);
      CHECK(CPU_EQUAL(&outside, &mask));  // one of the caller's processors
      cpu_set_t shared;
      CPU_AND(&shared, &mask, &taken);
      CHECK(CPU_COUNT(&shared) == 0);  // not another worker's
      CPU_OR(&taken, &taken, &mask);
    }
  }
  if (processors >= 2) {
    // A caller that has come onto its worker's processor is moved off it by the next call, and
    // keeps its own mask.
    ThreadPool pool(2);
    cpu_set_t worker_mask;
    pool.parallel_for(2, [&](Index task) {
      if (task == 1) sched_getaffinity(0, sizeof(worker_mask), &worker_mask);
    });
    REQUIRE(CPU_COUNT(&worker_mask) == 1);
    REQUIRE(sched_setaffinity(0, sizeof(worker_mask), &worker_mask) == 0);  // moves there
    REQUIRE(sched_setaffinity(0, sizeof(allowed), &allowed) == 0);  // free again, still there
    int caller_processor = -1;
    cpu_set_t caller_mask;
    pool.parallel_for(2, [&](Index task) {
      if (task != 0) return;
      caller_processor = sched_getcpu();
      sched_getaffinity(0, sizeof(caller_mask), &caller_mask);
    });
    CHECK_FALSE(CPU_ISSET(caller_processor, &worker_mask));
    CHECK(CPU_EQUAL(&caller_mask, &allowed));
  }
  // More threads than processors: nobody is pinned, and every task still runs.
  ThreadPool crowded(processors + 1);
  std::vector<int> pinned(static_cast<std::size_t>(processors + 1));
  crowded.parallel_for(processors + 1, [&](Index task) {
    cpu_set_t mask;
    sched_getaffinity(0, sizeof(mask), &mask);
    pinned[static_cast<std::size_t>(task)] = CPU_EQUAL(&mask, &allowed) ? 0 : 1;
  });
  CHECK(std::count(pinned.begin(), pinned.end(), 1) == 0);
}
#endif

TEST_CASE("an exception thrown by a task propagates and the pool stays usable", "[parallel]") {
  for (const int threads : {1, 2}) {
    ThreadPool pool(threads);
    std::atomic<int> started{0};
    const auto failing = [&](Index i) {
      ++started;
      if (i == 3) throw std::runtime_error("task 3 failed");
    };
    CHECK_THROWS_WITH(pool.parallel_for(40, failing), "task 3 failed");
    CHECK(started <= 40);
    std::atomic<int> runs{0};
    pool.parallel_for(10, [&](Index) { ++runs; });
    CHECK(runs == 10);
  }
}

TEST_CASE("invalid thread counts and chunk sizes throw", "[parallel]") {
  CHECK_THROWS_AS(ThreadPool(0), std::invalid_argument);
  CHECK_THROWS_AS(ThreadPool(-2), std::invalid_argument);
  ThreadPool pool(1);
  const Mlp<double> mlp = make_mlp<double>(2, 0, {8}, 1);
  CHECK_THROWS_AS(flowmatch::parallel_field(mlp, pool, 0), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::parallel_field(mlp, pool, -1), std::invalid_argument);
  // Wrong shapes are rejected before any chunk is evaluated, errors of the field propagate.
  const auto field = flowmatch::parallel_field(mlp, pool, 4);
  const Matrix<double> x = normal_matrix<double>(2, 10, 2);
  Matrix<double> short_out(2, 9);
  CHECK_THROWS_AS(field(0.5, x, short_out), std::invalid_argument);
  Vector<double> short_divergence(9);
  CHECK_THROWS_AS(field.divergence(0.5, x, short_divergence), std::invalid_argument);
  const Matrix<double> wrong_dim = normal_matrix<double>(3, 10, 3);
  Matrix<double> out3(3, 10);
  CHECK_THROWS_AS(field(0.5, wrong_dim, out3), std::invalid_argument);
  Matrix<double> out(2, 10);
  CHECK_THROWS_AS(field(std::numeric_limits<double>::quiet_NaN(), x, out), std::invalid_argument);
}

TEST_CASE("a parallel field equals the unwrapped network up to rounding", "[parallel]") {
  const Mlp<double> mlp = make_mlp<double>(3, 0, {24, 16, 20}, 4);
  const Mlp<double> conditional = make_mlp<double>(3, 2, {24, 16}, 5);
  const Index samples = 203;  // chunks of 64, 64, 64 and 11 columns
  const Matrix<double> x = normal_matrix<double>(3, samples, 6);
  const Matrix<double> cond = normal_matrix<double>(2, samples, 7);
  const Matrix<double> direction = normal_matrix<double>(3, samples, 8);
  const double t = 0.3;
  ThreadPool pool(2);
  const auto field = flowmatch::parallel_field(mlp, pool, 64);
  const auto conditional_field = flowmatch::parallel_field(conditional, pool, 64);
  Matrix<double> expected(3, samples), actual(3, samples);
  Vector<double> expected_divergence(samples), actual_divergence(samples);

  mlp(t, x, expected);
  field(t, x, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);
  mlp.divergence(t, x, expected_divergence);
  field.divergence(t, x, actual_divergence);
  CHECK(relative_difference(actual_divergence, expected_divergence) <= 1e-12);
  mlp.jvp(t, x, direction, expected);
  field.jvp(t, x, direction, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);
  mlp.vjp(t, x, direction, expected);
  field.vjp(t, x, direction, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);
  mlp.divergence_gradient(t, x, expected);
  field.divergence_gradient(t, x, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);

  conditional(t, x, cond, expected);
  conditional_field(t, x, cond, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);
  conditional.divergence(t, x, cond, expected_divergence);
  conditional_field.divergence(t, x, cond, actual_divergence);
  CHECK(relative_difference(actual_divergence, expected_divergence) <= 1e-12);
  conditional.jvp(t, x, cond, direction, expected);
  conditional_field.jvp(t, x, cond, direction, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);
  conditional.vjp(t, x, cond, direction, expected);
  conditional_field.vjp(t, x, cond, direction, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);
  conditional.divergence_gradient(t, x, cond, expected);
  conditional_field.divergence_gradient(t, x, cond, actual);
  CHECK(relative_difference(actual, expected) <= 1e-12);

  // The library's derivative functions find the wrapper's members.
  static_assert(flowmatch::HasDivergence<decltype(field), double>);
  static_assert(flowmatch::HasJvp<decltype(field), double>);
  static_assert(flowmatch::HasVjp<decltype(field), double>);
  static_assert(flowmatch::HasDivergenceGradient<decltype(field), double>);
  static_assert(flowmatch::HasConditionalDivergence<decltype(conditional_field), double>);
}

// The bit-for-bit checks below use layers of 128 and batches that a split by thread count
// would cut elsewhere than at chunk boundaries (700 = 2·350, 300 = 2·150, 260 = 2·130): Eigen's
// product kernels take columns in groups, and a column that falls into the last, partial group
// of a differently split batch is summed in another order. One evaluation shows that last-bit
// change in the products with few output rows (the output layer, the input gradient); an
// integration may round it away, so both are checked.
template <class Scalar>
void check_single_evaluations(std::uint64_t seed) {
  const Mlp<Scalar> mlp = make_mlp<Scalar>(3, 0, {128, 128, 128}, seed);
  const Mlp<Scalar> conditional = make_mlp<Scalar>(3, 2, {128, 128}, seed + 1);
  const Index samples = 300;
  const Matrix<Scalar> x = normal_matrix<Scalar>(3, samples, seed + 2);
  const Matrix<Scalar> cond = normal_matrix<Scalar>(2, samples, seed + 3);
  const Matrix<Scalar> direction = normal_matrix<Scalar>(3, samples, seed + 4);
  const Scalar t(0.3);
  const auto evaluate = [&](const auto& network, auto&& call) {
    check_thread_count_invariance(network, 64, [&](const auto& field) {
      Matrix<Scalar> out(3, samples);
      call(field, out);
      return out;
    });
  };
  evaluate(mlp, [&](const auto& field, Matrix<Scalar>& out) { field(t, x, out); });
  evaluate(mlp, [&](const auto& field, Matrix<Scalar>& out) { field.jvp(t, x, direction, out); });
  evaluate(mlp, [&](const auto& field, Matrix<Scalar>& out) { field.vjp(t, x, direction, out); });
  evaluate(mlp,
           [&](const auto& field, Matrix<Scalar>& out) { field.divergence_gradient(t, x, out); });
  evaluate(mlp, [&](const auto& field, Matrix<Scalar>& out) {
    Vector<Scalar> divergence(samples);
    field.divergence(t, x, divergence);
    out = divergence.transpose().replicate(3, 1);
  });
  evaluate(conditional, [&](const auto& field, Matrix<Scalar>& out) { field(t, x, cond, out); });
  evaluate(conditional,
           [&](const auto& field, Matrix<Scalar>& out) { field.vjp(t, x, cond, direction, out); });
}

TEST_CASE("one evaluation gives the same bits with one and with two threads", "[parallel]") {
  check_single_evaluations<float>(20);
  check_single_evaluations<double>(20);
}

TEST_CASE("sampling gives the same bits with one and with two threads", "[parallel]") {
  const Mlp<float> single_precision = make_mlp<float>(2, 0, {128, 128, 128}, 9);
  const Mlp<double> double_precision = make_mlp<double>(2, 0, {128, 128, 128}, 9);
  const Index samples = 700;
  for (const Method method : {Method::midpoint, Method::dopri5}) {
    INFO(flowmatch::method_name(method));
    flowmatch::SolverOptions<double> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.05;
    options.rtol = options.atol = 1e-6;
    const Matrix<double> x0 = normal_matrix<double>(2, samples, 10);
    check_thread_count_invariance(double_precision, 64, [&](const auto& field) {
      return flowmatch::sample(field, x0, options).state;
    });
    flowmatch::SolverOptions<float> float_options;
    float_options.method = method;
    if (!flowmatch::is_adaptive(method)) float_options.step_size = 0.05f;
    float_options.rtol = float_options.atol = 1e-4f;
    const Matrix<float> x0_float = x0.cast<float>();
    check_thread_count_invariance(single_precision, 100, [&](const auto& field) {
      return flowmatch::sample(field, x0_float, float_options).state;
    });
  }
}

TEST_CASE("log-likelihoods give the same bits with one and with two threads", "[parallel]") {
  const Mlp<double> mlp = make_mlp<double>(3, 0, {128, 128, 128}, 11);
  const Matrix<double> x = normal_matrix<double>(3, 300, 12);
  flowmatch::SolverOptions<double> options;
  options.method = Method::midpoint;
  options.step_size = 0.1;
  check_thread_count_invariance(mlp, 64, [&](const auto& field) {
    return encoding_and_log_prob(flowmatch::log_likelihood(field, x, options));
  });
  check_thread_count_invariance(mlp, 64, [&](const auto& field) {
    std::mt19937_64 generator(13);
    const flowmatch::Hutchinson<std::mt19937_64> estimator(
        2, flowmatch::ProbeDistribution::rademacher, generator);
    return encoding_and_log_prob(flowmatch::log_likelihood(field, x, options, estimator));
  });
  // The exact likelihood through the wrapper equals the unwrapped one up to rounding.
  ThreadPool pool(2);
  const Vector<double> expected = flowmatch::log_likelihood(mlp, x, options).log_prob;
  const Vector<double> actual =
      flowmatch::log_likelihood(flowmatch::parallel_field(mlp, pool, 64), x, options).log_prob;
  CHECK(relative_difference(actual, expected) <= 1e-12);
}

TEST_CASE("conditional models give the same bits with one and with two threads", "[parallel]") {
  const Mlp<double> mlp = make_mlp<double>(2, 3, {128, 128}, 14);
  const Index samples = 260;
  const Matrix<double> x = normal_matrix<double>(2, samples, 15);
  Matrix<double> labels = Matrix<double>::Zero(3, samples);
  for (Index n = 0; n < samples; ++n) labels(n % 3, n) = 1.0;
  flowmatch::SolverOptions<double> options;
  options.method = Method::dopri5;
  options.rtol = options.atol = 1e-6;
  // ConditionedField: sampling and the exact conditional log-likelihood.
  check_thread_count_invariance(mlp, 50, [&](const auto& field) {
    const flowmatch::ConditionedField<double, std::decay_t<decltype(field)>> conditioned(field,
                                                                                         labels);
    return flowmatch::sample(conditioned, x, options).state;
  });
  check_thread_count_invariance(mlp, 50, [&](const auto& field) {
    return encoding_and_log_prob(flowmatch::conditional_log_likelihood(field, labels, x, options));
  });
  // Classifier-free guidance with weight 2 over the wrapper.
  check_thread_count_invariance(mlp, 50, [&](const auto& field) {
    const auto guided = flowmatch::classifier_free_guidance(field, labels, 2.0);
    return flowmatch::sample(guided, x, options).state;
  });
}

}  // namespace test_parallel
