// Tests of the minibatch couplings: the assignment solver against brute force and LP duality,
// the exact OT pairing, log-domain Sinkhorn and the sampling of pairs from a plan.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/coupling/exact_ot.hpp"
#include "flowmatch/coupling/sinkhorn.hpp"

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;

Matrix<double> gaussian_batch(Index rows, Index cols, std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  Matrix<double> batch(rows, cols);
  for (double& value : batch.reshaped()) value = normal(generator);
  return batch;
}

// The minimum of Σ_i C_{iσ(i)} over every injective σ, by enumerating the permutations of the
// columns (the first rows entries of each permutation are the assignment).
double brute_force_minimum(const Matrix<double>& cost) {
  std::vector<Index> columns(static_cast<std::size_t>(cost.cols()));
  std::iota(columns.begin(), columns.end(), Index(0));
  double best = std::numeric_limits<double>::infinity();
  do {
    double total = 0;
    for (Index row = 0; row < cost.rows(); ++row) total += cost(row, columns[row]);
    best = std::min(best, total);
  } while (std::next_permutation(columns.begin(), columns.end()));
  return best;
}

// Checks that an assignment is injective, that its reported cost is its cost, and that the
// potentials are a feasible dual solution (u_i + v_j ≤ C_ij, v ≤ 0) with the same objective:
// by weak duality the assignment is then optimal.
void check_certificate(const Matrix<double>& cost, const flowmatch::AssignmentResult<double>& r) {
  REQUIRE(static_cast<Index>(r.column_of_row.size()) == cost.rows());
  std::vector<int> used(static_cast<std::size_t>(cost.cols()), 0);
  double total = 0;
  for (Index row = 0; row < cost.rows(); ++row) {
    const Index col = r.column_of_row[row];
    REQUIRE(col >= 0);
    REQUIRE(col < cost.cols());
    CHECK(++used[col] == 1);
    total += cost(row, col);
  }
  const double scale = cost.cwiseAbs().maxCoeff() * static_cast<double>(cost.rows());
  CHECK_THAT(r.total_cost, WithinAbs(total, 1e-13 * scale));
  const Matrix<double> slack = cost.colwise() - r.row_potential;
  const Matrix<double> reduced = slack.rowwise() - r.column_potential.transpose();
  CHECK(reduced.minCoeff() >= -1e-12 * scale);
  CHECK(r.column_potential.maxCoeff() <= 0.0);
  CHECK_THAT(r.row_potential.sum() + r.column_potential.sum(), WithinAbs(total, 1e-12 * scale));
}

}  // namespace

TEST_CASE("the squared Euclidean cost matches the direct differences", "[coupling]") {
  std::mt19937_64 generator(1);
  const Matrix<double> x0 = gaussian_batch(3, 5, generator);
  const Matrix<double> x1 = gaussian_batch(3, 4, generator);
  const Matrix<double> cost = flowmatch::squared_euclidean_cost(x0, x1);
  REQUIRE(cost.rows() == 5);
  REQUIRE(cost.cols() == 4);
  for (Index i = 0; i < 5; ++i) {
    for (Index j = 0; j < 4; ++j) {
      CHECK_THAT(cost(i, j), WithinAbs((x0.col(i) - x1.col(j)).squaredNorm(), 1e-13));
    }
  }
  // The distance of a point to itself is clamped to exactly zero, never negative.
  CHECK(flowmatch::squared_euclidean_cost(x0, x0).diagonal().minCoeff() >= 0.0);
}

TEST_CASE("the assignment is optimal against brute force on small instances", "[exact_ot]") {
  for (std::uint64_t seed = 0; seed < 12; ++seed) {
    std::mt19937_64 generator(seed);
    const Index rows = 1 + static_cast<Index>(seed % 8);
    const Index cols = seed % 3 == 0 ? std::min<Index>(rows + 1, 8) : rows;
    Matrix<double> cost(rows, cols);
    if (seed % 2 == 0) {
      // Small integer costs: many ties between optimal assignments.
      std::uniform_int_distribution<int> small(0, 3);
      for (double& value : cost.reshaped()) value = small(generator);
    } else {
      // Duplicate points: columns 0 and 1 of x1 coincide, and so do x0's first two.
      Matrix<double> x0 = gaussian_batch(2, rows, generator);
      Matrix<double> x1 = gaussian_batch(2, cols, generator);
      if (rows > 1) x0.col(1) = x0.col(0);
      if (cols > 1) x1.col(1) = x1.col(0);
      cost = flowmatch::squared_euclidean_cost(x0, x1);
    }
    INFO("seed " << seed << ", " << rows << "x" << cols);
    const auto result = flowmatch::solve_assignment(cost);
    check_certificate(cost, result);
    CHECK_THAT(result.total_cost, WithinAbs(brute_force_minimum(cost), 1e-12));
  }
}

