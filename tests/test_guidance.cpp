// Tests of classifier-free guidance against a class-conditional Gaussian-mixture oracle: the
// field of class k is the exact velocity of component k's path, the null field is the exact
// velocity of the whole mixture.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/score/exact_score.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace test_guidance {

namespace {

using flowmatch::ConstMatrixRef;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Vector;
using Path = flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>;
using Catch::Matchers::WithinAbs;

// Two classes in the plane, at (±2, 0.5), with different full covariances.
std::vector<Matrix<double>> class_covariances() {
  Matrix<double> first(2, 2), second(2, 2);
  first << 0.30, 0.10, 0.10, 0.20;
  second << 0.25, -0.05, -0.05, 0.40;
  return {first, second};
}

Matrix<double> class_means() {
  Matrix<double> means(2, 2);
  means << 2.0, -2.0, 0.5, 0.5;
  return means;
}

flowmatch::GaussianMixture<double> class_distribution(Index k) {
  return flowmatch::GaussianMixture<double>::with_covariances(
      Vector<double>::Ones(1), class_means().col(k), {class_covariances()[k]});
}

// u_t(x | c): c is a one-hot column over the two classes, or all zeros for the null condition.
class ClassConditionalOracle {
 public:
  ClassConditionalOracle()
      : mixture_(flowmatch::GaussianMixture<double>::with_covariances(
            Vector<double>::Constant(2, 0.5), class_means(), class_covariances())),
        classes_{Path(class_distribution(0)), Path(class_distribution(1))} {}

  void operator()(double t, const ConstMatrixRef<double>& x, const ConstMatrixRef<double>& c,
                  MatrixRef<double> out) const {
    ++calls_;
    evaluated_columns_ += x.cols();
    const Matrix<double> null_velocity = flowmatch::evaluate_velocity<double>(mixture_, t, x);
    const std::array<Matrix<double>, 2> class_velocity{
        flowmatch::evaluate_velocity<double>(classes_[0], t, x),
        flowmatch::evaluate_velocity<double>(classes_[1], t, x)};
    for (Index col = 0; col < x.cols(); ++col) {
      if (c(0, col) == 1.0) {
        out.col(col) = class_velocity[0].col(col);
      } else if (c(1, col) == 1.0) {
        out.col(col) = class_velocity[1].col(col);
      } else {
        out.col(col) = null_velocity.col(col);
      }
    }
  }

  // ∇·u_t(x | c), selected per column like the velocity.
  void divergence(double t, const ConstMatrixRef<double>& x, const ConstMatrixRef<double>& c,
                  flowmatch::VectorRef<double> out) const {
    Vector<double> null_divergence(x.cols());
    mixture_.divergence(t, x, null_divergence);
    std::array<Vector<double>, 2> class_divergence{Vector<double>(x.cols()),
                                                   Vector<double>(x.cols())};
    classes_[0].divergence(t, x, class_divergence[0]);
    classes_[1].divergence(t, x, class_divergence[1]);
    for (Index col = 0; col < x.cols(); ++col) {
      out(col) = c(0, col) == 1.0   ? class_divergence[0](col)
                 : c(1, col) == 1.0 ? class_divergence[1](col)
                                    : null_divergence(col);
    }
  }

  const Path& mixture() const { return mixture_; }
  const Path& component(Index k) const { return classes_[static_cast<std::size_t>(k)]; }
  Index calls() const { return calls_; }
  Index evaluated_columns() const { return evaluated_columns_; }

 private:
  Path mixture_;
  std::array<Path, 2> classes_;
  mutable Index calls_ = 0;
  mutable Index evaluated_columns_ = 0;
};

Matrix<double> one_hot(const std::vector<int>& labels) {
  Matrix<double> c = Matrix<double>::Zero(2, static_cast<Index>(labels.size()));
  for (std::size_t i = 0; i < labels.size(); ++i) c(labels[i], static_cast<Index>(i)) = 1.0;
  return c;
}

Matrix<double> standard_normal(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  return flowmatch::StandardNormal::sample(rows, cols, generator);
}

flowmatch::SolverOptions<double> rk4_steps(double step) {
  flowmatch::SolverOptions<double> options;
  options.method = flowmatch::Method::rk4;
  options.step_size = step;
  return options;
}

}  // namespace

