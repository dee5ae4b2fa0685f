/// @file conditional_paths.hpp
/// @brief The conditional probability paths of flow-matching training: x_t and its velocity
/// u_t = ∂x_t/∂t for a source sample x₀, a data sample x₁ and a smoothing noise ε ~ N(0, I).
///
/// Every path has the form
///
///     x_t = α(t)·x₁ + σ(t)·x₀ + γ(t)·ε,      u_t = α̇(t)·x₁ + σ̇(t)·x₀ + γ̇(t)·ε,
///
/// so that u_t is the time derivative of x_t at fixed (x₀, x₁, ε): a valid conditional path.
/// The named paths (with the objectives of torchcfm that use them) are
///
/// | factory                    | α(t)       | σ(t)               | γ(t)           |
/// |----------------------------|------------|--------------------|----------------|
/// | affine(path, s)            | α_t        | σ_t                | s              |
/// | straight(s) (I-/OT-CFM)    | t          | 1 − t              | s              |
/// | brownian_bridge(s) (SB-CFM)| t          | 1 − t              | s·√(t(1 − t))  |
/// | variance_preserving(s)     | sin(πt/2)  | cos(πt/2)          | s              |
/// | target(σ_min)              | t          | 1 − (1 − σ_min)·t  | 0              |
///
/// For the Brownian bridge, γ̇ = s·(1 − 2t)/(2√(t(1 − t))), so γ̇ε equals the form
/// (1 − 2t)/(2t(1 − t))·(x_t − (t·x₁ + (1 − t)·x₀)) without its 0/0 at the ends; γ̇ is infinite
/// at t = 0 and t = 1, which are excluded for s > 0 (std::domain_error).
#pragma once

#include <cmath>
#include <concepts>
#include <functional>
#include <numbers>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The coefficients of a conditional path at one time (see the file comment).
template <class Scalar>
struct ConditionalPathCoefficients {
  Scalar alpha;    ///< α(t), the coefficient of the data sample x₁.
  Scalar sigma;    ///< σ(t), the coefficient of the source sample x₀.
  Scalar gamma;    ///< γ(t), the coefficient of the smoothing noise ε.
  Scalar d_alpha;  ///< α̇(t).
  Scalar d_sigma;  ///< σ̇(t).
  Scalar d_gamma;  ///< γ̇(t).
};

/// A conditional path x_t = α·x₁ + σ·x₀ + γ·ε with its velocity (see the file comment).
template <class Scalar = double>
class ConditionalPath {
 public:
  using scalar_type = Scalar;
  /// The coefficients at a time t in [0, 1] (t already validated).
  using CoefficientFunction = std::function<ConditionalPathCoefficients<Scalar>(Scalar)>;

  /// A path from its coefficient function; @p open_interval excludes t = 0 and t = 1.
  ConditionalPath(std::string name, CoefficientFunction coefficients, bool open_interval)
      : name_(std::move(name)),
        coefficients_(std::move(coefficients)),
        open_interval_(open_interval) {}

  /// The affine path of a scheduler, α = α_t, σ = σ_t, with constant smoothing γ = @p smoothing.
  /// @throws std::invalid_argument unless smoothing is finite and ≥ 0.
  template <SchedulerOf<Scalar> S>
  static ConditionalPath affine(AffinePath<S> path, Scalar smoothing) {
    detail::require_nonnegative("ConditionalPath::affine: smoothing", smoothing);
    return ConditionalPath(
        "affine",
        [path = std::move(path), smoothing](Scalar t) {
          const auto values = scheduler_values(path.scheduler(), t);
          return ConditionalPathCoefficients<Scalar>{values.alpha,   values.sigma,   smoothing,
                                                     values.d_alpha, values.d_sigma, Scalar(0)};
        },
        false);
  }