TEST_CASE("the assignment on larger instances is certified by LP duality", "[exact_ot]") {
  for (const Index n : {30, 47, 60}) {
    std::mt19937_64 generator(static_cast<std::uint64_t>(n));
    const Matrix<double> x0 = gaussian_batch(5, n, generator);
    const Matrix<double> x1 = gaussian_batch(5, n, generator) * 2.0;
    const auto result = flowmatch::exact_ot_pairing(x0, x1);
    INFO("n = " << n);
    check_certificate(flowmatch::squared_euclidean_cost(x0, x1), result);
    // The identity pairing is one feasible assignment: the optimum cannot exceed it.
    CHECK(result.total_cost <= (x0 - x1).colwise().squaredNorm().sum());
  }
  // A rectangular problem: every row assigned, unused columns keep v = 0.
  std::mt19937_64 generator(5);
  Matrix<double> cost(20, 35);
  std::uniform_real_distribution<double> uniform(0.0, 10.0);
  for (double& value : cost.reshaped()) value = uniform(generator);
  const auto result = flowmatch::solve_assignment(cost);
  check_certificate(cost, result);
}

TEST_CASE("in one dimension the exact OT pairing is the monotone rearrangement", "[exact_ot]") {
  // For a convex cost of x0 − x1 on the line the sorted matching is optimal.
  std::mt19937_64 generator(3);
  const Index n = 25;
  const Matrix<double> x0 = gaussian_batch(1, n, generator);
  const Matrix<double> x1 = gaussian_batch(1, n, generator);
  std::vector<Index> order0(n), order1(n);
  std::iota(order0.begin(), order0.end(), Index(0));
  std::iota(order1.begin(), order1.end(), Index(0));
  std::sort(order0.begin(), order0.end(), [&](Index a, Index b) { return x0(0, a) < x0(0, b); });
  std::sort(order1.begin(), order1.end(), [&](Index a, Index b) { return x1(0, a) < x1(0, b); });
  const auto result = flowmatch::exact_ot_pairing(x0, x1);
  for (Index rank = 0; rank < n; ++rank) CHECK(result.column_of_row[order0[rank]] == order1[rank]);

  const auto pairs = flowmatch::couple_by_assignment(x0, x1, result.column_of_row);
  CHECK(pairs.x0 == x0);
  CHECK_THAT((pairs.x0 - pairs.x1).squaredNorm(), WithinRel(result.total_cost, 1e-13));
}

TEST_CASE("a permuted copy is paired back with zero cost", "[exact_ot]") {
  std::mt19937_64 generator(4);
  const Index n = 40;
  const Matrix<double> x0 = gaussian_batch(3, n, generator);
  std::vector<Index> permutation(n);
  std::iota(permutation.begin(), permutation.end(), Index(0));
  std::shuffle(permutation.begin(), permutation.end(), generator);
  Matrix<double> x1(3, n);
  for (Index i = 0; i < n; ++i) x1.col(permutation[i]) = x0.col(i);
  const auto result = flowmatch::exact_ot_pairing(x0, x1);
  CHECK(result.column_of_row == permutation);
  CHECK_THAT(result.total_cost, WithinAbs(0.0, 1e-12));
}

TEST_CASE("the assignment works in float", "[exact_ot]") {
  std::mt19937_64 generator(6);
  const Matrix<double> x0 = gaussian_batch(2, 6, generator);
  const Matrix<double> x1 = gaussian_batch(2, 6, generator);
  const auto in_double = flowmatch::exact_ot_pairing(x0, x1);
  const auto in_float = flowmatch::exact_ot_pairing<float>(x0.cast<float>(), x1.cast<float>());
  CHECK_THAT(in_float.total_cost, WithinRel(in_double.total_cost, 1e-5));
}

