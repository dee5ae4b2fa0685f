/// @file affine_path.hpp
/// @brief The affine probability path x_t = α_t·x₁ + σ_t·x₀ of a scheduler, and conversions
/// between the four views of a model's prediction.
///
/// With a standard-normal source x₀ = ε, a point on the path and its velocity are
///
///     x = α·x₁ + σ·ε,        u = α̇·x₁ + σ̇·ε,
///
/// and the score of p_t(x | x₁) = N(α·x₁, σ²I) is s = ∇log p_t = −ε/σ. A model may predict any
/// of the four views u (velocity), x₁ (target), ε (epsilon) or s (score); given x = x_t and t
/// each determines the others. Every conversion is an affine map out = a·prediction + b·x with
/// a, b depending on t only. With the determinant D = α·σ̇ − σ·α̇ (= −σ²·dρ/dt < 0 wherever
/// ρ = α/σ is strictly increasing) they are
///
///     velocity → target:   x₁ = (σ̇·x − σ·u)/D
///     velocity → epsilon:  ε  = (α·u − α̇·x)/D
///     velocity → score:    s  = (α̇·x − α·u)/(σ·D)
///     target → velocity:   u  = (α̇ − α·σ̇/σ)·x₁ + (σ̇/σ)·x
///     target → epsilon:    ε  = (x − α·x₁)/σ
///     target → score:      s  = (α·x₁ − x)/σ²
///     epsilon → velocity:  u  = (σ̇ − σ·α̇/α)·ε + (α̇/α)·x
///     epsilon → target:    x₁ = (x − σ·ε)/α
///     epsilon → score:     s  = −ε/σ
///     score → velocity:    u  = σ·(σ·α̇/α − σ̇)·s + (α̇/α)·x
///     score → target:      x₁ = (x + σ²·s)/α
///     score → epsilon:     ε  = −σ·s
///
/// A conversion throws std::domain_error where its formula divides by zero: D = 0 (e.g.
/// Polynomial(n > 1) at t = 0, where α = α̇ = 0), α_t = 0 (t = 0 for most schedulers), or
/// σ_t = 0 (t = 1); the score is defined only where σ_t > 0, so every conversion from or to the
/// score requires σ_t > 0.
#pragma once

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The time argument of a batch operation: either one time shared by every column or a
/// length-N vector with one time per column. Converts implicitly from a scalar and from an
/// Eigen vector expression, so callers write `path.sample(x0, x1, 0.5)` or
/// `path.sample(x0, x1, times)`.
template <class Scalar>
class BatchTime {
 public:
  /// One time for every column (implicit by design).
  BatchTime(Scalar time) : shared_(time) {}
  /// One time per column: a column vector (or array) expression of length N (implicit by
  /// design). An expression is evaluated into storage owned by this object.
  template <class Derived>
  BatchTime(const Eigen::DenseBase<Derived>& times) : shared_(0) {
    per_column_.emplace(times.derived().matrix());
  }
  /// Not copyable: a copy would share the evaluated storage of the original. Pass by reference.
  BatchTime(const BatchTime&) = delete;
  BatchTime& operator=(const BatchTime&) = delete;

  /// True when one time applies to every column.
  [[nodiscard]] bool is_shared() const { return !per_column_.has_value(); }
  /// The time of column @p col.
  [[nodiscard]] Scalar operator[](Index col) const {
    return is_shared() ? shared_ : (*per_column_)(col);
  }
  /// True when the times fit a batch of @p cols columns.
  [[nodiscard]] bool fits(Index cols) const { return is_shared() || (per_column_->size() == cols); }
  /// Throws std::invalid_argument naming @p name unless the times fit a batch of @p cols columns.
  void require_columns(std::string_view name, Index cols) const {
    if (!is_shared()) detail::require_shape(name, *per_column_, cols, 1);
  }

 private:
  Scalar shared_;
  std::optional<ConstVectorRef<Scalar>> per_column_;
};

/// A batch of points on the path and their velocities.
template <class Scalar>
struct PathSample {
  Matrix<Scalar> x_t;   ///< x_t = α_t·x₁ + σ_t·x₀ (d×N).
  Matrix<Scalar> dx_t;  ///< dx_t/dt = α̇_t·x₁ + σ̇_t·x₀ (d×N), the conditional velocity.
};