TEST_CASE("w = 1 gives the conditional field and w = 0 the unconditional one", "[guidance]") {
  const ClassConditionalOracle oracle;
  const std::vector<int> labels{0, 1, 1, 0, 1};
  const Matrix<double> x = standard_normal(2, 5, 1);
  for (double t : {0.0, 0.3, 0.8, 1.0}) {
    auto conditional =
        flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels), 1.0);
    auto unconditional =
        flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels), 0.0);
    const Matrix<double> guided_one = flowmatch::evaluate_velocity<double>(conditional, t, x);
    const Matrix<double> guided_zero = flowmatch::evaluate_velocity<double>(unconditional, t, x);
    const Matrix<double> null = flowmatch::evaluate_velocity<double>(oracle.mixture(), t, x);
    for (Index col = 0; col < 5; ++col) {
      const Matrix<double> own =
          flowmatch::evaluate_velocity<double>(oracle.component(labels[col]), t, x.col(col));
      CHECK((guided_one.col(col) - own).cwiseAbs().maxCoeff() <= 1e-15);
    }
    CHECK((guided_zero - null).cwiseAbs().maxCoeff() <= 1e-15);
  }
}

TEST_CASE("guidance and evaluation deduce their scalar type from Eigen expressions", "[guidance]") {
  const ClassConditionalOracle oracle;
  const std::vector<int> labels{0, 1, 1, 0};
  const Matrix<double> x = standard_normal(2, 4, 3);
  const Matrix<double> condition = one_hot(labels);
  // Expressions, not matrices: no explicit template argument is needed.
  auto by_expression = flowmatch::classifier_free_guidance(std::cref(oracle), 1.0 * condition,
                                                           Vector<double>::Constant(4, 2.0));
  auto by_matrix = flowmatch::classifier_free_guidance(std::cref(oracle), condition, 2.0);
  Matrix<double> from_expression(2, 4);
  Matrix<double> from_matrix(2, 4);
  flowmatch::evaluate_velocity(by_expression, 0.3, x, from_expression);
  flowmatch::evaluate_velocity(by_matrix, 0.3, x, from_matrix);
  CHECK(from_expression == from_matrix);
  // u = 2 u_cond − u_null, from the oracle's own fields.
  Matrix<double> conditional(2, 4);
  oracle(0.3, x, condition, conditional);
  const Matrix<double> null = flowmatch::evaluate_velocity(oracle.mixture(), 0.3, x);
  CHECK((from_matrix - (2.0 * conditional - null)).cwiseAbs().maxCoeff() < 1e-14);
}

TEST_CASE("guided velocity follows (1 - w) u_null + w u_cond and the scale convention",
          "[guidance]") {
  const ClassConditionalOracle oracle;
  const std::vector<int> labels{0, 1, 0, 1};
  const Matrix<double> x = standard_normal(2, 4, 2);
  Vector<double> weights(4);
  weights << 0.0, 1.0, 2.5, -0.5;
  const double t = 0.45;
  auto guided =
      flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels), weights);
  const Matrix<double> velocity = flowmatch::evaluate_velocity<double>(guided, t, x);

  Matrix<double> conditional(2, 4);
  oracle(t, x, one_hot(labels), conditional);
  const Matrix<double> null = flowmatch::evaluate_velocity<double>(oracle.mixture(), t, x);
  for (Index col = 0; col < 4; ++col) {
    const Vector<double> expected =
        (1.0 - weights(col)) * null.col(col) + weights(col) * conditional.col(col);
    CHECK((velocity.col(col) - expected).cwiseAbs().maxCoeff() <= 1e-13);
  }

  flowmatch::GuidanceOptions<double> scale_options;
  scale_options.convention = flowmatch::GuidanceConvention::scale;
  const Vector<double> scales = weights.array() - 1.0;
  auto scaled = flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels),
                                                            scales, scale_options);
  CHECK((flowmatch::evaluate_velocity<double>(scaled, t, x) - velocity).cwiseAbs().maxCoeff() <=
        1e-15);
}