TEST_CASE("the assignment solver rejects invalid input", "[exact_ot]") {
  const Matrix<double> tall = Matrix<double>::Ones(3, 2);
  CHECK_THROWS_AS(flowmatch::solve_assignment(tall), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::solve_assignment(tall), Catch::Contains("3x2"));
  CHECK_THROWS_AS(flowmatch::solve_assignment(Matrix<double>(0, 0)), std::invalid_argument);
  Matrix<double> bad = Matrix<double>::Ones(3, 3);
  bad(1, 2) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(flowmatch::solve_assignment(bad), Catch::Contains("column 2"));
  bad(1, 2) = std::nan("");
  CHECK_THROWS_AS(flowmatch::solve_assignment(bad), std::invalid_argument);

  const Matrix<double> x0 = Matrix<double>::Zero(2, 4);
  CHECK_THROWS_AS(flowmatch::exact_ot_pairing(x0, Matrix<double>(Matrix<double>::Zero(2, 5))),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::exact_ot_pairing(x0, Matrix<double>(Matrix<double>::Zero(3, 4))),
                  std::invalid_argument);
  Matrix<double> x1 = Matrix<double>::Zero(2, 4);
  x1(0, 3) = std::nan("");
  CHECK_THROWS_WITH(flowmatch::exact_ot_pairing(x0, x1), Catch::Contains("x1"));

  CHECK_THROWS_AS(flowmatch::couple_by_assignment(x0, x0, {0, 1, 2}), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::couple_by_assignment(x0, x0, {0, 1, 2, 4}),
                    Catch::Contains("column_of_row[3] is 4"));
  CHECK_THROWS_AS(flowmatch::assignment_plan<double>({0, -1}, 2), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::assignment_plan<double>({}, 2), std::invalid_argument);
}

TEST_CASE("an assignment plan resampled with replacement draws assigned pairs", "[exact_ot]") {
  std::mt19937_64 generator(7);
  const Index n = 6;
  const Matrix<double> x0 = gaussian_batch(2, n, generator);
  const Matrix<double> x1 = gaussian_batch(2, n, generator);
  const auto result = flowmatch::exact_ot_pairing(x0, x1);
  const Matrix<double> plan = flowmatch::assignment_plan<double>(result.column_of_row, n);
  CHECK_THAT(plan.sum(), WithinAbs(1.0, 1e-15));

  // per_source_row reproduces the assignment itself.
  const auto ordered = flowmatch::sample_pairs_from_plan(plan, x0, x1, generator,
                                                         flowmatch::PlanSampling::per_source_row);
  CHECK(ordered.x1 == flowmatch::couple_by_assignment(x0, x1, result.column_of_row).x1);

  // flattened draws only assigned pairs, and over many draws each about equally often.
  std::vector<int> counts(n, 0);
  const int batches = 2000;
  for (int batch = 0; batch < batches; ++batch) {
    const auto pairs = flowmatch::sample_pairs_from_plan(plan, x0, x1, generator,
                                                         flowmatch::PlanSampling::flattened);
    for (Index k = 0; k < n; ++k) {
      Index source = 0;
      while (pairs.x0.col(k) != x0.col(source)) ++source;
      CHECK(pairs.x1.col(k) == x1.col(result.column_of_row[source]));
      ++counts[source];
    }
  }
  // Each source has probability 1/6; 12000 draws give a standard deviation of 0.0034.
  for (const int count : counts) CHECK_THAT(count / (6.0 * batches), WithinAbs(1.0 / n, 0.017));
}