/// The affine probability path of scheduler @p S: x_t = α_t·x₁ + σ_t·x₀.
template <Scheduler S>
class AffinePath {
 public:
  using scheduler_type = S;
  using scalar_type = typename S::scalar_type;

  /// A path with a default-constructed scheduler (deleted when S has no default constructor).
  AffinePath() = default;
  /// A path with the given @p scheduler.
  explicit AffinePath(S scheduler) : scheduler_(std::move(scheduler)) {}

  /// The scheduler.
  [[nodiscard]] const S& scheduler() const { return scheduler_; }

  /// Points x_t = α_t·x₁ + σ_t·x₀ and velocities α̇_t·x₁ + σ̇_t·x₀, column by column.
  /// @param x0 source samples (d×N), @param x1 data samples (d×N, same shape), both finite;
  /// @param t one time in [0, 1] per column, or one for all.
  /// Throws std::invalid_argument for bad shapes or non-finite entries, std::domain_error for
  /// times outside [0, 1] or where the scheduler's derivatives are singular.
  [[nodiscard]] PathSample<scalar_type> sample(const ConstMatrixRef<scalar_type>& x0,
                                               const ConstMatrixRef<scalar_type>& x1,
                                               const BatchTime<scalar_type>& t) const {
    detail::require_shape("AffinePath::sample: x1", x1, x0.rows(), x0.cols());
    t.require_columns("AffinePath::sample: t", x0.cols());
    detail::require_finite("AffinePath::sample: x0", x0);
    detail::require_finite("AffinePath::sample: x1", x1);
    const Index cols = x0.cols();
    Vector<scalar_type> alpha(cols), sigma(cols), d_alpha(cols), d_sigma(cols);
    for (Index col = 0; col < cols; ++col) {
      const auto values = scheduler_values(scheduler_, t[col]);
      alpha(col) = values.alpha;
      sigma(col) = values.sigma;
      d_alpha(col) = values.d_alpha;
      d_sigma(col) = values.d_sigma;
    }
    return {x1 * alpha.asDiagonal() + x0 * sigma.asDiagonal(),
            x1 * d_alpha.asDiagonal() + x0 * d_sigma.asDiagonal()};
  }