TEST_CASE("stacked and separate evaluation agree, and w = 1 skips the null evaluation",
          "[guidance]") {
  const std::vector<int> labels{1, 0, 0, 1, 1, 0};
  const Matrix<double> x = standard_normal(2, 6, 3);
  Vector<double> weights(6);
  weights << 1.0, 3.0, 1.0, 0.5, 1.0, 2.0;

  const ClassConditionalOracle stacked_oracle;
  auto stacked = flowmatch::classifier_free_guidance<double>(std::cref(stacked_oracle),
                                                             one_hot(labels), weights);
  const Matrix<double> stacked_velocity = flowmatch::evaluate_velocity<double>(stacked, 0.6, x);
  CHECK(stacked_oracle.calls() == 1);
  // Six conditional columns and three null columns (the samples with w != 1).
  CHECK(stacked_oracle.evaluated_columns() == 9);

  const ClassConditionalOracle separate_oracle;
  flowmatch::GuidanceOptions<double> options;
  options.evaluation = flowmatch::GuidanceEvaluation::separate;
  auto separate = flowmatch::classifier_free_guidance<double>(std::cref(separate_oracle),
                                                              one_hot(labels), weights, options);
  const Matrix<double> separate_velocity = flowmatch::evaluate_velocity<double>(separate, 0.6, x);
  CHECK(separate_oracle.calls() == 2);
  CHECK((stacked_velocity - separate_velocity).cwiseAbs().maxCoeff() <= 1e-14);

  const ClassConditionalOracle conditional_oracle;
  auto conditional = flowmatch::classifier_free_guidance<double>(std::cref(conditional_oracle),
                                                                 one_hot(labels), 1.0);
  flowmatch::evaluate_velocity<double>(conditional, 0.6, x);
  CHECK(conditional_oracle.evaluated_columns() == 6);
}

TEST_CASE("several condition sets combine as u_null + sum_i w_i (u_ci - u_null)", "[guidance]") {
  const ClassConditionalOracle oracle;
  const Matrix<double> x = standard_normal(2, 3, 4);
  const Matrix<double> first = one_hot({0, 0, 1});
  const Matrix<double> second = one_hot({1, 1, 1});
  Vector<double> first_weights(3), second_weights(3);
  first_weights << 0.5, 2.0, 1.0;
  second_weights << 0.25, -1.0, 0.0;
  flowmatch::GuidedField<double, decltype(std::cref(oracle))> guided(std::cref(oracle), 2);
  guided.add_condition(first, first_weights);
  guided.add_condition(second, second_weights);
  const double t = 0.7;
  const Matrix<double> velocity = flowmatch::evaluate_velocity<double>(guided, t, x);

  Matrix<double> first_velocity(2, 3), second_velocity(2, 3);
  oracle(t, x, first, first_velocity);
  oracle(t, x, second, second_velocity);
  const Matrix<double> null = flowmatch::evaluate_velocity<double>(oracle.mixture(), t, x);
  for (Index col = 0; col < 3; ++col) {
    const Vector<double> expected =
        null.col(col) + first_weights(col) * (first_velocity.col(col) - null.col(col)) +
        second_weights(col) * (second_velocity.col(col) - null.col(col));
    CHECK((velocity.col(col) - expected).cwiseAbs().maxCoeff() <= 1e-13);
  }
}