TEST_CASE("Sinkhorn plans have the prescribed marginals", "[sinkhorn]") {
  std::mt19937_64 generator(8);
  const Matrix<double> x0 = gaussian_batch(2, 16, generator);
  const Matrix<double> x1 = gaussian_batch(2, 16, generator) + Matrix<double>::Ones(2, 16);
  flowmatch::SinkhornOptions<double> options;
  options.epsilon = 0.1;
  options.epsilon_relative_to_mean_cost = true;
  options.tolerance = 1e-10;
  const auto result = flowmatch::sinkhorn_pairing(x0, x1, options);
  REQUIRE(result.converged);
  CHECK(result.iterations >= 1);
  const Matrix<double> plan = result.plan();
  const double n = 16.0;
  CHECK((plan.rowwise().sum().array() - 1.0 / n).abs().sum() <= 1e-10);
  CHECK_THAT((plan.rowwise().sum().array() - 1.0 / n).abs().sum(),
             WithinAbs(result.marginal_error, 1e-14));
  CHECK((plan.colwise().sum().array() - 1.0 / n).abs().maxCoeff() <= 1e-14);
  CHECK_THAT(result.epsilon,
             WithinRel(0.1 * flowmatch::squared_euclidean_cost(x0, x1).mean(), 1e-14));

  // A rectangular cost has marginals 1/N and 1/M.
  Matrix<double> cost(3, 5);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (double& value : cost.reshaped()) value = uniform(generator);
  const auto rectangular = flowmatch::sinkhorn(cost, options);
  const Matrix<double> rect_plan = rectangular.plan();
  CHECK((rect_plan.rowwise().sum().array() - 1.0 / 3).abs().sum() <= 1e-10);
  CHECK((rect_plan.colwise().sum().array() - 1.0 / 5).abs().maxCoeff() <= 1e-14);
}

TEST_CASE("as epsilon shrinks the Sinkhorn cost approaches the exact OT cost", "[sinkhorn]") {
  // ⟨C, π_ε⟩ − ε·H(π_ε) ≤ ⟨C, π*⟩ − ε·H(π*) with H(π*) = log N for a permutation plan and
  // H(π_ε) ≤ 2 log N, so 0 ≤ ⟨C, π_ε⟩ − OT ≤ ε·log N (up to the marginal error).
  std::mt19937_64 generator(9);
  const Index n = 12;
  const Matrix<double> x0 = gaussian_batch(2, n, generator);
  const Matrix<double> x1 = gaussian_batch(2, n, generator);
  const Matrix<double> cost = flowmatch::squared_euclidean_cost(x0, x1);
  const double exact = flowmatch::exact_ot_pairing(x0, x1).total_cost / static_cast<double>(n);
  flowmatch::SinkhornOptions<double> options;
  options.epsilon_relative_to_mean_cost = true;
  options.tolerance = 1e-10;
  options.max_iterations = 20000;  // convergence slows like exp(max C / ε) as ε shrinks
  double previous_gap = std::numeric_limits<double>::infinity();
  for (const double epsilon : {1.0, 0.3, 0.1, 0.05}) {
    options.epsilon = epsilon;
    const auto result = flowmatch::sinkhorn(cost, options);
    INFO("epsilon " << epsilon);
    REQUIRE(result.converged);
    const double gap = (cost.array() * result.plan().array()).sum() - exact;
    const double slack = result.marginal_error * cost.maxCoeff();
    CHECK(gap >= -slack);
    CHECK(gap <= result.epsilon * std::log(static_cast<double>(n)) + slack);
    CHECK(gap < previous_gap);
    previous_gap = gap;
  }
}

TEST_CASE("as epsilon grows the Sinkhorn plan approaches the independent coupling", "[sinkhorn]") {
  // To first order in 1/ε, π_ij = a_i b_j (1 − C̃_ij/ε) with C̃ the doubly centred cost
  // C_ij − C̄_i· − C̄_·j + C̄, so ε·‖π − abᵀ‖₁ → Σ_ij a_i b_j |C̃_ij|.
  std::mt19937_64 generator(10);
  const Index n = 10;
  const Matrix<double> x0 = gaussian_batch(2, n, generator);
  const Matrix<double> x1 = gaussian_batch(2, n, generator);
  const Matrix<double> cost = flowmatch::squared_euclidean_cost(x0, x1);
  Matrix<double> centred = cost.colwise() - cost.rowwise().mean();
  centred = centred.rowwise() - cost.colwise().mean();
  centred.array() += cost.mean();
  const double product = 1.0 / static_cast<double>(n * n);
  const double first_order = product * centred.cwiseAbs().sum();
  flowmatch::SinkhornOptions<double> options;
  options.tolerance = 1e-13;
  double previous = std::numeric_limits<double>::infinity();
  for (const double epsilon : {10.0, 100.0, 1e3, 1e4}) {
    options.epsilon = epsilon;
    const auto result = flowmatch::sinkhorn(cost, options);
    const double distance = (result.plan().array() - product).abs().sum();
    CHECK(distance < previous);
    previous = distance;
    if (epsilon >= 1e3) CHECK_THAT(epsilon * distance, WithinRel(first_order, 1e-2));
  }
}

