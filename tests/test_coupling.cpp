// Tests of the minibatch couplings: the assignment solver against brute force and LP duality,
// the exact OT pairing, Sinkhorn against a plain log-domain reference and the sampling of pairs
// from a plan.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/coupling/exact_ot.hpp"
#include "flowmatch/coupling/sinkhorn.hpp"
#include "flowmatch/detail/sinkhorn_relaxation.hpp"
#include "flowmatch/detail/stabilised_sinkhorn.hpp"

namespace test_coupling {

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

// Checks that an assignment is injective and that its reported cost is its cost, and that the
// potentials are a feasible dual solution with the same objective: u_i + v_j ≤ C_ij, v ≤ 0,
// v_j = 0 on every unused column, u_i + v_σ(i) = C_iσ(i), and so Σu + Σv = Σ_i C_iσ(i). By weak
// LP duality no assignment then costs less.
// Rounding tolerance: u and v are rounded to Scalar, and C_ij − u_i − v_j is then exact only up
// to a few units in the last place of m = max(|C|, |u|, |v|). We allow 16·ε·m per entry (ε of
// Scalar: a rounding of u and of v, ε/2·m each, and those of the solver's own subtractions, with
// room to spare) and N times that for the sums over the N assigned entries. A wrong assignment
// or a wrong potential shows up far above this (the costs of competing assignments of random
// instances differ by much more than ε·m).
template <class Scalar>
void check_certificate(const Matrix<Scalar>& cost, const flowmatch::AssignmentResult<Scalar>& r) {
  const Index rows = cost.rows();
  REQUIRE(static_cast<Index>(r.column_of_row.size()) == rows);
  REQUIRE(r.row_potential.size() == rows);
  REQUIRE(r.column_potential.size() == cost.cols());
  const Matrix<double> c = cost.template cast<double>();
  const Vector<double> u = r.row_potential.template cast<double>();
  const Vector<double> v = r.column_potential.template cast<double>();
  const double magnitude =
      std::max({c.cwiseAbs().maxCoeff(), u.cwiseAbs().maxCoeff(), v.cwiseAbs().maxCoeff()});
  const double tolerance = 16.0 * std::numeric_limits<Scalar>::epsilon() * magnitude;
  const Matrix<double> reduced = (c.colwise() - u).rowwise() - v.transpose();
  std::vector<int> used(static_cast<std::size_t>(cost.cols()), 0);
  double total = 0;
  for (Index row = 0; row < rows; ++row) {
    const Index col = r.column_of_row[row];
    REQUIRE(col >= 0);
    REQUIRE(col < cost.cols());
    CHECK(++used[col] == 1);
    CHECK(std::abs(reduced(row, col)) <= tolerance);
    total += c(row, col);
  }
  CHECK(reduced.minCoeff() >= -tolerance);
  CHECK(v.maxCoeff() <= 0.0);
  for (Index col = 0; col < cost.cols(); ++col) {
    if (used[col] == 0) CHECK(v(col) == 0.0);
  }
  const double sum_tolerance = static_cast<double>(rows) * tolerance;
  CHECK_THAT(static_cast<double>(r.total_cost), WithinAbs(total, sum_tolerance));
  CHECK_THAT(u.sum() + v.sum(), WithinAbs(total, sum_tolerance));
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

TEST_CASE("the assignment matches brute force on many small instances, in double and float",
          "[exact_ot]") {
  // Square and rectangular costs of four kinds: continuous values of both signs, integers in
  // {0, 1, 2} (many optimal assignments), one value everywhere, and squared distances between
  // point sets that repeat a few points.
  std::mt19937_64 generator(11);
  std::uniform_int_distribution<int> size(1, 6);
  std::uniform_int_distribution<int> small_integer(0, 2);
  std::uniform_real_distribution<double> uniform(-5.0, 5.0);
  for (int instance = 0; instance < 400; ++instance) {
    const Index rows = size(generator);
    const Index cols = std::min<Index>(rows + instance % 3, 7);
    Matrix<double> cost(rows, cols);
    if (instance % 4 == 0) {
      for (double& value : cost.reshaped()) value = uniform(generator);
    } else if (instance % 4 == 1) {
      for (double& value : cost.reshaped()) value = small_integer(generator);
    } else if (instance % 4 == 2) {
      cost.setConstant(uniform(generator));
    } else {
      const Matrix<double> points = gaussian_batch(2, 3, generator);
      Matrix<double> x0(2, rows);
      Matrix<double> x1(2, cols);
      for (Index k = 0; k < rows; ++k) x0.col(k) = points.col(small_integer(generator));
      for (Index k = 0; k < cols; ++k) x1.col(k) = points.col(small_integer(generator));
      cost = flowmatch::squared_euclidean_cost(x0, x1);
    }
    INFO("instance " << instance << ", " << rows << "x" << cols);
    // Totals of at most 7 entries: a few roundings of the magnitude in double, and in float the
    // rounding of the total itself (relative 6e-8).
    const double magnitude = 1.0 + cost.cwiseAbs().maxCoeff();
    const auto in_double = flowmatch::solve_assignment(cost);
    check_certificate(cost, in_double);
    CHECK_THAT(in_double.total_cost, WithinAbs(brute_force_minimum(cost), 1e-13 * magnitude));
    const Matrix<float> cost_float = cost.cast<float>();
    const auto in_float = flowmatch::solve_assignment(cost_float);
    check_certificate(cost_float, in_float);
    CHECK_THAT(in_float.total_cost,
               WithinAbs(brute_force_minimum(cost_float.cast<double>()), 1e-5 * magnitude));
  }
}

TEST_CASE("the certificate holds at N = 300 in double and float", "[exact_ot]") {
  // Standard normal sources; targets standard normal or shifted far away (which the potentials
  // must absorb), in 2 and 32 dimensions. The float problem is the double one rounded, so the
  // optimal costs agree to within N roundings of the largest cost.
  for (const Index dim : {2, 32}) {
    for (const double shift : {0.0, 3.0}) {
      std::mt19937_64 generator(static_cast<std::uint64_t>(dim) + 100);
      const Index n = 300;
      const Matrix<double> x0 = gaussian_batch(dim, n, generator);
      const Matrix<double> x1 = (gaussian_batch(dim, n, generator).array() + shift).matrix();
      INFO("d = " << dim << ", shift = " << shift);
      const Matrix<double> cost = flowmatch::squared_euclidean_cost(x0, x1);
      const auto in_double = flowmatch::exact_ot_pairing(x0, x1);
      check_certificate(cost, in_double);
      const Matrix<float> cost_float =
          flowmatch::squared_euclidean_cost<float>(x0.cast<float>(), x1.cast<float>());
      const auto in_float = flowmatch::solve_assignment(cost_float);
      check_certificate(cost_float, in_float);
      const double rounding =
          static_cast<double>(n) * std::numeric_limits<float>::epsilon() * cost.maxCoeff();
      CHECK_THAT(in_float.total_cost, WithinAbs(in_double.total_cost, rounding));
    }
  }
}

TEST_CASE("ties, repeated points and constant costs at N = 300 are certified", "[exact_ot]") {
  const Index n = 300;
  std::mt19937_64 generator(12);
  std::uniform_int_distribution<int> small_integer(0, 3);
  Matrix<double> integers(n, n);
  for (double& value : integers.reshaped()) value = small_integer(generator);
  // Ten distinct targets, each repeated 30 times, against distinct sources.
  const Matrix<double> x0 = gaussian_batch(2, n, generator);
  const Matrix<double> targets = gaussian_batch(2, 10, generator);
  Matrix<double> x1(2, n);
  for (Index k = 0; k < n; ++k) x1.col(k) = targets.col(k % 10);
  const std::vector<Matrix<double>> costs{
      Matrix<double>::Zero(n, n), Matrix<double>::Constant(n, n, -2.5), integers,
      flowmatch::squared_euclidean_cost(x0, x1), flowmatch::squared_euclidean_cost(x0, x0)};
  for (std::size_t kind = 0; kind < costs.size(); ++kind) {
    INFO("cost " << kind);
    check_certificate(costs[kind], flowmatch::solve_assignment(costs[kind]));
    const Matrix<float> cost_float = costs[kind].cast<float>();
    check_certificate(cost_float, flowmatch::solve_assignment(cost_float));
  }
  // A constant cost costs N times the constant whatever the assignment.
  CHECK(flowmatch::solve_assignment(costs[1]).total_cost == -2.5 * n);
  // A point set is paired with itself, at no cost but the rounding of the expanded distance
  // ‖a‖² + ‖a‖² − 2·a·a on the diagonal (a few ulps of ‖a‖² = O(1) per point).
  const auto with_itself = flowmatch::solve_assignment(costs[4]);
  for (Index row = 0; row < n; ++row) {
    CHECK(with_itself.column_of_row[static_cast<std::size_t>(row)] == row);
  }
  CHECK_THAT(with_itself.total_cost, Catch::Matchers::WithinAbs(0.0, 1e-12));
  // Ties are broken the same way every time.
  const auto first = flowmatch::solve_assignment(integers);
  const auto second = flowmatch::solve_assignment(integers);
  CHECK(first.column_of_row == second.column_of_row);
  CHECK(first.row_potential == second.row_potential);
  CHECK(first.column_potential == second.column_potential);
}

TEST_CASE("rectangular assignments leave the unused columns at zero potential", "[exact_ot]") {
  // N < M: every row assigned, v ≤ 0 and v_j = 0 on the M − N unused columns (checked by
  // check_certificate), for targets near and far from the sources.
  for (const double shift : {0.0, 3.0}) {
    std::mt19937_64 generator(13);
    const Matrix<double> x0 = gaussian_batch(2, 120, generator);
    const Matrix<double> x1 = (gaussian_batch(2, 300, generator).array() + shift).matrix();
    INFO("shift = " << shift);
    const Matrix<double> cost = flowmatch::squared_euclidean_cost(x0, x1);
    check_certificate(cost, flowmatch::solve_assignment(cost));
    const Matrix<float> cost_float = cost.cast<float>();
    check_certificate(cost_float, flowmatch::solve_assignment(cost_float));
  }
}

TEST_CASE("the assignment ignores the scale of the cost and per-row and per-column offsets",
          "[exact_ot]") {
  // C_ij·s and C_ij + a_i + b_j have the same optimal assignments as C; a continuous random
  // cost has a single one.
  std::mt19937_64 generator(14);
  const Index n = 150;
  const Matrix<double> cost = flowmatch::squared_euclidean_cost(gaussian_batch(2, n, generator),
                                                                gaussian_batch(2, n, generator));
  const auto reference = flowmatch::solve_assignment(cost);
  check_certificate(cost, reference);
  for (const double scale : {1e-150, 1e150}) {
    const Matrix<double> scaled = cost * scale;
    const auto result = flowmatch::solve_assignment(scaled);
    check_certificate(scaled, result);
    CHECK(result.column_of_row == reference.column_of_row);
  }
  Matrix<double> offset = cost;
  offset.colwise() += (10.0 * gaussian_batch(n, 1, generator)).col(0);
  offset.rowwise() += (10.0 * gaussian_batch(1, n, generator)).row(0);
  const auto result = flowmatch::solve_assignment(offset);
  check_certificate(offset, result);
  CHECK(result.column_of_row == reference.column_of_row);
}

TEST_CASE("costs spanning the whole double range throw numerical_error", "[exact_ot]") {
  // The optimal cost −2·max overflows; the solver reports it instead of returning infinities.
  const double max = std::numeric_limits<double>::max();
  Matrix<double> cost(2, 2);
  cost << max, -max, -max, max;
  CHECK_THROWS_AS(flowmatch::solve_assignment(cost), flowmatch::numerical_error);
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

namespace {

// The entropic plan by its definition: plain log-domain Sinkhorn in double,
// φ_i = log a − LSE_j(ψ_j − C_ij/ε), ψ_j = log b − LSE_i(φ_i − C_ij/ε), from zero potentials
// until the row error of the plan is at most 1e-14 + 1e-17 · max C/ε (its column sums are
// exact; rounding φ_i + ψ_j − C_ij/ε leaves about 1e-17 · max C/ε).
Matrix<double> reference_log_plan(const Matrix<double>& cost, double epsilon) {
  const Eigen::ArrayXXd scaled = -cost.array() / epsilon;
  const Eigen::ArrayXXd scaled_transpose = scaled.transpose();
  const auto log_sum_exp = [](const auto& values) {
    const double top = values.maxCoeff();
    return top + std::log((values - top).exp().sum());
  };
  const double log_a = -std::log(static_cast<double>(cost.rows()));
  const double log_b = -std::log(static_cast<double>(cost.cols()));
  Eigen::ArrayXd phi = Eigen::ArrayXd::Zero(cost.rows());
  Eigen::ArrayXd psi = Eigen::ArrayXd::Zero(cost.cols());
  const double tolerance = 1e-14 + 1e-17 * cost.maxCoeff() / epsilon;
  Eigen::ArrayXXd log_plan;
  for (int iteration = 1; iteration <= 1000000; ++iteration) {
    for (Index i = 0; i < cost.rows(); ++i) {
      phi(i) = log_a - log_sum_exp(scaled_transpose.col(i) + psi);
    }
    for (Index j = 0; j < cost.cols(); ++j) psi(j) = log_b - log_sum_exp(scaled.col(j) + phi);
    if (iteration % 10 != 0) continue;
    log_plan = (scaled.colwise() + phi).rowwise() + psi.transpose();
    if ((log_plan.exp().rowwise().sum() - std::exp(log_a)).abs().sum() <= tolerance) break;
  }
  return log_plan.matrix();
}

// Σ_ij |π_ij − π'_ij| between the plans of two log-plans.
double plan_distance(const Matrix<double>& log_plan, const Matrix<double>& other) {
  return (log_plan.array().exp() - other.array().exp()).abs().sum();
}

// Σ_i |Σ_j π_ij − 1/N| and Σ_j |Σ_i π_ij − 1/M| of the plan exp(log_plan), in double.
std::pair<double, double> marginal_errors(const Matrix<double>& log_plan) {
  const Eigen::ArrayXXd plan = log_plan.array().exp();
  return {(plan.rowwise().sum() - 1.0 / static_cast<double>(plan.rows())).abs().sum(),
          (plan.colwise().sum() - 1.0 / static_cast<double>(plan.cols())).abs().sum()};
}

// Squared Euclidean costs between `rows` 2-D standard normal points and `cols` points of
// N((1, 1), 4I). The counts are coprime: no partial sums of the marginals agree, the plan's
// support tends to a connected tree as ε → 0, and plain Sinkhorn (the reference) converges
// linearly at every ε. (Square problems tend to a permutation, and the convergence becomes
// sublinear at ε = 1e-2 of the mean cost for a dozen points.)
Matrix<double> sample_cost(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  const Matrix<double> x0 = gaussian_batch(2, rows, generator);
  const Matrix<double> x1 = gaussian_batch(2, cols, generator) * 2.0;
  return flowmatch::squared_euclidean_cost(x0, (x1.colwise() + Vector<double>::Ones(2)).eval());
}

// Sinkhorn at ε = @p epsilon times the mean cost, run to a marginal error of 1e-12.
flowmatch::SinkhornOptions<double> converged_options(double epsilon) {
  flowmatch::SinkhornOptions<double> options;
  options.epsilon = epsilon;
  options.epsilon_relative_to_mean_cost = true;
  options.tolerance = 1e-12;
  options.max_iterations = 100000;
  return options;
}

}  // namespace

TEST_CASE("the Sinkhorn plan matches a plain log-domain reference for every epsilon",
          "[sinkhorn]") {
  // Down to ε = 1e-3 of the mean cost, where exp(−C/ε) underflows for most entries.
  for (const auto& [rows, cols] : {std::pair<Index, Index>{10, 7}, {12, 11}}) {
    const Matrix<double> cost = sample_cost(rows, cols, 31);
    for (const double epsilon : {1.0, 0.1, 0.01, 1e-3}) {
      INFO("rows " << rows << ", cols " << cols << ", epsilon " << epsilon);
      const auto result = flowmatch::sinkhorn(cost, converged_options(epsilon));
      REQUIRE(result.converged);
      const Matrix<double> reference = reference_log_plan(cost, result.epsilon);
      CHECK(plan_distance(result.log_plan, reference) <= 1e-11);
      // Entries of non-negligible mass agree in the log domain too.
      const auto significant = reference.array() > std::log(1e-8);
      CHECK(significant.select(result.log_plan - reference, 0.0).cwiseAbs().maxCoeff() <= 1e-9);
    }
  }
}

TEST_CASE("the Sinkhorn fixed point satisfies both marginals, in double and float", "[sinkhorn]") {
  const Matrix<double> cost = sample_cost(24, 19, 32);
  for (const double epsilon : {1.0, 0.1, 0.01, 1e-3}) {
    INFO("epsilon " << epsilon);
    const flowmatch::SinkhornOptions<double> options = converged_options(epsilon);
    const auto result = flowmatch::sinkhorn(cost, options);
    REQUIRE(result.converged);
    const auto [row_error, column_error] = marginal_errors(result.log_plan);
    CHECK(row_error <= options.tolerance);
    CHECK_THAT(row_error, WithinAbs(result.marginal_error, 1e-15));
    CHECK(column_error <= 1e-12);  // the last update makes the column sums exact

    // In float the default tolerance, 1e-6, is reached, and the plan is the entropic plan of
    // the float cost to float rounding.
    flowmatch::SinkhornOptions<float> float_options;
    float_options.epsilon = static_cast<float>(epsilon);
    float_options.epsilon_relative_to_mean_cost = true;
    float_options.max_iterations = 100000;
    const Matrix<float> float_cost = cost.cast<float>();
    const auto in_float = flowmatch::sinkhorn(float_cost, float_options);
    REQUIRE(in_float.converged);
    CHECK(in_float.marginal_error <= 1e-6f);
    const Matrix<double> float_log_plan = in_float.log_plan.cast<double>();
    const auto [float_row_error, float_column_error] = marginal_errors(float_log_plan);
    CHECK(float_row_error <= 1e-6);
    CHECK(float_column_error <= 1e-6);
    const Matrix<double> reference =
        reference_log_plan(float_cost.cast<double>(), static_cast<double>(in_float.epsilon));
    CHECK(plan_distance(float_log_plan, reference) <= 1e-5);
  }
}

TEST_CASE("a cold start at a tiny epsilon absorbs the scalings and stays exact", "[sinkhorn]") {
  // A constant added to every cost leaves the plan unchanged, but with it every kernel entry
  // exp(−C/ε) underflows: the columns need log-domain updates, and the scalings that follow
  // exceed e^177 and are absorbed into the potentials.
  const Matrix<double> cost = sample_cost(10, 7, 33);
  const double epsilon = 1e-3 * cost.mean();
  const Matrix<double> shifted = cost.array() + 50 * cost.mean();
  const Matrix<double> reference = reference_log_plan(cost, epsilon);
  flowmatch::detail::StabilisedSinkhorn<double> cold(shifted);
  cold.set_epsilon(epsilon);
  double row_error = 1;
  for (int iteration = 0; iteration < 100000; ++iteration) {
    row_error = cold.update_columns(1.0).row_error;
    if (row_error <= 1e-12) break;
    cold.update_rows(1.0);
  }
  REQUIRE(row_error <= 1e-12);
  CHECK(cold.log_domain_updates() > 0);
  CHECK(cold.absorptions() > 0);
  CHECK(plan_distance(cold.release_log_plan(), reference) <= 1e-10);

  // A warm start from a larger ε (a step of ε-scaling) reaches the same plan.
  flowmatch::detail::StabilisedSinkhorn<double> warm(cost);
  warm.set_epsilon(100 * epsilon);
  for (int iteration = 0; iteration < 20; ++iteration) {
    static_cast<void>(warm.update_columns(1.0));
    warm.update_rows(1.0);
  }
  warm.set_epsilon(epsilon);
  for (int iteration = 0; iteration < 100000; ++iteration) {
    row_error = warm.update_columns(1.0).row_error;
    if (row_error <= 1e-12) break;
    warm.update_rows(1.0);
  }
  REQUIRE(row_error <= 1e-12);
  CHECK(plan_distance(warm.release_log_plan(), reference) <= 1e-10);
}

TEST_CASE("the Sinkhorn progress callback reports every stage in order", "[sinkhorn]") {
  const Matrix<double> cost = sample_cost(32, 27, 34);
  flowmatch::SinkhornOptions<double> options;
  options.epsilon = 1e-2;
  options.epsilon_relative_to_mean_cost = true;
  std::vector<flowmatch::SinkhornProgress<double>> reports;
  options.progress = [&reports](const flowmatch::SinkhornProgress<double>& progress) {
    reports.push_back(progress);
  };
  // An interval of 0 reports after every iteration.
  options.progress_interval_seconds = 0;
  const auto result = flowmatch::sinkhorn(cost, options);
  REQUIRE(result.converged);
  REQUIRE(static_cast<Index>(reports.size()) == result.iterations);
  for (std::size_t k = 0; k < reports.size(); ++k) {
    CHECK(reports[k].iteration == static_cast<Index>(k) + 1);
    CHECK(std::isfinite(reports[k].marginal_error));
    CHECK(reports[k].epsilon >= result.epsilon);
    if (k > 0) {
      CHECK(reports[k].elapsed_seconds >= reports[k - 1].elapsed_seconds);
      CHECK(reports[k].epsilon <= reports[k - 1].epsilon);  // ε-scaling only shrinks ε
    }
  }
  // The ε-scaling stages ran (ε is far below the cost range), then the target ε.
  CHECK(reports.front().epsilon > 10 * result.epsilon);
  CHECK(reports.back().epsilon == result.epsilon);
  CHECK_THAT(reports.back().marginal_error, WithinAbs(result.marginal_error, 1e-13));

  // A long interval: never called for a solve shorter than it.
  reports.clear();
  options.progress_interval_seconds = 3600;
  static_cast<void>(flowmatch::sinkhorn(cost, options));
  CHECK(reports.empty());

  // An exception thrown by the callback ends the solve.
  options.progress_interval_seconds = 0;
  options.progress = [](const flowmatch::SinkhornProgress<double>&) {
    throw std::runtime_error("stop");
  };
  CHECK_THROWS_WITH(flowmatch::sinkhorn(cost, options), "stop");
}

TEST_CASE("Sinkhorn stopped at max_iterations says so and reports its error", "[sinkhorn]") {
  const Matrix<double> cost = sample_cost(32, 27, 35);
  for (const Index max_iterations : {1, 2, 7}) {
    INFO("max_iterations " << max_iterations);
    flowmatch::SinkhornOptions<double> options;
    options.epsilon = 1e-3;
    options.epsilon_relative_to_mean_cost = true;
    options.max_iterations = max_iterations;
    const auto result = flowmatch::sinkhorn(cost, options);
    CHECK_FALSE(result.converged);
    CHECK(result.iterations == max_iterations);
    const auto [row_error, column_error] = marginal_errors(result.log_plan);
    CHECK(result.marginal_error > options.tolerance);
    CHECK_THAT(row_error, WithinAbs(result.marginal_error, 1e-14));
    CHECK(column_error <= 1e-12);

    flowmatch::SinkhornOptions<float> float_options;
    float_options.epsilon = 1e-3f;
    float_options.epsilon_relative_to_mean_cost = true;
    float_options.max_iterations = max_iterations;
    const auto in_float = flowmatch::sinkhorn<float>(cost.cast<float>(), float_options);
    CHECK_FALSE(in_float.converged);
    CHECK(in_float.iterations == max_iterations);
    CHECK(in_float.marginal_error > float_options.tolerance);
    CHECK(in_float.log_plan.allFinite());
  }
}

TEST_CASE("the Sinkhorn relaxation factor is Young's optimum for the observed rate", "[sinkhorn]") {
  // Plain iterations whose error shrinks by θ = 0.99 per iteration: after two windows of 10 the
  // factor is ω* = 2 / (1 + √(1 − θ)).
  const double theta = 0.99;
  const double optimal = 2 / (1 + std::sqrt(1 - theta));
  flowmatch::detail::SinkhornRelaxation<double> relaxation(1e-12);
  double error = 0.05;
  for (int iteration = 0; iteration < 20; ++iteration) {
    CHECK(relaxation.factor() == 1.0);
    relaxation.record(error, 0.0);
    error *= theta;
  }
  CHECK_THAT(relaxation.factor(), WithinRel(optimal, 1e-9));
  // At ω*, the rate ω* − 1 of over-relaxed iterations keeps the factor (near ω*: the first
  // window still holds a plain iteration).
  for (int iteration = 0; iteration < 30; ++iteration) {
    relaxation.record(error, 0.0);
    error *= optimal - 1;
  }
  CHECK_THAT(relaxation.factor(), WithinRel(optimal, 1e-3));
  // Once the error is within 100 times the tolerance, the next iteration is plain (a test of
  // convergence); a failed test returns to ω*.
  flowmatch::detail::SinkhornRelaxation<double> testing(error / 50);
  for (int iteration = 0; iteration < 20; ++iteration) {
    testing.record(10 * error * std::pow(theta, iteration), 0.0);
  }
  REQUIRE(testing.factor() > 1.0);
  testing.record(error, 0.0);
  CHECK(testing.factor() == 1.0);
  testing.record(error / 10, 0.0);
  CHECK(testing.factor() > 1.0);
  // Two windows over which the error grows reset the factor to 1.
  for (int iteration = 0; iteration < 30; ++iteration) {
    relaxation.record(error, 0.0);
    error *= 1.01;
  }
  CHECK(relaxation.factor() == 1.0);
  // Far from the fixed point (error above 0.1) the factor is 1.
  flowmatch::detail::SinkhornRelaxation<double> far(1e-12);
  for (int iteration = 0; iteration < 20; ++iteration) {
    far.record(0.5 * std::pow(theta, iteration), 0.0);
  }
  CHECK(far.factor() == 1.0);
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
  options.progress_interval_seconds = -1;
  CHECK_THROWS_WITH(flowmatch::sinkhorn_pairing(x0, x0, options),
                    Catch::Contains("progress_interval_seconds"));
  options.progress_interval_seconds = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(flowmatch::sinkhorn_pairing(x0, x0, options), std::invalid_argument);
  options.progress_interval_seconds = 0.25;
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

}  // namespace test_coupling
