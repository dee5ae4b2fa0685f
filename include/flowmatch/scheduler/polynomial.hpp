/// @file polynomial.hpp
/// @brief The polynomial convex scheduler: α_t = tⁿ, σ_t = 1 − tⁿ.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Polynomial convex scheduler with exponent n > 0:
///
///     α_t = tⁿ,   σ_t = 1 − tⁿ,   α̇_t = n·tⁿ⁻¹,   σ̇_t = −n·tⁿ⁻¹,
///     ρ(t) = tⁿ/(1 − tⁿ)  ⇒  snr_inverse(ρ) = (ρ/(1 + ρ))^(1/n),
///     kappa_inverse(κ) = κ^(1/n).
///
/// n = 1 is CondOT. For n < 1 the derivatives α̇ and σ̇ are infinite at t = 0; d_alpha and
/// d_sigma throw std::domain_error there. σ_t is evaluated as −expm1(n·log t), which keeps its
/// full relative precision as t → 1.
template <class Scalar = double>
class Polynomial {
 public:
  using scalar_type = Scalar;

  /// @param exponent n, finite and > 0; otherwise throws std::invalid_argument.
  explicit Polynomial(Scalar exponent) : exponent_(exponent) {
    detail::require_positive("Polynomial: exponent", exponent);
  }

  /// The exponent n.
  [[nodiscard]] Scalar exponent() const { return exponent_; }

  /// α_t = tⁿ.
  Scalar alpha(Scalar t) const { return std::pow(checked(t), exponent_); }
  /// σ_t = 1 − tⁿ = −expm1(n·log t).
  Scalar sigma(Scalar t) const { return Scalar(0) - std::expm1(exponent_ * std::log(checked(t))); }
  /// α̇_t = n·tⁿ⁻¹; throws std::domain_error at t = 0 when n < 1 (infinite there).
  Scalar d_alpha(Scalar t) const { return rate("Polynomial::d_alpha", t); }
  /// σ̇_t = −n·tⁿ⁻¹; throws std::domain_error at t = 0 when n < 1 (infinite there).
  Scalar d_sigma(Scalar t) const { return -rate("Polynomial::d_sigma", t); }
  /// t = (ρ/(1 + ρ))^(1/n), with ρ = +inf mapped to 1; throws std::domain_error for ρ < 0 or NaN.
  Scalar snr_inverse(Scalar rho) const {
    detail::require_snr("Polynomial::snr_inverse: rho", rho);
    if (std::isinf(rho)) return Scalar(1);
    return std::pow(rho / (Scalar(1) + rho), Scalar(1) / exponent_);
  }
  /// t = κ^(1/n) (α_t = κ), for κ in [0, 1].
  Scalar kappa_inverse(Scalar kappa) const {
    detail::require_unit_time("Polynomial::kappa_inverse: kappa", kappa);
    return std::pow(kappa, Scalar(1) / exponent_);
  }

 private:
  static Scalar checked(Scalar t) {
    detail::require_unit_time("Polynomial: t", t);
    return t;
  }

  // n·tⁿ⁻¹, the common magnitude of α̇ and σ̇.
  Scalar rate(const char* member, Scalar t) const {
    if (checked(t) == Scalar(0) && exponent_ < Scalar(1)) {
      detail::reject_argument<std::domain_error>(
          detail::argument_name(member, "t"),
          "is 0, where the derivative is infinite for exponent n = " + detail::to_text(exponent_) +
              " < 1",
          "t in (0, 1]");
    }
    return exponent_ * std::pow(t, exponent_ - Scalar(1));
  }

  Scalar exponent_;
};

}  // namespace flowmatch