TEST_CASE("Sinkhorn stays finite for a tiny epsilon, in double and float", "[sinkhorn]") {
  std::mt19937_64 generator(11);
  const Matrix<double> x0 = gaussian_batch(2, 32, generator) * 5.0;
  const Matrix<double> x1 = gaussian_batch(2, 32, generator) * 5.0;
  flowmatch::SinkhornOptions<double> options;
  options.epsilon = 1e-3;
  options.epsilon_relative_to_mean_cost = true;
  options.max_iterations = 300;
  const auto result = flowmatch::sinkhorn_pairing(x0, x1, options);
  CHECK(result.log_plan.allFinite());
  CHECK(std::isfinite(result.marginal_error));
  CHECK(result.plan().allFinite());
  // Column sums are exact after every iteration, whatever the row error.
  CHECK((result.plan().colwise().sum().array() - 1.0 / 32).abs().maxCoeff() <= 1e-12);
  // Its cost is close to exact OT: ε·log N plus the transport of the row error.
  const double exact = flowmatch::exact_ot_pairing(x0, x1).total_cost / 32.0;
  const Matrix<double> cost = flowmatch::squared_euclidean_cost(x0, x1);
  const double sinkhorn_cost = (cost.array() * result.plan().array()).sum();
  CHECK(std::abs(sinkhorn_cost - exact) <=
        result.epsilon * std::log(32.0) + result.marginal_error * cost.maxCoeff());

  flowmatch::SinkhornOptions<float> float_options;
  float_options.epsilon = 1e-3f;
  float_options.epsilon_relative_to_mean_cost = true;
  float_options.max_iterations = 300;
  float_options.tolerance = 1e-5f;
  const auto in_float =
      flowmatch::sinkhorn_pairing<float>(x0.cast<float>(), x1.cast<float>(), float_options);
  CHECK_FALSE(in_float.log_plan.hasNaN());
  CHECK(in_float.plan().allFinite());
}

TEST_CASE("pairs drawn from a Sinkhorn plan are reproducible and follow the plan", "[sinkhorn]") {
  std::mt19937_64 setup(12);
  const Index n = 3;
  Matrix<double> x0(1, n), x1(1, n);
  x0 << 0, 1, 2;
  x1 << 10, 11, 12;
  // A regularisation of the order of the costs spreads the plan over every pair.
  flowmatch::SinkhornOptions<double> options;
  options.epsilon = 1.0;
  options.epsilon_relative_to_mean_cost = true;
  const Matrix<double> plan =
      flowmatch::sinkhorn_pairing(Matrix<double>(gaussian_batch(2, n, setup)),
                                  Matrix<double>(gaussian_batch(2, n, setup)), options)
          .plan();
  REQUIRE(plan.minCoeff() > 0.01);

  for (const auto sampling :
       {flowmatch::PlanSampling::flattened, flowmatch::PlanSampling::per_source_row}) {
    std::mt19937_64 first(42), second(42), third(43);
    const auto a = flowmatch::sample_pairs_from_plan(plan, x0, x1, first, sampling);
    const auto b = flowmatch::sample_pairs_from_plan(plan, x0, x1, second, sampling);
    CHECK(a.x0 == b.x0);
    CHECK(a.x1 == b.x1);
    // A different seed gives different pairs somewhere within a few batches.
    bool differs = false;
    for (int batch = 0; batch < 10 && !differs; ++batch) {
      const auto c = flowmatch::sample_pairs_from_plan(plan, x0, x1, third, sampling);
      const auto d = flowmatch::sample_pairs_from_plan(plan, x0, x1, first, sampling);
      differs = c.x0 != d.x0 || c.x1 != d.x1;
    }
    CHECK(differs);

    // Empirical frequencies of the pairs (i, j) match π_ij in both modes: per source row,
    // row i appears once per batch (probability a_i = 1/N) and draws j with π_ij / a_i.
    Matrix<double> counts = Matrix<double>::Zero(n, n);
    const int batches = 20000;
    for (int batch = 0; batch < batches; ++batch) {
      const auto pairs = flowmatch::sample_pairs_from_plan(plan, x0, x1, first, sampling);
      for (Index k = 0; k < n; ++k) {
        counts(static_cast<Index>(pairs.x0(0, k)), static_cast<Index>(pairs.x1(0, k)) - 10) += 1;
      }
    }
    const Matrix<double> frequency = counts / (static_cast<double>(n) * batches);
    // 60000 draws: a standard deviation of at most 0.002 per frequency.
    CHECK((frequency - plan).cwiseAbs().maxCoeff() <= 0.01);
    if (sampling == flowmatch::PlanSampling::per_source_row) {
      CHECK(a.x0 == x0);
    }
  }
}

