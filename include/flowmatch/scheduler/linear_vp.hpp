/// @file linear_vp.hpp
/// @brief The linear variance-preserving scheduler: α_t = t, σ_t = sqrt(1 − t²).
#pragma once

#include <cmath>
#include <stdexcept>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Linear variance-preserving scheduler (α_t² + σ_t² = 1):
///
///     α_t = t,   σ_t = sqrt(1 − t²),   α̇_t = 1,   σ̇_t = −t/sqrt(1 − t²),
///     ρ(t) = t/sqrt(1 − t²)  ⇒  snr_inverse(ρ) = ρ/sqrt(1 + ρ²).
///
/// σ̇ is infinite at t = 1 (σ_1 = 0): d_sigma throws std::domain_error there.
template <class Scalar = double>
class LinearVP {
 public:
  using scalar_type = Scalar;

  /// α_t = t.
  Scalar alpha(Scalar t) const { return checked(t); }
  /// σ_t = sqrt((1 − t)(1 + t)).
  Scalar sigma(Scalar t) const { return std::sqrt((Scalar(1) - checked(t)) * (Scalar(1) + t)); }
  /// α̇_t = 1.
  Scalar d_alpha(Scalar t) const {
    checked(t);
    return Scalar(1);
  }
  /// σ̇_t = −t/σ_t; throws std::domain_error at t = 1 (infinite there).
  Scalar d_sigma(Scalar t) const {
    const Scalar noise = sigma(t);
    if (noise == Scalar(0)) {
      detail::reject_argument<std::domain_error>(
          "LinearVP::d_sigma: t", "is 1, where sigma_t = 0 and the derivative is infinite",
          "t < 1");
    }
    return -t / noise;
  }
  /// t = ρ/sqrt(1 + ρ²), with ρ = +inf mapped to 1; throws std::domain_error for ρ < 0 or NaN.
  Scalar snr_inverse(Scalar rho) const {
    detail::require_snr("LinearVP::snr_inverse: rho", rho);
    if (std::isinf(rho)) return Scalar(1);
    return rho / std::hypot(Scalar(1), rho);
  }

 private:
  static Scalar checked(Scalar t) {
    detail::require_unit_time("LinearVP: t", t);
    return t;
  }
};

}  // namespace flowmatch