TEST_CASE("sampling with w = 1 reproduces each class distribution", "[guidance][sampling]") {
  const ClassConditionalOracle oracle;
  const Index per_class = 4000;
  std::vector<int> labels(2 * per_class);
  for (Index i = 0; i < 2 * per_class; ++i) labels[static_cast<std::size_t>(i)] = i % 2;
  auto guided =
      flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels), 1.0);
  flowmatch::SolverOptions<double> options;
  options.rtol = options.atol = 1e-7;
  const Matrix<double> x0 = standard_normal(2, 2 * per_class, 5);
  const Matrix<double> samples = flowmatch::sample(guided, x0, options).state;

  for (Index k = 0; k < 2; ++k) {
    Matrix<double> own(2, per_class);
    for (Index i = 0; i < per_class; ++i) own.col(i) = samples.col(2 * i + k);
    const Vector<double> mean = own.rowwise().mean();
    const Matrix<double> centred = own.colwise() - mean;
    const Matrix<double> covariance = centred * centred.transpose() / double(per_class - 1);
    const Matrix<double> exact = class_covariances()[static_cast<std::size_t>(k)];
    // Four standard errors: sqrt(Σ_ii/n) for the mean, sqrt((Σ_ii Σ_jj + Σ_ij²)/n) for Σ_ij.
    for (Index i = 0; i < 2; ++i) {
      CHECK_THAT(mean(i), WithinAbs(class_means()(i, k), 4.0 * std::sqrt(exact(i, i) / per_class)));
      for (Index j = 0; j < 2; ++j) {
        const double standard_error =
            std::sqrt((exact(i, i) * exact(j, j) + exact(i, j) * exact(i, j)) / per_class);
        CHECK_THAT(covariance(i, j), WithinAbs(exact(i, j), 4.0 * standard_error));
      }
    }
  }
}

TEST_CASE("a larger weight moves class samples further from the other class",
          "[guidance][sampling]") {
  const ClassConditionalOracle oracle;
  const Index n = 2000;
  const Matrix<double> x0 = standard_normal(2, n, 6);
  const Vector<double> away = class_means().col(0) - class_means().col(1);
  double previous = -std::numeric_limits<double>::infinity();
  for (double weight : {0.0, 1.0, 2.0, 3.0, 4.0}) {
    auto guided = flowmatch::classifier_free_guidance<double>(
        std::cref(oracle), one_hot(std::vector<int>(n, 0)), weight);
    const Matrix<double> samples = flowmatch::sample(guided, x0, rk4_steps(0.02)).state;
    const double progress = away.dot(samples.rowwise().mean());
    CHECK(progress > previous);
    previous = progress;
  }
}

TEST_CASE("per-sample weights equal separate runs per weight", "[guidance][sampling]") {
  const ClassConditionalOracle oracle;
  const std::vector<int> labels{0, 1, 0, 1};
  const Matrix<double> x0 = standard_normal(2, 4, 7);
  Vector<double> weights(4);
  weights << 0.0, 1.5, 3.0, 1.0;
  auto mixed =
      flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels), weights);
  const Matrix<double> together = flowmatch::sample(mixed, x0, rk4_steps(0.05)).state;
  for (Index col = 0; col < 4; ++col) {
    auto single = flowmatch::classifier_free_guidance<double>(
        std::cref(oracle), one_hot({labels[static_cast<std::size_t>(col)]}), weights(col));
    const Matrix<double> alone =
        flowmatch::sample(single, Matrix<double>(x0.col(col)), rk4_steps(0.05)).state;
    CHECK((alone - together.col(col)).cwiseAbs().maxCoeff() <= 1e-12);
  }
}

