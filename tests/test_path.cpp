// Tests of the affine path: finite differences of sample(), round trips and consistency of the
// conversions between velocity, target, epsilon and score; the schedule transform against the
// exact velocity of a Gaussian data distribution.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/path/schedule_transform.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/linear_vp.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/scheduler/vp.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace test_path {

namespace {

using Catch::Matchers::WithinAbs;
using flowmatch::AffinePath;
using flowmatch::BatchTime;
using flowmatch::Matrix;
using flowmatch::Vector;

// Calls visit(path, name) for a path of every scheduler.
template <class Visit>
void for_each_path(Visit&& visit) {
  visit(AffinePath(flowmatch::CondOT<>{}), "CondOT");
  visit(AffinePath(flowmatch::Polynomial<>(0.5)), "Polynomial(0.5)");
  visit(AffinePath(flowmatch::Polynomial<>(2)), "Polynomial(2)");
  visit(AffinePath(flowmatch::VP<>()), "VP(0.1, 20)");
  visit(AffinePath(flowmatch::LinearVP<>{}), "LinearVP");
  visit(AffinePath(flowmatch::Cosine<>{}), "Cosine");
}

Matrix<double> normal_matrix(std::mt19937_64& generator, int rows, int cols) {
  std::normal_distribution<double> normal;
  Matrix<double> matrix(rows, cols);
  for (auto& entry : matrix.reshaped()) entry = normal(generator);
  return matrix;
}

Vector<double> uniform_times(std::mt19937_64& generator, int cols, double low, double high) {
  std::uniform_real_distribution<double> uniform(low, high);
  Vector<double> times(cols);
  for (auto& time : times) time = uniform(generator);
  return times;
}

enum class View { velocity, target, epsilon, score };
constexpr std::array<View, 4> all_views = {View::velocity, View::target, View::epsilon,
                                           View::score};
const char* name_of(View view) {
  constexpr std::array<const char*, 4> names = {"velocity", "target", "epsilon", "score"};
  return names[static_cast<std::size_t>(view)];
}

// The named conversion from one view to another.
template <class Path>
Matrix<double> convert(const Path& path, View from, View to, const Matrix<double>& prediction,
                       const Matrix<double>& x_t, const BatchTime<double>& t) {
  switch (from) {
    case View::velocity:
      if (to == View::target) return path.velocity_to_target(prediction, x_t, t);
      if (to == View::epsilon) return path.velocity_to_epsilon(prediction, x_t, t);
      return path.velocity_to_score(prediction, x_t, t);
    case View::target:
      if (to == View::velocity) return path.target_to_velocity(prediction, x_t, t);
      if (to == View::epsilon) return path.target_to_epsilon(prediction, x_t, t);
      return path.target_to_score(prediction, x_t, t);
    case View::epsilon:
      if (to == View::velocity) return path.epsilon_to_velocity(prediction, x_t, t);
      if (to == View::target) return path.epsilon_to_target(prediction, x_t, t);
      return path.epsilon_to_score(prediction, x_t, t);
    case View::score:
      if (to == View::velocity) return path.score_to_velocity(prediction, x_t, t);
      if (to == View::target) return path.score_to_target(prediction, x_t, t);
      return path.score_to_epsilon(prediction, x_t, t);
  }
  throw std::logic_error("unreachable");
}

double max_abs_difference(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

// On t in [0.1, 0.9] every conversion coefficient of the tested schedulers is at most ~400 in
// magnitude (the largest is 1/σ² of Polynomial(0.5) at t = 0.9, σ = 1 − sqrt(0.9) ≈ 0.051).
// A chain of two conversions on entries |y|, |x| ≤ 6 rounds each coefficient product and sum to
// a few ε, so it errs by at most about 400²·(|y| + |x|)·ε ≈ 4e-10.
constexpr double conversion_tolerance = 1e-9;

}  // namespace

// Central differences err by h^2*|x'''|/6 + ~4ε|x|/h. On [0.1 − h, 0.9 + h] the tested schedulers
// have |α'''|, |σ'''| ≤ 200 (the largest, ~170, is σ of LinearVP near t = 0.9, then ~120 for α of
// Polynomial(0.5) near t = 0.1), so with |x₀|, |x₁| ≤ 6 and h = 1e-5 the error is at most
// 1e-10·200·12/6 + 4ε·12/h ≈ 5e-8.
TEST_CASE("sample: dx_t is the time derivative of x_t", "[path]") {
  std::mt19937_64 generator(1);
  for_each_path([&](const auto& path, const char* name) {
    INFO(name);
    const Matrix<double> x0 = normal_matrix(generator, 3, 16);
    const Matrix<double> x1 = normal_matrix(generator, 3, 16);
    const Vector<double> t = uniform_times(generator, 16, 0.1, 0.9);
    const double h = 1e-5;
    const Vector<double> after = t.array() + h;
    const Vector<double> before = t.array() - h;
    const auto sample = path.sample(x0, x1, t);
    const Matrix<double> difference =
        (path.sample(x0, x1, after).x_t - path.sample(x0, x1, before).x_t) *
        (after - before).cwiseInverse().asDiagonal();
    const double tolerance = h * h * 200 * 12 / 6 + 4 * 2.2e-16 * 12 / h;
    CHECK(max_abs_difference(sample.dx_t, difference) < tolerance);
  });
}

TEST_CASE("sample: the path starts at the source and ends at the data", "[path]") {
  std::mt19937_64 generator(2);
  const Matrix<double> x0 = normal_matrix(generator, 2, 5);
  const Matrix<double> x1 = normal_matrix(generator, 2, 5);
  const AffinePath path(flowmatch::CondOT<>{});
  CHECK(path.sample(x0, x1, 0.0).x_t == x0);
  CHECK(path.sample(x0, x1, 1.0).x_t == x1);
  // CondOT: dx_t = x₁ − x₀ at every t; one time per column.
  const Vector<double> t = uniform_times(generator, 5, 0, 1);
  const auto sample = path.sample(x0, x1, t);
  CHECK(max_abs_difference(sample.dx_t, x1 - x0) < 1e-15);
  for (int col = 0; col < 5; ++col) {
    CHECK(max_abs_difference(sample.x_t.col(col),
                             t(col) * x1.col(col) + (1 - t(col)) * x0.col(col)) < 1e-15);
  }
  const AffinePath cosine(flowmatch::Cosine<>{});
  CHECK(cosine.sample(x0, x1, 1.0).x_t == x1);
}

TEST_CASE("every conversion round-trips", "[path]") {
  std::mt19937_64 generator(3);
  for_each_path([&](const auto& path, const char* name) {
    const Matrix<double> prediction = normal_matrix(generator, 4, 12);
    const Matrix<double> x_t = normal_matrix(generator, 4, 12);
    const Vector<double> per_column = uniform_times(generator, 12, 0.1, 0.9);
    const double shared = uniform_times(generator, 1, 0.1, 0.9)(0);
    for (const View from : all_views) {
      for (const View to : all_views) {
        if (from == to) continue;
        INFO(name << ": " << name_of(from) << " -> " << name_of(to) << " -> " << name_of(from));
        const Matrix<double> there = convert(path, from, to, prediction, x_t, per_column);
        CHECK(max_abs_difference(convert(path, to, from, there, x_t, per_column), prediction) <
              conversion_tolerance);
        const Matrix<double> there_shared = convert(path, from, to, prediction, x_t, shared);
        CHECK(max_abs_difference(convert(path, to, from, there_shared, x_t, shared), prediction) <
              conversion_tolerance);
        // A shared time is the same as that time repeated in every column.
        const Vector<double> repeated = Vector<double>::Constant(12, shared);
        CHECK(max_abs_difference(convert(path, from, to, prediction, x_t, repeated), there_shared) <
              1e-12);
      }
    }
  });
}

TEST_CASE("converting directly equals converting through any third view", "[path]") {
  std::mt19937_64 generator(4);
  for_each_path([&](const auto& path, const char* name) {
    const Matrix<double> prediction = normal_matrix(generator, 3, 10);
    const Matrix<double> x_t = normal_matrix(generator, 3, 10);
    const Vector<double> t = uniform_times(generator, 10, 0.1, 0.9);
    for (const View from : all_views) {
      for (const View to : all_views) {
        for (const View via : all_views) {
          if (from == to || via == from || via == to) continue;
          INFO(name << ": " << name_of(from) << " -> " << name_of(via) << " -> " << name_of(to));
          const Matrix<double> direct = convert(path, from, to, prediction, x_t, t);
          const Matrix<double> middle = convert(path, from, via, prediction, x_t, t);
          CHECK(max_abs_difference(convert(path, via, to, middle, x_t, t), direct) <
                conversion_tolerance);
        }
      }
    }
  });
}

TEST_CASE("conversions recover x0 and x1 from a sample of the path", "[path]") {
  std::mt19937_64 generator(5);
  for_each_path([&](const auto& path, const char* name) {
    INFO(name);
    const Matrix<double> x0 = normal_matrix(generator, 3, 10);
    const Matrix<double> x1 = normal_matrix(generator, 3, 10);
    const Vector<double> t = uniform_times(generator, 10, 0.1, 0.9);
    const auto sample = path.sample(x0, x1, t);
    CHECK(max_abs_difference(path.velocity_to_target(sample.dx_t, sample.x_t, t), x1) <
          conversion_tolerance);
    CHECK(max_abs_difference(path.velocity_to_epsilon(sample.dx_t, sample.x_t, t), x0) <
          conversion_tolerance);
    CHECK(max_abs_difference(path.target_to_velocity(x1, sample.x_t, t), sample.dx_t) <
          conversion_tolerance);
    CHECK(max_abs_difference(path.epsilon_to_velocity(x0, sample.x_t, t), sample.dx_t) <
          conversion_tolerance);
    CHECK(max_abs_difference(path.target_to_epsilon(x1, sample.x_t, t), x0) < conversion_tolerance);
    CHECK(max_abs_difference(path.epsilon_to_target(x0, sample.x_t, t), x1) < conversion_tolerance);
    // The score of N(α·x₁, σ²I) at x_t is −(x_t − α·x₁)/σ² = −x₀/σ.
    Vector<double> sigma(10);
    for (int col = 0; col < 10; ++col) sigma(col) = path.scheduler().sigma(t(col));
    const Matrix<double> score = -x0 * sigma.cwiseInverse().asDiagonal();
    CHECK(max_abs_difference(path.target_to_score(x1, sample.x_t, t), score) <
          conversion_tolerance);
    CHECK(max_abs_difference(path.velocity_to_score(sample.dx_t, sample.x_t, t), score) <
          conversion_tolerance);
  });
}

TEST_CASE("conversions at the ends of the path", "[path]") {
  std::mt19937_64 generator(6);
  const Matrix<double> x0 = normal_matrix(generator, 2, 4);
  const Matrix<double> x1 = normal_matrix(generator, 2, 4);
  const AffinePath condot(flowmatch::CondOT<>{});

  SECTION("t = 0, alpha = 0: only conversions that divide by alpha throw") {
    const auto start = condot.sample(x0, x1, 0.0);
    CHECK(max_abs_difference(condot.velocity_to_target(start.dx_t, start.x_t, 0.0), x1) < 1e-15);
    CHECK(max_abs_difference(condot.target_to_epsilon(x1, start.x_t, 0.0), x0) < 1e-15);
    CHECK(max_abs_difference(condot.epsilon_to_score(x0, start.x_t, 0.0), -x0) < 1e-15);
    CHECK(max_abs_difference(condot.score_to_epsilon(-x0, start.x_t, 0.0), x0) < 1e-15);
    CHECK_THROWS_AS(condot.epsilon_to_target(x0, start.x_t, 0.0), std::domain_error);
    CHECK_THROWS_AS(condot.epsilon_to_velocity(x0, start.x_t, 0.0), std::domain_error);
    CHECK_THROWS_AS(condot.score_to_target(x0, start.x_t, 0.0), std::domain_error);
    CHECK_THROWS_AS(condot.score_to_velocity(x0, start.x_t, 0.0), std::domain_error);
    CHECK_THROWS_WITH(condot.epsilon_to_target(x0, start.x_t, 0.0),
                      Catch::Contains("epsilon_to_target") && Catch::Contains("alpha_t = 0"));
  }
  SECTION("t = 1, sigma = 0: conversions that divide by sigma and all score ones throw") {
    const auto end = condot.sample(x0, x1, 1.0);
    CHECK(max_abs_difference(condot.velocity_to_target(end.dx_t, end.x_t, 1.0), x1) < 1e-15);
    CHECK(max_abs_difference(condot.velocity_to_epsilon(end.dx_t, end.x_t, 1.0), x0) < 1e-14);
    CHECK(max_abs_difference(condot.epsilon_to_target(x0, end.x_t, 1.0), x1) < 1e-15);
    CHECK(max_abs_difference(condot.epsilon_to_velocity(x0, end.x_t, 1.0), x1 - x0) < 1e-15);
    for (const View view : all_views) {
      if (view == View::score) continue;
      INFO(name_of(view));
      CHECK_THROWS_AS(convert(condot, View::score, view, x0, end.x_t, 1.0), std::domain_error);
      CHECK_THROWS_AS(convert(condot, view, View::score, x0, end.x_t, 1.0), std::domain_error);
    }
    CHECK_THROWS_AS(condot.target_to_epsilon(x1, end.x_t, 1.0), std::domain_error);
    CHECK_THROWS_AS(condot.target_to_velocity(x1, end.x_t, 1.0), std::domain_error);
    CHECK_THROWS_WITH(condot.target_to_epsilon(x1, end.x_t, 1.0),
                      Catch::Contains("target_to_epsilon") && Catch::Contains("sigma_t = 0"));
  }
  SECTION("a zero determinant: Polynomial(2) at t = 0, where u = 0 whatever x1 is") {
    const AffinePath quadratic(flowmatch::Polynomial<>(2));
    CHECK_THROWS_AS(quadratic.velocity_to_target(x0, x0, 0.0), std::domain_error);
    CHECK_THROWS_AS(quadratic.velocity_to_epsilon(x0, x0, 0.0), std::domain_error);
    CHECK_THROWS_WITH(quadratic.velocity_to_epsilon(x0, x0, 0.0),
                      Catch::Contains("velocity_to_epsilon"));
  }
  SECTION("VP at t = 1: conversions needing the singular sigma derivative throw, others work") {
    const AffinePath vp(flowmatch::VP<>{});
    CHECK(max_abs_difference(vp.epsilon_to_target(x0, x1, 1.0), x1) == 0);
    CHECK_THROWS_AS(vp.velocity_to_target(x0, x1, 1.0), std::domain_error);
    CHECK_THROWS_AS(vp.sample(x0, x1, 1.0), std::domain_error);
  }
  SECTION("one bad column among per-column times throws") {
    Vector<double> t = Vector<double>::Constant(4, 0.5);
    t(2) = 1.0;
    CHECK_THROWS_AS(condot.target_to_epsilon(x1, x0, t), std::domain_error);
  }
}

TEST_CASE("bad shapes, non-finite entries and bad times throw", "[path]") {
  const AffinePath path(flowmatch::Cosine<>{});
  const Matrix<double> x = Matrix<double>::Ones(2, 3);
  const Matrix<double> wrong = Matrix<double>::Ones(2, 4);
  const Vector<double> t = Vector<double>::Constant(3, 0.5);
  const Vector<double> short_t = Vector<double>::Constant(2, 0.5);
  Matrix<double> bad = x;
  bad(1, 2) = std::numeric_limits<double>::infinity();

  CHECK_THROWS_AS(path.sample(x, wrong, t), std::invalid_argument);
  CHECK_THROWS_WITH(path.sample(x, wrong, t), Catch::Contains("x1 has shape 2x4"));
  CHECK_THROWS_AS(path.sample(x, x, short_t), std::invalid_argument);
  CHECK_THROWS_WITH(path.sample(x, x, short_t), Catch::Contains("t has shape 2x1"));
  CHECK_THROWS_AS(path.sample(bad, x, t), std::invalid_argument);
  CHECK_THROWS_WITH(path.sample(x, bad, t), Catch::Contains("x1") && Catch::Contains("column 2"));
  CHECK_THROWS_AS(path.sample(x, x, 1.5), std::domain_error);
  CHECK_THROWS_AS(path.sample(x, x, std::nan("")), std::domain_error);

  for (const View from : all_views) {
    for (const View to : all_views) {
      if (from == to) continue;
      INFO(name_of(from) << " -> " << name_of(to));
      CHECK_THROWS_AS(convert(path, from, to, x, wrong, t), std::invalid_argument);
      CHECK_THROWS_AS(convert(path, from, to, x, x, short_t), std::invalid_argument);
      CHECK_THROWS_AS(convert(path, from, to, bad, x, t), std::invalid_argument);
      CHECK_THROWS_AS(convert(path, from, to, x, bad, t), std::invalid_argument);
      CHECK_THROWS_AS(convert(path, from, to, x, x, -0.5), std::domain_error);
    }
  }
  CHECK_THROWS_WITH(path.score_to_target(x, wrong, t),
                    Catch::Contains("score_to_target: x_t has shape 2x4"));
  CHECK_THROWS_WITH(path.velocity_to_score(bad, x, t),
                    Catch::Contains("velocity_to_score: velocity") && Catch::Contains("column 2"));
}

TEST_CASE("the path and the schedule transform work in float", "[path]") {
  const AffinePath path(flowmatch::Cosine<float>{});
  static_assert(std::is_same_v<decltype(path)::scalar_type, float>);
  const Matrix<float> x0 = Matrix<float>::Constant(2, 3, 0.5f);
  const Matrix<float> x1 = Matrix<float>::Constant(2, 3, -1.0f);
  const Vector<float> t = Vector<float>::Constant(3, 0.25f);
  const auto sample = path.sample(x0, x1, t);
  const Matrix<float> target = path.velocity_to_target(sample.dx_t, sample.x_t, t);
  CHECK((target - x1).cwiseAbs().maxCoeff() < 1e-5f);
  const Matrix<float> epsilon =
      path.score_to_epsilon(path.epsilon_to_score(x0, sample.x_t, 0.25f), sample.x_t, 0.25f);
  CHECK((epsilon - x0).cwiseAbs().maxCoeff() < 1e-6f);
  // An array expression of per-column times.
  const Matrix<float> shifted = path.sample(x0, x1, t.array() + 0.5f).x_t;
  CHECK((shifted - path.sample(x0, x1, 0.75f).x_t).cwiseAbs().maxCoeff() == 0);

  // u_t(x) = −x under CondOT becomes ū_r(x) = (ṡ/s − ṫ)·x under Cosine (double reference).
  auto field = [](float, const auto& x) { return Matrix<float>(-x); };
  const auto transformed =
      flowmatch::transform_schedule(field, flowmatch::CondOT<float>{}, flowmatch::Cosine<float>{});
  const auto change = flowmatch::schedule_change(flowmatch::CondOT<>{}, flowmatch::Cosine<>{}, 0.3);
  Matrix<float> velocity(2, 3);
  transformed(0.3f, x0, velocity);
  const double gain = change.d_scale / change.scale - change.d_time;
  CHECK((velocity - Matrix<float>::Constant(2, 3, static_cast<float>(gain * 0.5)))
            .cwiseAbs()
            .maxCoeff() < 1e-6f);
}

namespace {

// The exact marginal velocity of data N(μ, s²I) under a standard-normal source and any affine
// path: x_t ~ N(αμ, (α²s² + σ²)I) and E[x₁ | x_t] gives
//   u_t(x) = α̇μ + k_t·(x − αμ),   k_t = (αα̇s² + σσ̇)/(α²s² + σ²),
// so ∇·u_t = d·k_t and (∂u_t/∂x)·v = k_t·v.
template <class S>
struct GaussianVelocity {
  S scheduler;
  Vector<double> mean;
  double spread;

