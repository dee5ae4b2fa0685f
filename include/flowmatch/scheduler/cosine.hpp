/// @file cosine.hpp
/// @brief The cosine scheduler: α_t = sin(πt/2), σ_t = cos(πt/2).
#pragma once

#include <cmath>
#include <numbers>
#include <stdexcept>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Cosine scheduler (α_t² + σ_t² = 1):
///
///     α_t = sin(πt/2),   σ_t = cos(πt/2),   α̇_t = (π/2)·σ_t,   σ̇_t = −(π/2)·α_t,
///     ρ(t) = tan(πt/2)  ⇒  snr_inverse(ρ) = (2/π)·atan(ρ).
///
/// σ_t is evaluated as sin(π(1 − t)/2), so σ_1 = 0 exactly. Defined on all of [0, 1].
template <class Scalar = double>
class Cosine {
 public:
  using scalar_type = Scalar;

  /// α_t = sin(πt/2).
  Scalar alpha(Scalar t) const { return std::sin(half_pi * checked(t)); }
  /// σ_t = cos(πt/2) = sin(π(1 − t)/2).
  Scalar sigma(Scalar t) const { return std::sin(half_pi * (Scalar(1) - checked(t))); }
  /// α̇_t = (π/2)·σ_t.
  Scalar d_alpha(Scalar t) const { return half_pi * sigma(t); }
  /// σ̇_t = −(π/2)·α_t.
  Scalar d_sigma(Scalar t) const { return -half_pi * alpha(t); }
  /// t = (2/π)·atan(ρ), with ρ = +inf mapped to 1; throws std::domain_error for ρ < 0 or NaN.
  Scalar snr_inverse(Scalar rho) const {
    detail::require_snr("Cosine::snr_inverse: rho", rho);
    if (std::isinf(rho)) return Scalar(1);
    return std::atan(rho) / half_pi;
  }

 private:
  static constexpr Scalar half_pi = std::numbers::pi_v<Scalar> / Scalar(2);

  static Scalar checked(Scalar t) {
    detail::require_unit_time("Cosine: t", t);
    return t;
  }
};

}  // namespace flowmatch