TEST_CASE("a guidance interval equals switching fields at the interval's ends",
          "[guidance][sampling]") {
  const ClassConditionalOracle oracle;
  const Matrix<double> labels = one_hot({0, 1, 1, 0});
  const Matrix<double> x0 = standard_normal(2, 4, 8);
  const double begin = 0.25, end = 0.625, weight = 2.5;
  const std::vector<double> grid{0.0, begin, end, 1.0};
  // Methods whose stages never fall on the end of a step see each piece's own field.
  for (const flowmatch::Method method :
       {flowmatch::Method::euler, flowmatch::Method::midpoint, flowmatch::Method::heun3}) {
    auto options = rk4_steps(0.05);
    options.method = method;
    auto scheduled = flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, weight);
    scheduled.set_schedule(flowmatch::guidance_interval(begin, end));
    const Matrix<double> with_schedule =
        flowmatch::integrate(scheduled, x0, std::span<const double>(grid), options).state;

    auto conditional = flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, 1.0);
    auto guided = flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, weight);
    const std::vector<double> first{0.0, begin}, middle{begin, end}, last{end, 1.0};
    Matrix<double> state =
        flowmatch::integrate(conditional, x0, std::span<const double>(first), options).state;
    state = flowmatch::integrate(guided, state, std::span<const double>(middle), options).state;
    state = flowmatch::integrate(conditional, state, std::span<const double>(last), options).state;
    CHECK((state - with_schedule).cwiseAbs().maxCoeff() <= 1e-13);
    // Guidance inside the interval changed the result.
    const Matrix<double> unguided =
        flowmatch::integrate(conditional, x0, std::span<const double>(grid), options).state;
    CHECK((unguided - with_schedule).cwiseAbs().maxCoeff() > 1e-3);
  }
}

TEST_CASE("the divergence of a guided field combines the conditional divergences",
          "[guidance][likelihood]") {
  const ClassConditionalOracle oracle;
  const std::vector<int> labels{0, 1, 1};
  const Matrix<double> x = standard_normal(2, 3, 10);
  Vector<double> weights(3);
  weights << 0.0, 1.0, 3.0;
  auto guided =
      flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot(labels), weights);
  static_assert(flowmatch::HasDivergence<decltype(guided), double>);
  // Against the trace of the Jacobian of the guided velocity, by central differences.
  const double t = 0.4, step = 1e-5;
  Vector<double> divergence(3);
  guided.divergence(t, x, divergence);
  for (Index col = 0; col < 3; ++col) {
    double trace = 0.0;
    for (Index row = 0; row < 2; ++row) {
      Matrix<double> forward = x, backward = x;
      forward(row, col) += step;
      backward(row, col) -= step;
      trace += (flowmatch::evaluate_velocity<double>(guided, t, forward)(row, col) -
                flowmatch::evaluate_velocity<double>(guided, t, backward)(row, col)) /
               (2 * step);
    }
    CHECK_THAT(divergence(col), WithinAbs(trace, 1e-7));
  }
}

TEST_CASE("the log-likelihood of a guided field with w = 1 is that of the class",
          "[guidance][likelihood]") {
  const ClassConditionalOracle oracle;
  std::mt19937_64 generator(12);
  for (Index k = 0; k < 2; ++k) {
    const Matrix<double> points = class_distribution(k).sample(8, generator);
    auto guided = flowmatch::classifier_free_guidance<double>(
        std::cref(oracle), one_hot(std::vector<int>(8, static_cast<int>(k))), 1.0);
    flowmatch::SolverOptions<double> options;
    options.rtol = options.atol = 1e-10;
    const auto result = flowmatch::log_likelihood(guided, points, options);
    const Vector<double> exact = class_distribution(k).log_prob(points);
    CHECK((result.log_prob - exact).cwiseAbs().maxCoeff() < 1e-6);
  }
}

// Class-conditional Gaussians N(μ_c, v·I) in the plane under CondOT, with μ_c = M c (M's columns
// the class means; the null condition c = 0 gives N(0, v·I)): p_t(x | c) = N(t μ_c, C_t I) with
// C_t = t² v + (1 − t)², and u_t(x | c) = μ_c + a_t (x − t μ_c), a_t = (t v − (1 − t)) / C_t.
// Written once over its scalar type, so forward mode can differentiate it.
constexpr double class_variance = 0.3;