  double gain(double t) const {
    const auto v = flowmatch::scheduler_values(scheduler, t);
    const double variance = spread * spread;
    return (v.alpha * v.d_alpha * variance + v.sigma * v.d_sigma) /
           (v.alpha * v.alpha * variance + v.sigma * v.sigma);
  }
  void operator()(double t, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    const double alpha = scheduler.alpha(t);
    out = (gain(t) * (x.colwise() - alpha * mean)).colwise() + scheduler.d_alpha(t) * mean;
  }
  void divergence(double t, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::VectorRef<double> out) const {
    out.setConstant(static_cast<double>(x.rows()) * gain(t));
  }
  void jvp(double t, const flowmatch::ConstMatrixRef<double>&,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    out = gain(t) * tangent;
  }
};

template <class S>
GaussianVelocity<S> gaussian_velocity(S scheduler) {
  Vector<double> mean(3);
  mean << 1.5, -0.5, 2.0;
  return {scheduler, mean, 0.7};
}

// Checks the field of `from` transformed to `to` against the exact field of `to` at the given
// times. Both sides are a handful of well-conditioned operations on O(1) numbers, so they agree
// to rounding: 1e-10 relative to the size of the velocity.
template <class From, class To>
void check_transform(const From& from, const To& to, const std::vector<double>& times,
                     std::mt19937_64& generator) {
  const auto transformed = flowmatch::transform_schedule(gaussian_velocity(from), from, to);
  const auto exact = gaussian_velocity(to);
  const Matrix<double> x = 2 * normal_matrix(generator, 3, 6);
  const Matrix<double> tangent = normal_matrix(generator, 3, 6);
  for (const double r : times) {
    INFO("r = " << r);
    Matrix<double> velocity(3, 6), expected(3, 6), jvp(3, 6), expected_jvp(3, 6);
    transformed(r, x, velocity);
    exact(r, x, expected);
    const double scale = std::max(1.0, expected.cwiseAbs().maxCoeff());
    CHECK(max_abs_difference(velocity, expected) < 1e-10 * scale);

    Vector<double> divergence(6), expected_divergence(6);
    transformed.divergence(r, x, divergence);
    exact.divergence(r, x, expected_divergence);
    CHECK(max_abs_difference(divergence, expected_divergence) <
          1e-10 * std::max(1.0, expected_divergence.cwiseAbs().maxCoeff()));

    transformed.jvp(r, x, tangent, jvp);
    exact.jvp(r, x, tangent, expected_jvp);
    CHECK(max_abs_difference(jvp, expected_jvp) <
          1e-10 * std::max(1.0, expected_jvp.cwiseAbs().maxCoeff()));
  }
}

std::vector<double> interior_times(std::mt19937_64& generator) {
  const Vector<double> random = uniform_times(generator, 20, 0, 1);
  return {random.begin(), random.end()};
}

}  // namespace

TEST_CASE("schedule transform: CondOT to Cosine, LinearVP, Polynomial(2) and VP", "[transform]") {
  std::mt19937_64 generator(7);
  const flowmatch::CondOT<> condot;
  auto times = interior_times(generator);
  times.insert(times.end(), {0.0, 1 - 1e-6, 1 - 1e-9});
  SECTION("Cosine") {
    times.push_back(1.0);
    check_transform(condot, flowmatch::Cosine<>{}, times, generator);
  }
  SECTION("Polynomial(2)") {
    times.push_back(1.0);
    check_transform(condot, flowmatch::Polynomial<>(2), times, generator);
  }
  SECTION("LinearVP (dσ/dr is infinite at r = 1)") {
    check_transform(condot, flowmatch::LinearVP<>{}, times, generator);
  }
  SECTION("VP (dσ/dr is infinite at r = 1)") {
    check_transform(condot, flowmatch::VP<>{}, times, generator);
  }
}

TEST_CASE("schedule transform: Cosine and Polynomial(0.5) to CondOT", "[transform]") {
  std::mt19937_64 generator(8);
  auto times = interior_times(generator);
  times.insert(times.end(), {0.0, 1.0, 1 - 1e-9});
  check_transform(flowmatch::Cosine<>{}, flowmatch::CondOT<>{}, times, generator);
  // Polynomial(0.5) has α̇ infinite at t = 0, where its field u_0 = α̇μ + … is itself infinite.
  times.erase(std::find(times.begin(), times.end(), 0.0));
  check_transform(flowmatch::Polynomial<>(0.5), flowmatch::CondOT<>{}, times, generator);
  CHECK_THROWS_AS(
      flowmatch::schedule_change(flowmatch::Polynomial<>(0.5), flowmatch::CondOT<>{}, 0.0),
      std::domain_error);
}

TEST_CASE("schedule_change: CondOT to Cosine in closed form", "[transform]") {
  // ρ̄ = tan(πr/2) gives t_r = sin/(sin + cos), s_r = cos/(1 − t_r) = sin + cos,
  // ṫ_r = (π/2)/(sin + cos)², ṡ_r = (π/2)(cos − sin), with sin, cos of πr/2.
  const double half_pi = std::numbers::pi / 2;
  for (const double r : {0.0, 0.1, 0.35, 0.5, 0.8, 0.999, 1.0}) {
    INFO("r = " << r);
    const double sin = std::sin(half_pi * r);
    const double cos = std::cos(half_pi * r);
    const auto change = flowmatch::schedule_change(flowmatch::CondOT<>{}, flowmatch::Cosine<>{}, r);
    CHECK_THAT(change.time, WithinAbs(sin / (sin + cos), 1e-15));
    CHECK_THAT(change.scale, WithinAbs(sin + cos, 1e-15));
    CHECK_THAT(change.d_time, WithinAbs(half_pi / ((sin + cos) * (sin + cos)), 1e-14));
    CHECK_THAT(change.d_scale, WithinAbs(half_pi * (cos - sin), 1e-14));
  }
}

TEST_CASE("schedule transform: singular points and bad arguments throw", "[transform]") {
  const flowmatch::CondOT<> condot;
  const auto field = gaussian_velocity(condot);
  const Matrix<double> x = Matrix<double>::Ones(3, 2);
  Matrix<double> out(3, 2);
  // VP cannot reach ρ = 0, CondOT's ρ at r = 0.
  const flowmatch::VP<> vp;
  const auto from_vp = flowmatch::transform_schedule(gaussian_velocity(vp), vp, condot);
  CHECK_THROWS_AS(from_vp(0.0, x, out), std::domain_error);
  CHECK_THROWS_WITH(from_vp(0.0, x, out), Catch::Contains("rho(0)"));
  CHECK_NOTHROW(from_vp(0.5, x, out));
  // Polynomial(2) has γ'(0) = 0: t_r ~ sqrt(r), dt/dr infinite at r = 0.
  const flowmatch::Polynomial<> quadratic(2);
  const auto from_quadratic =
      flowmatch::transform_schedule(gaussian_velocity(quadratic), quadratic, condot);
  CHECK_THROWS_AS(from_quadratic(0.0, x, out), std::domain_error);
  CHECK_THROWS_WITH(from_quadratic(0.0, x, out), Catch::Contains("dt/dr"));
  // LinearVP's σ̇ is infinite at r = 1.
  const auto to_linear_vp = flowmatch::transform_schedule(field, condot, flowmatch::LinearVP<>{});
  CHECK_THROWS_AS(to_linear_vp(1.0, x, out), std::domain_error);

  const auto to_cosine = flowmatch::transform_schedule(field, condot, flowmatch::Cosine<>{});
  CHECK_THROWS_AS(to_cosine(1.5, x, out), std::domain_error);
  CHECK_THROWS_AS(to_cosine(std::nan(""), x, out), std::domain_error);
  Matrix<double> wrong(3, 3);
  CHECK_THROWS_AS(to_cosine(0.5, x, wrong), std::invalid_argument);
  // Values are checked once, where a batch enters the library, not at every evaluation of the
  // adapter: the integrator rejects a non-finite initial state, naming its sample.
  Matrix<double> bad = x;
  bad(0, 1) = std::nan("");
  CHECK_THROWS_AS(flowmatch::sample(to_cosine, bad), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::sample(to_cosine, bad),
                    Catch::Contains("initial state has a non-finite entry in column 1"));
  Vector<double> short_divergence(1);
  CHECK_THROWS_AS(to_cosine.divergence(0.5, x, short_divergence), std::invalid_argument);
  CHECK_THROWS_AS(to_cosine.jvp(0.5, x, wrong, out), std::invalid_argument);
}

TEST_CASE("schedule transform: a returning lambda field, in-place use and capabilities",
          "[transform]") {
  // u_t(x) = −x under CondOT, written as a returning lambda (no divergence, no jvp).
  auto field = [](double, const auto& x) { return Matrix<double>(-x); };
  const auto transformed =
      flowmatch::transform_schedule(field, flowmatch::CondOT<>{}, flowmatch::Cosine<>{});
  static_assert(flowmatch::InPlaceVelocityField<decltype(transformed), double>);
  static_assert(!flowmatch::HasDivergence<decltype(transformed), double>);
  static_assert(!flowmatch::HasJvp<decltype(transformed), double>);
  const auto exact = flowmatch::transform_schedule(gaussian_velocity(flowmatch::CondOT<>{}),
                                                   flowmatch::CondOT<>{}, flowmatch::Cosine<>{});
  static_assert(flowmatch::HasDivergence<decltype(exact), double>);
  static_assert(flowmatch::HasJvp<decltype(exact), double>);

  // ū_r(x) = (ṡ/s)x + ṫ·s·(−x/s) = (ṡ/s − ṫ)x, and out may be x itself.
  const double r = 0.3;
  const auto change = flowmatch::schedule_change(flowmatch::CondOT<>{}, flowmatch::Cosine<>{}, r);
  Matrix<double> x = Matrix<double>::Ones(2, 3);
  const Matrix<double> expected = (change.d_scale / change.scale - change.d_time) * x;
  transformed(r, x, x);
  CHECK(max_abs_difference(x, expected) < 1e-15);
}

TEST_CASE("sampling a transformed field reaches the same endpoints as the original",
          "[transform][sampling]") {
  // A two-component mixture whose exact CondOT velocity is known in closed form; the flow maps
  // each noise point to a data point, and a change of schedule must keep that coupling.
  flowmatch::Matrix<double> means(2, 2);
  means << 1.5, -1.0, 0.5, -1.5;
  flowmatch::Matrix<double> variances(2, 2);
  variances << 0.3, 0.5, 0.2, 0.4;
  const auto data = flowmatch::GaussianMixture<double>::with_diagonal_covariances(
      flowmatch::Vector<double>::Constant(2, 0.5), means, variances);
  const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> condot_field(data);
  const flowmatch::GaussianMixturePath<flowmatch::Cosine<double>> cosine_field(data);
  const auto transformed = flowmatch::transform_schedule(condot_field, flowmatch::CondOT<double>{},
                                                         flowmatch::Cosine<double>{});

  std::mt19937_64 generator(11);
  std::normal_distribution<double> normal;
  flowmatch::Matrix<double> noise(2, 32);
  for (flowmatch::Index i = 0; i < noise.size(); ++i) noise.data()[i] = normal(generator);
  flowmatch::SolverOptions<double> options;
  options.rtol = options.atol = 1e-10;
  const flowmatch::Matrix<double> original = flowmatch::sample(condot_field, noise, options).state;
  const flowmatch::Matrix<double> through_transform =
      flowmatch::sample(transformed, noise, options).state;
  // The transformed field is the exact Cosine-path velocity, so both reach the same points.
  const flowmatch::Matrix<double> through_cosine =
      flowmatch::sample(cosine_field, noise, options).state;
  CHECK((through_transform - original).cwiseAbs().maxCoeff() < 1e-7);
  CHECK((through_cosine - original).cwiseAbs().maxCoeff() < 1e-7);
  // The paths differ on the way: halfway, the two flows are at different places.
  const std::vector<double> half{0.0, 0.5};
  const flowmatch::Matrix<double> original_half =
      flowmatch::integrate(condot_field, noise, std::span<const double>(half), options).state;
  const flowmatch::Matrix<double> transformed_half =
      flowmatch::integrate(transformed, noise, std::span<const double>(half), options).state;
  CHECK((original_half - transformed_half).cwiseAbs().maxCoeff() > 1e-2);
}

TEST_CASE("sample_transformed equals sampling the original field, also for VP targets",
          "[transform][sampling]") {
  // The exact CondOT velocity of a two-component mixture. Under a scheduler "to" the noise x̄_0
  // is s_0·x_{t_0} of the original flow, t_0 = ρ̄(0)/(1 + ρ̄(0)) (CondOT: ρ = t/(1 − t)),
  // s_0 = σ̄_0/(1 − t_0); both ends of the CondOT path are reached, and x̄_1 = x_1.
  Matrix<double> means(2, 2);
  means << 1.5, -1.0, 0.5, -1.5;
  Matrix<double> variances(2, 2);
  variances << 0.3, 0.5, 0.2, 0.4;
  const auto data = flowmatch::GaussianMixture<double>::with_diagonal_covariances(
      Vector<double>::Constant(2, 0.5), means, variances);
  const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> field(data);
  const flowmatch::CondOT<double> from;

  std::mt19937_64 generator(23);
  std::normal_distribution<double> normal;
  Matrix<double> noise(2, 16);
  for (double& value : noise.reshaped()) value = normal(generator);
  flowmatch::SolverOptions<double> options;
  options.rtol = options.atol = 1e-10;

  const auto check = [&](const auto& to) {
    const double snr = to.alpha(0.0) / to.sigma(0.0);
    const double start = snr / (1 + snr);
    const double scale = to.sigma(0.0) / (1 - start);
    const std::vector<double> original_grid{start, 1.0};
    const Matrix<double> original =
        flowmatch::integrate(field, noise / scale, std::span<const double>(original_grid), options)
            .state;
    const auto result = flowmatch::sample_transformed(field, from, to, noise, options);
    CHECK((result.state - original).cwiseAbs().maxCoeff() < 1e-7);
    CHECK(result.stats.nfe > 0);

    // Through a grid: the states at the grid times are those of the transformed field itself.
    options.return_trajectory = true;
    const std::vector<double> grid{0.0, 0.5, 1.0};
    const auto through_grid = flowmatch::sample_transformed(field, from, to, noise,
                                                            std::span<const double>(grid), options);
    const auto listed =
        flowmatch::sample_transformed(field, from, to, noise, {0.0, 0.5, 1.0}, options);
    CHECK(listed.trajectory == through_grid.trajectory);
    CHECK(listed.state == through_grid.state);
    options.return_trajectory = false;
    REQUIRE(through_grid.trajectory.size() == 3);
    CHECK(through_grid.trajectory[0] == noise);
    const std::vector<double> half{0.0, 0.5};
    const Matrix<double> transformed_half =
        flowmatch::integrate(flowmatch::transform_schedule(field, from, to), noise,
                             std::span<const double>(half), options)
            .state;
    CHECK((through_grid.trajectory[1] - transformed_half).cwiseAbs().maxCoeff() < 1e-7);
    CHECK(through_grid.trajectory[2] == through_grid.state);
    CHECK((through_grid.state - original).cwiseAbs().maxCoeff() < 1e-7);
  };
  SECTION("vp") {
    check(flowmatch::VP<double>{});
  }
  SECTION("linear-vp") {
    check(flowmatch::LinearVP<double>{});
  }
  SECTION("cosine") {
    check(flowmatch::Cosine<double>{});
  }
  SECTION("polynomial") {
    check(flowmatch::Polynomial<double>(3.0));
  }
  SECTION("the transformed VP field itself cannot be evaluated at r = 1") {
    const auto transformed = flowmatch::transform_schedule(field, from, flowmatch::VP<double>{});
    CHECK_THROWS_AS(flowmatch::sample(transformed, noise, options), std::domain_error);
  }
  SECTION("bad grids and gaps throw") {
    const std::vector<double> backwards{1.0, 0.0};
    CHECK_THROWS_AS(flowmatch::sample_transformed(field, from, flowmatch::VP<double>{}, noise,
                                                  std::span<const double>(backwards), options),
                    std::invalid_argument);
    const std::vector<double> grid{0.0, 1.0};
    CHECK_THROWS_AS(flowmatch::sample_transformed(field, from, flowmatch::VP<double>{}, noise,
                                                  std::span<const double>(grid), options, 0.0),
                    std::invalid_argument);
  }
}

}  // namespace test_path