  /// @name Conversions between predictions
  /// Each takes a d×N @p prediction of one view, the points @p x_t it was made at (d×N) and
  /// their time @p t (one per column or one for all), and returns the d×N prediction of another
  /// view; see the file comment for the formulas and the points where they throw.
  /// Bad shapes or non-finite entries throw std::invalid_argument.
  /// @{
  [[nodiscard]] Matrix<scalar_type> velocity_to_target(const ConstMatrixRef<scalar_type>& velocity,
                                                       const ConstMatrixRef<scalar_type>& x_t,
                                                       const BatchTime<scalar_type>& t) const {
    return convert<View::velocity, View::target>(velocity, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> velocity_to_epsilon(const ConstMatrixRef<scalar_type>& velocity,
                                                        const ConstMatrixRef<scalar_type>& x_t,
                                                        const BatchTime<scalar_type>& t) const {
    return convert<View::velocity, View::epsilon>(velocity, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> velocity_to_score(const ConstMatrixRef<scalar_type>& velocity,
                                                      const ConstMatrixRef<scalar_type>& x_t,
                                                      const BatchTime<scalar_type>& t) const {
    return convert<View::velocity, View::score>(velocity, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> target_to_velocity(const ConstMatrixRef<scalar_type>& target,
                                                       const ConstMatrixRef<scalar_type>& x_t,
                                                       const BatchTime<scalar_type>& t) const {
    return convert<View::target, View::velocity>(target, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> target_to_epsilon(const ConstMatrixRef<scalar_type>& target,
                                                      const ConstMatrixRef<scalar_type>& x_t,
                                                      const BatchTime<scalar_type>& t) const {
    return convert<View::target, View::epsilon>(target, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> target_to_score(const ConstMatrixRef<scalar_type>& target,
                                                    const ConstMatrixRef<scalar_type>& x_t,
                                                    const BatchTime<scalar_type>& t) const {
    return convert<View::target, View::score>(target, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> epsilon_to_velocity(const ConstMatrixRef<scalar_type>& epsilon,
                                                        const ConstMatrixRef<scalar_type>& x_t,
                                                        const BatchTime<scalar_type>& t) const {
    return convert<View::epsilon, View::velocity>(epsilon, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> epsilon_to_target(const ConstMatrixRef<scalar_type>& epsilon,
                                                      const ConstMatrixRef<scalar_type>& x_t,
                                                      const BatchTime<scalar_type>& t) const {
    return convert<View::epsilon, View::target>(epsilon, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> epsilon_to_score(const ConstMatrixRef<scalar_type>& epsilon,
                                                     const ConstMatrixRef<scalar_type>& x_t,
                                                     const BatchTime<scalar_type>& t) const {
    return convert<View::epsilon, View::score>(epsilon, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> score_to_velocity(const ConstMatrixRef<scalar_type>& score,
                                                      const ConstMatrixRef<scalar_type>& x_t,
                                                      const BatchTime<scalar_type>& t) const {
    return convert<View::score, View::velocity>(score, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> score_to_target(const ConstMatrixRef<scalar_type>& score,
                                                    const ConstMatrixRef<scalar_type>& x_t,
                                                    const BatchTime<scalar_type>& t) const {
    return convert<View::score, View::target>(score, x_t, t);
  }
  [[nodiscard]] Matrix<scalar_type> score_to_epsilon(const ConstMatrixRef<scalar_type>& score,
                                                     const ConstMatrixRef<scalar_type>& x_t,
                                                     const BatchTime<scalar_type>& t) const {
    return convert<View::score, View::epsilon>(score, x_t, t);
  }
  /// @}

  /// velocity_to_score at one time @p t for every column, without the argument checks: for a
  /// right-hand side evaluated at every step of an integration, whose state and velocity the
  /// integrator checks. @p velocity and @p x_t must have the same shape.
  [[nodiscard]] Matrix<scalar_type> velocity_to_score_unchecked(
      const ConstMatrixRef<scalar_type>& velocity, const ConstMatrixRef<scalar_type>& x_t,
      scalar_type t) const {
    const Affine map = coefficients<View::velocity, View::score>(t);
    return map.prediction * velocity + map.x * x_t;
  }

 private:
  using Scalar = scalar_type;

  enum class View { velocity, target, epsilon, score };

  static constexpr const char* view_name(View view) {
    switch (view) {
      case View::velocity:
        return "velocity";
      case View::target:
        return "target";
      case View::epsilon:
        return "epsilon";
      case View::score:
        return "score";
    }
    return "";
  }

  template <View from, View to>
  static std::string function_name() {
    return std::string("AffinePath::") + view_name(from) + "_to_" + view_name(to);
  }

  // out = prediction·a + x·b.
  struct Affine {
    Scalar prediction;
    Scalar x;
  };

  template <View from, View to>
  Matrix<Scalar> convert(const ConstMatrixRef<Scalar>& prediction,
                         const ConstMatrixRef<Scalar>& x_t, const BatchTime<Scalar>& t) const {
    // The names are composed only when a check fails.
    if (x_t.rows() != prediction.rows() || x_t.cols() != prediction.cols() ||
        !t.fits(prediction.cols()) || !prediction.allFinite() || !x_t.allFinite()) {
      const std::string name = function_name<from, to>();
      detail::require_shape(name + ": x_t", x_t, prediction.rows(), prediction.cols());
      t.require_columns(name + ": t", prediction.cols());
      detail::require_finite(name + ": " + view_name(from), prediction);
      detail::require_finite(name + ": x_t", x_t);
    }
    if (t.is_shared()) {
      const Affine map = coefficients<from, to>(t[0]);
      return map.prediction * prediction + map.x * x_t;
    }
    const Index cols = prediction.cols();
    Vector<Scalar> prediction_weight(cols), x_weight(cols);
    for (Index col = 0; col < cols; ++col) {
      const Affine map = coefficients<from, to>(t[col]);
      prediction_weight(col) = map.prediction;
      x_weight(col) = map.x;
    }
    return prediction * prediction_weight.asDiagonal() + x_t * x_weight.asDiagonal();
  }

  // The coefficients of one conversion at time t (formulas in the file comment). Only the
  // scheduler members a formula needs are evaluated, so e.g. epsilon → target works at t = 1
  // even where σ̇_1 is singular.
  template <View from, View to>
  Affine coefficients(Scalar t) const {
    static_assert(from != to);
    const S& s = scheduler_;
    if constexpr (from == View::score || to == View::score) nonzero_sigma<from, to>(t);
    Affine map{};
    if constexpr (from == View::velocity) {
      const Scalar det = determinant<from, to>(t);
      if constexpr (to == View::target) {
        map = {-s.sigma(t) / det, s.d_sigma(t) / det};
      } else if constexpr (to == View::epsilon) {
        map = {s.alpha(t) / det, -s.d_alpha(t) / det};
      } else {
        const Scalar scaled_det = s.sigma(t) * det;
        map = {-s.alpha(t) / scaled_det, s.d_alpha(t) / scaled_det};
      }
    } else if constexpr (from == View::target) {
      const Scalar sigma = nonzero_sigma<from, to>(t);
      if constexpr (to == View::velocity) {
        map = {s.d_alpha(t) - s.alpha(t) * s.d_sigma(t) / sigma, s.d_sigma(t) / sigma};
      } else if constexpr (to == View::epsilon) {
        map = {-s.alpha(t) / sigma, Scalar(1) / sigma};
      } else {
        map = {s.alpha(t) / (sigma * sigma), Scalar(-1) / (sigma * sigma)};
      }
    } else if constexpr (from == View::epsilon) {
      if constexpr (to == View::velocity) {
        const Scalar alpha = nonzero_alpha<from, to>(t);
        map = {s.d_sigma(t) - s.sigma(t) * s.d_alpha(t) / alpha, s.d_alpha(t) / alpha};
      } else if constexpr (to == View::target) {
        const Scalar alpha = nonzero_alpha<from, to>(t);
        map = {-s.sigma(t) / alpha, Scalar(1) / alpha};
      } else {
        map = {Scalar(-1) / s.sigma(t), Scalar(0)};
      }
    } else {  // from the score; σ ≠ 0 was checked above
      const Scalar sigma = s.sigma(t);
      if constexpr (to == View::velocity) {
        const Scalar alpha = nonzero_alpha<from, to>(t);
        map = {sigma * (sigma * s.d_alpha(t) / alpha - s.d_sigma(t)), s.d_alpha(t) / alpha};
      } else if constexpr (to == View::target) {
        const Scalar alpha = nonzero_alpha<from, to>(t);
        map = {sigma * sigma / alpha, Scalar(1) / alpha};
      } else {
        map = {-sigma, Scalar(0)};
      }
    }
    if (!std::isfinite(map.prediction) || !std::isfinite(map.x)) {
      reject_time<from, to>(t, "where the conversion overflows", "a finite conversion");
    }
    return map;
  }

  template <View from, View to>
  Scalar nonzero_sigma(Scalar t) const {
    const Scalar sigma = scheduler_.sigma(t);
    if (sigma == Scalar(0)) {
      reject_time<from, to>(t, "where sigma_t = 0", "sigma_t != 0 (the conversion divides by it)");
    }
    return sigma;
  }

  template <View from, View to>
  Scalar nonzero_alpha(Scalar t) const {
    const Scalar alpha = scheduler_.alpha(t);
    if (alpha == Scalar(0)) {
      reject_time<from, to>(t, "where alpha_t = 0", "alpha_t != 0 (the conversion divides by it)");
    }
    return alpha;
  }

  /// Throws std::domain_error "<conversion>: t is <t>, <where>, expected <expectation>".
  template <View from, View to>
  [[noreturn]] static void reject_time(Scalar t, const char* where, const char* expectation) {
    detail::reject_argument<std::domain_error>(function_name<from, to>() + ": t",
                                               detail::is_value(t) + ", " + where, expectation);
  }

  // D = α·σ̇ − σ·α̇, the determinant of the map (x₁, ε) ↦ (x, u).
  template <View from, View to>
  Scalar determinant(Scalar t) const {
    const auto v = scheduler_values(scheduler_, t);
    const Scalar det = v.alpha * v.d_sigma - v.sigma * v.d_alpha;
    if (det == Scalar(0)) {
      reject_time<from, to>(t, "where alpha_t * dsigma_t - sigma_t * dalpha_t = 0",
                            "a time where the velocity determines x1");
    }
    return det;
  }

  S scheduler_;
};

}  // namespace flowmatch