struct GaussianClasses {
  template <class T, class X, class C>
  Matrix<T> operator()(T t, const X& x, const C& c) const {
    Matrix<T> means(2, 2);
    means << T(2.0), T(-2.0), T(0.5), T(0.5);
    const Matrix<T> mean = means * c.template cast<T>();
    const T spread = t * t * T(class_variance) + (T(1) - t) * (T(1) - t);
    const T gain = (t * T(class_variance) - (T(1) - t)) / spread;
    return mean + gain * (x - t * mean);
  }
};

// The same field in double with its divergence by hand: ∇·u = d·a_t.
struct GaussianClassesWithDivergence {
  Matrix<double> operator()(double t, const ConstMatrixRef<double>& x,
                            const ConstMatrixRef<double>& c) const {
    return GaussianClasses{}(t, x, c);
  }
  void divergence(double t, const ConstMatrixRef<double>& /*x*/,
                  const ConstMatrixRef<double>& /*c*/, flowmatch::VectorRef<double> out) const {
    const double spread = t * t * class_variance + (1 - t) * (1 - t);
    out.setConstant(2 * (t * class_variance - (1 - t)) / spread);
  }
};

TEST_CASE("a guided generic field gets its derivatives by forward mode", "[guidance][likelihood]") {
  const Matrix<double> labels = one_hot({0, 1, 1, 0, 1});
  Vector<double> weights(5);
  weights << 1.0, 1.0, 2.5, 0.0, 1.5;
  const auto generic = flowmatch::classifier_free_guidance(GaussianClasses{}, labels, weights);
  static_assert(flowmatch::HasDivergence<decltype(generic), double>);
  static_assert(flowmatch::HasVjp<decltype(generic), double>);
  static_assert(flowmatch::HasDivergenceGradient<decltype(generic), double>);
  const Matrix<double> x = standard_normal(2, 5, 21);

  SECTION("its log-likelihood is that of the same field with a hand-written divergence") {
    const auto by_hand =
        flowmatch::classifier_free_guidance(GaussianClassesWithDivergence{}, labels, weights);
    const auto options = rk4_steps(0.01);
    const auto forward_mode = flowmatch::log_likelihood(generic, x, options);
    const auto member = flowmatch::log_likelihood(by_hand, x, options);
    CHECK((forward_mode.log_prob - member.log_prob).cwiseAbs().maxCoeff() < 1e-12);
  }
  SECTION("with w = 1 its log-likelihood and exact score are those of the class") {
    // p_1(x | k) = N(μ_k, v·I): log p = −|x − μ_k|²/(2v) − log(2π v), score −(x − μ_k)/v.
    const Matrix<double> class_labels = one_hot({0, 1, 1, 0, 1});
    const auto conditional = flowmatch::classifier_free_guidance(GaussianClasses{}, class_labels,
                                                                 Vector<double>::Ones(5));
    Matrix<double> means(2, 2);
    means << 2.0, -2.0, 0.5, 0.5;
    const Matrix<double> centred = x - means * class_labels;
    const Vector<double> exact_log_prob =
        -centred.colwise().squaredNorm().transpose() / (2 * class_variance) -
        Vector<double>::Constant(5, std::log(2 * std::numbers::pi * class_variance));
    const auto likelihood = flowmatch::log_likelihood(conditional, x);
    CHECK((likelihood.log_prob - exact_log_prob).cwiseAbs().maxCoeff() < 1e-5);
    const auto score = flowmatch::exact_score(conditional, 1.0, x);
    CHECK((score.score + centred / class_variance).cwiseAbs().maxCoeff() < 1e-4);
  }
}

TEST_CASE("conditions can change without rebuilding the wrapper", "[guidance]") {
  const ClassConditionalOracle oracle;
  const Matrix<double> x = standard_normal(2, 3, 9);
  auto guided =
      flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot({0, 0, 0}), 2.0);
  guided.set_condition(0, one_hot({1, 1, 1}));
  auto rebuilt =
      flowmatch::classifier_free_guidance<double>(std::cref(oracle), one_hot({1, 1, 1}), 2.0);
  CHECK(flowmatch::evaluate_velocity<double>(guided, 0.5, x) ==
        flowmatch::evaluate_velocity<double>(rebuilt, 0.5, x));
}

