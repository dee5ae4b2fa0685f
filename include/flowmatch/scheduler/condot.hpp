/// @file condot.hpp
/// @brief The conditional optimal-transport scheduler: α_t = t, σ_t = 1 − t.
#pragma once

#include <cmath>
#include <stdexcept>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Conditional optimal transport (rectified flow): α_t = t, σ_t = 1 − t, α̇ = 1, σ̇ = −1.
/// Straight-line paths between x₀ and x₁; convex. Defined on all of [0, 1].
template <class Scalar = double>
class CondOT {
 public:
  using scalar_type = Scalar;

  /// α_t = t.
  Scalar alpha(Scalar t) const { return checked(t); }
  /// σ_t = 1 − t.
  Scalar sigma(Scalar t) const { return Scalar(1) - checked(t); }
  /// α̇_t = 1.
  Scalar d_alpha(Scalar t) const {
    checked(t);
    return Scalar(1);
  }
  /// σ̇_t = −1.
  Scalar d_sigma(Scalar t) const {
    checked(t);
    return Scalar(-1);
  }
  /// t = ρ/(1 + ρ), with ρ = +inf mapped to 1.
  Scalar snr_inverse(Scalar rho) const {
    detail::require_snr("CondOT::snr_inverse: rho", rho);
    if (std::isinf(rho)) return Scalar(1);
    return rho / (Scalar(1) + rho);
  }
  /// t = κ (α_t = κ), for κ in [0, 1].
  Scalar kappa_inverse(Scalar kappa) const {
    detail::require_unit_time("CondOT::kappa_inverse: kappa", kappa);
    return kappa;
  }

 private:
  static Scalar checked(Scalar t) {
    detail::require_unit_time("CondOT: t", t);
    return t;
  }
};

}  // namespace flowmatch