TEST_CASE("Sinkhorn and plan sampling reject invalid input", "[sinkhorn]") {
  const Matrix<double> x0 = Matrix<double>::Random(2, 4);
  flowmatch::SinkhornOptions<double> options;
  CHECK_THROWS_AS(
      flowmatch::sinkhorn_pairing(x0, Matrix<double>(Matrix<double>::Random(2, 5)), options),
      std::invalid_argument);
  options.epsilon = 0.0;
  CHECK_THROWS_WITH(flowmatch::sinkhorn_pairing(x0, x0, options), Catch::Contains("epsilon is 0"));
  options.epsilon = -1.0;
  CHECK_THROWS_AS(flowmatch::sinkhorn_pairing(x0, x0, options), std::invalid_argument);
  options.epsilon = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(flowmatch::sinkhorn_pairing(x0, x0, options), std::invalid_argument);
  options.epsilon = 0.1;
  options.max_iterations = 0;
  CHECK_THROWS_WITH(flowmatch::sinkhorn_pairing(x0, x0, options),
                    Catch::Contains("max_iterations"));
  options.max_iterations = 10;
  options.tolerance = -1.0;
  CHECK_THROWS_WITH(flowmatch::sinkhorn_pairing(x0, x0, options), Catch::Contains("tolerance"));
  options.tolerance = 1e-6;
  Matrix<double> bad = x0;
  bad(1, 1) = std::nan("");
  CHECK_THROWS_AS(flowmatch::sinkhorn_pairing(x0, bad, options), std::invalid_argument);
  CHECK_THROWS_AS(
      flowmatch::sinkhorn(Matrix<double>(Matrix<double>::Constant(2, 2, -1.0)), options),
      std::invalid_argument);
  // A relative epsilon needs a positive mean cost: identical points have none.
  options.epsilon_relative_to_mean_cost = true;
  CHECK_THROWS_WITH(flowmatch::sinkhorn(Matrix<double>(Matrix<double>::Zero(2, 2)), options),
                    Catch::Contains("mean cost"));
  // An absolute epsilon so small that C/ε overflows is a numerical failure, not a NaN.
  options.epsilon_relative_to_mean_cost = false;
  options.epsilon = 1e-310;
  CHECK_THROWS_AS(flowmatch::sinkhorn_pairing(x0, Matrix<double>(x0 * 100.0), options),
                  flowmatch::numerical_error);

  std::mt19937_64 generator(0);
  const Matrix<double> plan = Matrix<double>::Constant(4, 4, 1.0 / 16);
  CHECK_THROWS_AS(flowmatch::sample_pairs_from_plan(Matrix<double>(plan.topRows(3)), x0, x0,
                                                    generator, flowmatch::PlanSampling::flattened),
                  std::invalid_argument);
  Matrix<double> negative = plan;
  negative(0, 0) = -0.1;
  CHECK_THROWS_WITH(flowmatch::sample_pairs_from_plan(negative, x0, x0, generator,
                                                      flowmatch::PlanSampling::flattened),
                    Catch::Contains("negative"));
  CHECK_THROWS_AS(
      flowmatch::sample_pairs_from_plan(Matrix<double>(Matrix<double>::Zero(4, 4)), x0, x0,
                                        generator, flowmatch::PlanSampling::flattened),
      std::invalid_argument);
  Matrix<double> empty_row = plan;
  empty_row.row(2).setZero();
  CHECK_THROWS_WITH(flowmatch::sample_pairs_from_plan(empty_row, x0, x0, generator,
                                                      flowmatch::PlanSampling::per_source_row),
                    Catch::Contains("row 2"));
}
