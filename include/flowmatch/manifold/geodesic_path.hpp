/// @file geodesic_path.hpp
/// @brief The geodesic probability path of Riemannian flow matching and its conditional field.
///
/// For a source point x₀ (t = 0), a data point x₁ (t = 1) and a convex scheduler with
/// κ_t = α_t (κ₀ = 0, κ₁ = 1), the path runs along the shortest geodesic:
///
///     x_t = exp_{x₀}(κ_t·v),   v = log_{x₀}(x₁),
///     ẋ_t = κ̇_t·γ'(κ_t),      γ(s) = exp_{x₀}(s·v),
///
/// where γ'(s) is the velocity of the geodesic (v carried along it by parallel transport): on
/// the sphere −|v|·sin(s|v|)·x₀ + cos(s|v|)·v, on the torus and R^d simply v, per factor on a
/// product. Both come in closed form from Manifold::geodesic, never by differences.
///
/// From x_t the rest of the geodesic to x₁ is (1 − κ_t)·γ'(κ_t) = log_{x_t}(x₁), so the same
/// velocity is the conditional field u_t(x | x₁) = κ̇_t/(1 − κ_t)·log_x(x₁), whose flow from
/// any x₀ traces the path (conditional_field); it is singular at κ_t = 1.
#pragma once

#include <concepts>
#include <stdexcept>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The conditional field u_t(x | x₁) = κ̇_t/(1 − κ_t)·log_x(x₁) of a geodesic path, for fixed
/// targets x₁ (one column per sample): a velocity field on the manifold, defined while
/// κ_t < 1. Made by GeodesicPath::conditional_field.
template <Manifold M, ConvexScheduler S>
class ConditionalGeodesicField {
  static_assert(std::same_as<typename M::scalar_type, typename S::scalar_type>,
                "ConditionalGeodesicField: the manifold and the scheduler need one scalar type");

 public:
  using scalar_type = typename M::scalar_type;

  /// The field towards @p targets (checked by GeodesicPath::conditional_field).
  ConditionalGeodesicField(M manifold, S scheduler, Matrix<scalar_type> targets)
      : manifold_(std::move(manifold)),
        scheduler_(std::move(scheduler)),
        targets_(std::move(targets)) {}

  /// The targets x₁.
  [[nodiscard]] const Matrix<scalar_type>& targets() const { return targets_; }

  /// out = κ̇_t/(1 − κ_t)·log_x(x₁), x of the targets' shape. Throws std::domain_error at
  /// κ_t = 1 (t = 1 for the usual schedulers), where the field is singular, and
  /// std::invalid_argument if x does not have the targets' shape.
  void operator()(scalar_type t, const ConstMatrixRef<scalar_type>& x,
                  MatrixRef<scalar_type> out) const {
    detail::require_shape("ConditionalGeodesicField: x", x, targets_.rows(), targets_.cols());
    const scalar_type kappa = scheduler_.alpha(t);
    if (!(kappa < scalar_type(1))) {
      detail::reject_argument<std::domain_error>(
          "ConditionalGeodesicField: t", detail::is_value(t) + " with kappa_t = 1",
          "kappa_t < 1 (the field κ̇/(1 − κ)·log_x(x₁) is singular at κ = 1)");
    }
    manifold_.log(x, targets_, out);
    out *= scheduler_.d_alpha(t) / (scalar_type(1) - kappa);
  }

 private:
  M manifold_;
  S scheduler_;
  Matrix<scalar_type> targets_;
};

/// The geodesic path x_t = exp_{x₀}(κ_t·log_{x₀}(x₁)) on manifold @p M with the convex
/// scheduler @p S (κ_t = α_t); see the file comment.
template <Manifold M, ConvexScheduler S>
class GeodesicPath {
  static_assert(std::same_as<typename M::scalar_type, typename S::scalar_type>,
                "GeodesicPath: the manifold and the scheduler need one scalar type");

 public:
  using manifold_type = M;
  using scheduler_type = S;
  using scalar_type = typename M::scalar_type;

  /// The path on @p manifold with schedule @p scheduler.
  GeodesicPath(M manifold, S scheduler)
      : manifold_(std::move(manifold)), scheduler_(std::move(scheduler)) {}

  /// The manifold.
  [[nodiscard]] const M& manifold() const { return manifold_; }
  /// The scheduler.
  [[nodiscard]] const S& scheduler() const { return scheduler_; }

  /// Points x_t and velocities ẋ_t = κ̇_t·γ'(κ_t), column by column: the conditional samples
  /// and training targets of Riemannian flow matching.
  /// @param x0 source points, @param x1 data points (dimension()×N each, on the manifold);
  /// @param t one time in [0, 1] per column, or one for all.
  /// Throws std::invalid_argument for bad shapes, non-finite entries or points off the
  /// manifold, std::domain_error for times outside [0, 1].
  [[nodiscard]] PathSample<scalar_type> sample(const ConstMatrixRef<scalar_type>& x0,
                                               const ConstMatrixRef<scalar_type>& x1,
                                               const BatchTime<scalar_type>& t) const {
    detail::require_on_manifold("GeodesicPath::sample: x0", manifold_, x0);
    detail::require_shape("GeodesicPath::sample: x1", x1, x0.rows(), x0.cols());
    detail::require_on_manifold("GeodesicPath::sample: x1", manifold_, x1);
    t.require_columns("GeodesicPath::sample: t", x0.cols());
    const Index cols = x0.cols();
    Vector<scalar_type> kappa(cols), d_kappa(cols);
    for (Index col = 0; col < cols; ++col) {
      kappa(col) = scheduler_.alpha(t[col]);
      d_kappa(col) = scheduler_.d_alpha(t[col]);
    }
    Matrix<scalar_type> direction(x0.rows(), cols);
    manifold_.log(x0, x1, direction);
    PathSample<scalar_type> result{Matrix<scalar_type>(x0.rows(), cols),
                                   Matrix<scalar_type>(x0.rows(), cols)};
    manifold_.geodesic(x0, direction, kappa, result.x_t, result.dx_t);
    result.dx_t *= d_kappa.asDiagonal();
    return result;
  }

  /// The conditional field u_t(x | x₁) = κ̇_t/(1 − κ_t)·log_x(x₁) towards @p x1 (on the
  /// manifold, one column per sample), whose flow from x₀ is the path from x₀ to x₁.
  [[nodiscard]] ConditionalGeodesicField<M, S> conditional_field(
      const ConstMatrixRef<scalar_type>& x1) const {
    detail::require_on_manifold("GeodesicPath::conditional_field: x1", manifold_, x1);
    return {manifold_, scheduler_, Matrix<scalar_type>(x1)};
  }

 private:
  M manifold_;
  S scheduler_;
};

}  // namespace flowmatch