  /// x_t = t·x₁ + (1 − t)·x₀ + s·ε, u_t = x₁ − x₀ (I-CFM and OT-CFM), s = @p smoothing.
  /// @throws std::invalid_argument unless smoothing is finite and ≥ 0.
  static ConditionalPath straight(Scalar smoothing) {
    detail::require_nonnegative("ConditionalPath::straight: smoothing", smoothing);
    return ConditionalPath(
        "straight",
        [smoothing](Scalar t) {
          return ConditionalPathCoefficients<Scalar>{t,         Scalar(1) - t, smoothing,
                                                     Scalar(1), Scalar(-1),    Scalar(0)};
        },
        false);
  }

  /// The Brownian bridge x_t = t·x₁ + (1 − t)·x₀ + s·√(t(1 − t))·ε (SB-CFM), s = @p sigma;
  /// for s > 0 only on the open interval 0 < t < 1.
  /// @throws std::invalid_argument unless sigma is finite and ≥ 0.
  static ConditionalPath brownian_bridge(Scalar sigma) {
    detail::require_nonnegative("ConditionalPath::brownian_bridge: sigma", sigma);
    return ConditionalPath(
        "brownian_bridge",
        [sigma](Scalar t) {
          const Scalar root = std::sqrt(t * (Scalar(1) - t));
          // γ̇ = s·(1 − 2t)/(2√(t(1 − t))); for s = 0 it is 0 on all of [0, 1].
          const Scalar d_gamma =
              sigma == Scalar(0) ? Scalar(0) : sigma * (Scalar(1) - 2 * t) / (2 * root);
          return ConditionalPathCoefficients<Scalar>{t,         Scalar(1) - t, sigma * root,
                                                     Scalar(1), Scalar(-1),    d_gamma};
        },
        sigma > Scalar(0));
  }

  /// x_t = sin(πt/2)·x₁ + cos(πt/2)·x₀ + s·ε, u_t = (π/2)(cos(πt/2)·x₁ − sin(πt/2)·x₀)
  /// (VP-CFM), s = @p smoothing.
  /// @throws std::invalid_argument unless smoothing is finite and ≥ 0.
  static ConditionalPath variance_preserving(Scalar smoothing) {
    detail::require_nonnegative("ConditionalPath::variance_preserving: smoothing", smoothing);
    return ConditionalPath(
        "variance_preserving",
        [smoothing](Scalar t) {
          const Scalar half_pi = std::numbers::pi_v<Scalar> / 2;
          const Scalar sine = std::sin(half_pi * t);
          const Scalar cosine = std::cos(half_pi * t);
          return ConditionalPathCoefficients<Scalar>{
              sine, cosine, smoothing, half_pi * cosine, -half_pi * sine, Scalar(0)};
        },
        false);
  }

  /// x_t = t·x₁ + (1 − (1 − σ_min)·t)·x₀, u_t = x₁ − (1 − σ_min)·x₀ (the target CFM of
  /// Lipman et al., 2023), σ_min = @p sigma_min.
  /// @throws std::invalid_argument unless sigma_min is finite and ≥ 0.
  static ConditionalPath target(Scalar sigma_min) {
    detail::require_nonnegative("ConditionalPath::target: sigma_min", sigma_min);
    return ConditionalPath(
        "target",
        [sigma_min](Scalar t) {
          const Scalar shrink = Scalar(1) - sigma_min;
          return ConditionalPathCoefficients<Scalar>{
              t, Scalar(1) - shrink * t, Scalar(0), Scalar(1), -shrink, Scalar(0)};
        },
        false);
  }

  /// The name of the path ("affine", "straight", "brownian_bridge", "variance_preserving",
  /// "target" or the caller's).
  [[nodiscard]] const std::string& name() const { return name_; }
  /// Whether the ends t = 0 and t = 1 are excluded (a time sampler must avoid them).
  [[nodiscard]] bool open_interval() const { return open_interval_; }