TEST_CASE("bad guidance input throws", "[guidance][errors]") {
  const ClassConditionalOracle oracle;
  const Matrix<double> labels = one_hot({0, 1, 0});
  auto guided = flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, 2.0);
  Matrix<double> out(2, 4);
  // Condition count differs from the batch size.
  CHECK_THROWS_AS(guided(0.5, Matrix<double>::Zero(2, 4), out), std::invalid_argument);
  // Condition dimension differs from the null condition's.
  CHECK_THROWS_AS(guided.set_condition(0, Matrix<double>::Zero(3, 3)), std::invalid_argument);
  // Per-sample weights of the wrong length, and non-finite weights.
  CHECK_THROWS_AS(guided.set_weights(0, Vector<double>::Ones(2)), std::invalid_argument);
  Vector<double> bad = Vector<double>::Ones(3);
  bad(1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(guided.set_weights(0, bad), Catch::Contains("weights"));
  CHECK_THROWS_AS(flowmatch::classifier_free_guidance<double>(
                      std::cref(oracle), labels, std::numeric_limits<double>::infinity()),
                  std::invalid_argument);
  // A second condition set for a different number of samples; a non-finite condition.
  CHECK_THROWS_AS(guided.add_condition(one_hot({0, 1}), 1.0), std::invalid_argument);
  CHECK(guided.condition_sets() == 1);
  Matrix<double> nan_condition = labels;
  nan_condition(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(guided.set_condition(0, nan_condition), std::invalid_argument);
  CHECK_THROWS_AS(guided.set_condition(3, labels), std::out_of_range);
  // An interval that is reversed or outside [0, 1].
  CHECK_THROWS_AS(flowmatch::guidance_interval(0.6, 0.4), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::guidance_interval(-0.1, 0.4), std::domain_error);
}

TEST_CASE("a non-finite guidance weight is reported at its index", "[guidance][errors]") {
  const ClassConditionalOracle oracle;
  const Matrix<double> labels = one_hot({0, 1, 0, 1, 1});
  Vector<double> weights = Vector<double>::Constant(5, 2.0);
  weights(3) = std::numeric_limits<double>::quiet_NaN();
  // The matchers combine in each check: a combination keeps pointers to its parts.
  const auto weights_named = Catch::Contains("weights");
  const auto index_3 = Catch::Contains("index 3");
  const auto column_0 = Catch::Contains("column 0");
  CHECK_THROWS_AS(flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, weights),
                  std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, weights),
                    weights_named && index_3 && !column_0);
  auto guided = flowmatch::classifier_free_guidance<double>(std::cref(oracle), labels, 2.0);
  CHECK_THROWS_WITH(guided.set_weights(0, weights), weights_named && index_3 && !column_0);
}

