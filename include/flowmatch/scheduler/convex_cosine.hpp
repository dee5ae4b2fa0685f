/// @file convex_cosine.hpp
/// @brief The convex cosine scheduler: α_t = sin²(πt/2), σ_t = cos²(πt/2).
#pragma once

#include <cmath>
#include <numbers>
#include <stdexcept>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Convex cosine scheduler (σ_t = 1 − α_t), the cosine κ of discrete flow matching:
///
///     α_t = sin²(πt/2),   σ_t = cos²(πt/2),   α̇_t = (π/2)·sin(πt),   σ̇_t = −α̇_t,
///     ρ(t) = tan²(πt/2)  ⇒  snr_inverse(ρ) = (2/π)·atan(√ρ),
///     kappa_inverse(κ) = (2/π)·asin(√κ).
///
/// Unlike Cosine (α² + σ² = 1) it satisfies α + σ = 1, so it is a ConvexScheduler. σ_t is
/// evaluated as sin²(π(1 − t)/2), so σ_1 = 0 exactly. Defined on all of [0, 1].
template <class Scalar = double>
class ConvexCosine {
 public:
  using scalar_type = Scalar;

  /// α_t = sin²(πt/2).
  Scalar alpha(Scalar t) const { return squared_sine(checked(t)); }
  /// σ_t = cos²(πt/2) = sin²(π(1 − t)/2).
  Scalar sigma(Scalar t) const { return squared_sine(Scalar(1) - checked(t)); }
  /// α̇_t = (π/2)·sin(πt).
  Scalar d_alpha(Scalar t) const {
    return half_pi * std::sin(std::numbers::pi_v<Scalar> * checked(t));
  }
  /// σ̇_t = −(π/2)·sin(πt).
  Scalar d_sigma(Scalar t) const { return -d_alpha(t); }
  /// t = (2/π)·atan(√ρ), with ρ = +inf mapped to 1; throws std::domain_error for ρ < 0 or NaN.
  Scalar snr_inverse(Scalar rho) const {
    detail::require_snr("ConvexCosine::snr_inverse: rho", rho);
    if (std::isinf(rho)) return Scalar(1);
    return std::atan(std::sqrt(rho)) / half_pi;
  }
  /// t = (2/π)·asin(√κ) (α_t = κ), for κ in [0, 1].
  Scalar kappa_inverse(Scalar kappa) const {
    detail::require_unit_time("ConvexCosine::kappa_inverse: kappa", kappa);
    return std::asin(std::sqrt(kappa)) / half_pi;
  }

 private:
  static constexpr Scalar half_pi = std::numbers::pi_v<Scalar> / Scalar(2);

  // sin²(πs/2).
  static Scalar squared_sine(Scalar s) {
    const Scalar sine = std::sin(half_pi * s);
    return sine * sine;
  }

  static Scalar checked(Scalar t) {
    detail::require_unit_time("ConvexCosine: t", t);
    return t;
  }
};

}  // namespace flowmatch