  /// The coefficients at time @p t.
  /// @throws std::domain_error unless t lies in [0, 1] (in (0, 1) if open_interval()) or if a
  ///         coefficient is not finite there.
  [[nodiscard]] ConditionalPathCoefficients<Scalar> coefficients(Scalar t) const {
    detail::require_unit_time("ConditionalPath::coefficients: t", t);
    if (open_interval_ && (t == Scalar(0) || t == Scalar(1))) {
      detail::reject_argument<std::domain_error>("ConditionalPath::coefficients: t",
                                                 detail::is_value(t),
                                                 "0 < t < 1 for the path '" + name_ + "'");
    }
    const ConditionalPathCoefficients<Scalar> values = coefficients_(t);
    const Scalar all[] = {values.alpha,   values.sigma,   values.gamma,
                          values.d_alpha, values.d_sigma, values.d_gamma};
    for (const Scalar value : all) {
      if (!std::isfinite(value)) {
        detail::reject_argument<std::domain_error>(
            "ConditionalPath::coefficients: t",
            detail::is_value(t) + ", where the path '" + name_ + "' has a non-finite coefficient",
            "a time where every coefficient is finite");
      }
    }
    return values;
  }

  /// x_t and u_t, column by column, for source samples @p x0, data samples @p x1 and smoothing
  /// noise @p noise (all d×N, finite) at the times @p t (length N).
  /// @throws std::invalid_argument for bad shapes or non-finite entries; std::domain_error as
  ///         coefficients().
  [[nodiscard]] PathSample<Scalar> sample(const ConstMatrixRef<Scalar>& x0,
                                          const ConstMatrixRef<Scalar>& x1,
                                          const ConstMatrixRef<Scalar>& noise,
                                          const ConstVectorRef<Scalar>& t) const {
    PathSample<Scalar> result{Matrix<Scalar>(x0.rows(), x0.cols()),
                              Matrix<Scalar>(x0.rows(), x0.cols())};
    sample_into(x0, x1, noise, t, result.x_t, result.dx_t);
    return result;
  }

  /// As sample(), writing x_t into @p x_t and u_t into @p u_t (both d×N) without allocating.
  /// The noise may be the same matrix as u_t (each entry of u_t is written after it is read),
  /// but no other argument may share memory with an output.
  /// @throws std::invalid_argument for bad shapes or non-finite entries; std::domain_error as
  ///         coefficients(). The outputs are then unspecified.
  void sample_into(const ConstMatrixRef<Scalar>& x0, const ConstMatrixRef<Scalar>& x1,
                   const ConstMatrixRef<Scalar>& noise, const ConstVectorRef<Scalar>& t,
                   MatrixRef<Scalar> x_t, MatrixRef<Scalar> u_t) const {
    detail::require_shape("ConditionalPath::sample: x1", x1, x0.rows(), x0.cols());
    detail::require_shape("ConditionalPath::sample: noise", noise, x0.rows(), x0.cols());
    detail::require_shape("ConditionalPath::sample: t", t, x0.cols(), 1);
    detail::require_shape("ConditionalPath::sample: x_t", x_t, x0.rows(), x0.cols());
    detail::require_shape("ConditionalPath::sample: u_t", u_t, x0.rows(), x0.cols());
    detail::require_finite("ConditionalPath::sample: x0", x0);
    detail::require_finite("ConditionalPath::sample: x1", x1);
    detail::require_finite("ConditionalPath::sample: noise", noise);
    for (Index col = 0; col < x0.cols(); ++col) {
      const ConditionalPathCoefficients<Scalar> values = coefficients(t(col));
      x_t.col(col) =
          values.alpha * x1.col(col) + values.sigma * x0.col(col) + values.gamma * noise.col(col);
      u_t.col(col) = values.d_alpha * x1.col(col) + values.d_sigma * x0.col(col) +
                     values.d_gamma * noise.col(col);
    }
  }

 private:
  std::string name_;
  CoefficientFunction coefficients_;
  bool open_interval_;
};

}  // namespace flowmatch