TEST_CASE("the jvp and vjp of a guided field are the products of its Jacobian",
          "[guidance][derivatives]") {
  // A conditional network with its own jvp and vjp; the guided Jacobian is checked against
  // central differences of the guided velocity, column by column.
  std::mt19937_64 generator(31);
  flowmatch::MlpConfig config;
  config.dim = 3;
  config.cond_dim = 2;
  config.hidden = {8, 8};
  const flowmatch::Mlp<double> network(config, generator);
  const std::vector<int> labels{0, 1, 1, 0};
  Vector<double> weights(4);
  weights << 0.0, 1.0, 3.0, -0.5;
  auto guided =
      flowmatch::classifier_free_guidance<double>(std::cref(network), one_hot(labels), weights);
  guided.set_schedule(flowmatch::guidance_interval(0.2, 0.6));
  static_assert(flowmatch::HasJvp<decltype(guided), double>);
  static_assert(flowmatch::HasVjp<decltype(guided), double>);
  const Matrix<double> x = standard_normal(3, 4, 32);
  const Matrix<double> tangent = standard_normal(3, 4, 33);
  const Matrix<double> cotangent = standard_normal(3, 4, 34);
  const double step = 1e-6;

  // t = 0.3 lies in the guidance interval (weights w), t = 0.8 outside it (w = 1).
  for (const double t : {0.3, 0.8}) {
    std::vector<Matrix<double>> jacobians(4, Matrix<double>(3, 3));
    for (Index row = 0; row < 3; ++row) {
      Matrix<double> forward = x, backward = x;
      forward.row(row).array() += step;
      backward.row(row).array() -= step;
      // Samples do not interact, so moving coordinate `row` of every sample at once gives
      // column `row` of each sample's Jacobian.
      const Matrix<double> difference =
          (flowmatch::evaluate_velocity<double>(guided, t, forward) -
           flowmatch::evaluate_velocity<double>(guided, t, backward)) /
          (2 * step);
      for (Index col = 0; col < 4; ++col) jacobians[col].col(row) = difference.col(col);
    }
    Matrix<double> jvp(3, 4), vjp(3, 4);
    guided.jvp(t, x, tangent, jvp);
    guided.vjp(t, x, cotangent, vjp);
    for (Index col = 0; col < 4; ++col) {
      CHECK((jacobians[col] * tangent.col(col) - jvp.col(col)).cwiseAbs().maxCoeff() < 1e-7);
      CHECK((jacobians[col].transpose() * cotangent.col(col) - vjp.col(col)).cwiseAbs().maxCoeff() <
            1e-7);
    }
    if (t > 0.6) {
      Matrix<double> conditional(3, 4);
      network.jvp(t, x, one_hot(labels), tangent, conditional);
      CHECK((jvp - conditional).cwiseAbs().maxCoeff() < 1e-14);
    }

    // Two copies of the batch side by side are guided copy by copy.
    Matrix<double> doubled_x(3, 8), doubled_tangent(3, 8), doubled_jvp(3, 8), doubled_vjp(3, 8);
    doubled_x << x, x;
    doubled_tangent << tangent, cotangent;
    guided.jvp(t, doubled_x, doubled_tangent, doubled_jvp);
    guided.vjp(t, doubled_x, doubled_tangent, doubled_vjp);
    Matrix<double> jvp_of_cotangent(3, 4);
    guided.jvp(t, x, cotangent, jvp_of_cotangent);
    CHECK((doubled_jvp.leftCols(4) - jvp).cwiseAbs().maxCoeff() < 1e-14);
    CHECK((doubled_jvp.rightCols(4) - jvp_of_cotangent).cwiseAbs().maxCoeff() < 1e-14);

    // Hutchinson's estimate with K = 3 probes per sample: the mean of zᵀJz.
    std::mt19937_64 probe_generator(35);
    const Matrix<double> probes = flowmatch::draw_probes<double>(
        3, 4, 3, flowmatch::ProbeDistribution::rademacher, probe_generator);
    Vector<double> estimate(4);
    flowmatch::hutchinson_divergence<double>(guided, t, x, probes, estimate);
    for (Index col = 0; col < 4; ++col) {
      double mean = 0.0;
      for (Index k = 0; k < 3; ++k) {
        const Vector<double> probe = probes.col(k * 4 + col);
        mean += probe.dot(jacobians[col] * probe) / 3;
      }
      CHECK_THAT(estimate(col), WithinAbs(mean, 1e-7));
    }
  }

  Matrix<double> wrong(3, 5);
  CHECK_THROWS_AS(guided.jvp(0.3, standard_normal(3, 5, 36), standard_normal(3, 5, 37), wrong),
                  std::invalid_argument);
  Matrix<double> mismatched(3, 3);
  CHECK_THROWS_AS(guided.vjp(0.3, x, cotangent, mismatched), std::invalid_argument);
}

}  // namespace test_guidance
