/// @file vp.hpp
/// @brief The variance-preserving scheduler of score-based diffusion (linear β schedule).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Variance-preserving scheduler with a linear noise rate β from β_min (data end) to β_max
/// (noise end). With u = 1 − t and Δ = β_max − β_min,
///
///     T(t)  = ½u²Δ + u·β_min               (integrated noise rate, T(1) = 0)
///     α_t   = exp(−½T(t)),                 α̇_t = ½(uΔ + β_min)·α_t
///     σ_t   = sqrt(1 − α_t²) = sqrt(−expm1(−T(t))),   σ̇_t = −α_t·α̇_t/σ_t
///
/// so α_t² + σ_t² = 1. The source end is not exact: α_0 = exp(−(β_max + β_min)/4) is small but
/// not 0 (≈ 0.0066 for the defaults), so x_0 still holds a trace of the data.
///
/// At t = 1, σ_1 = 0 and σ̇ = −α·α̇/σ is infinite when β_min > 0 (σ_t ~ sqrt(β_min·u)):
/// d_sigma throws std::domain_error there. When β_min = 0, σ_t ~ u·sqrt(β_max/2) and d_sigma(1)
/// returns the finite limit −sqrt(β_max/2).
///
/// snr_inverse: ρ² = α²/σ² = 1/(e^T − 1), so T = log1p(1/ρ²), and u ≥ 0 solves
/// ½Δu² + β_min·u − T = 0, evaluated without cancellation as
/// u = 2T/(β_min + sqrt(β_min² + 2ΔT)) (which also covers Δ = 0, u = T/β_min). The reachable
/// range is ρ ∈ [ρ(0), +inf] with ρ(0) = α_0/σ_0 > 0; a smaller ρ throws std::domain_error
/// (values within 8 ulps below ρ(0), rounding of α_0/σ_0, map to t = 0).
template <class Scalar = double>
class VP {
 public:
  using scalar_type = Scalar;

  /// @param beta_min β_min ≥ 0, @param beta_max β_max ≥ β_min and β_max > 0, both finite;
  /// otherwise throws std::invalid_argument (β_max = 0 would make α_t ≡ 1).
  explicit VP(Scalar beta_min = Scalar(0.1), Scalar beta_max = Scalar(20))
      : beta_min_(beta_min), beta_max_(beta_max) {
    detail::require_finite_value("VP: beta_max", beta_max);
    detail::require_nonnegative("VP: beta_min", beta_min);
    if (!(beta_max >= beta_min && beta_max > Scalar(0))) {
      detail::reject_argument("VP: beta_max", detail::is_value(beta_max),
                              ">= beta_min (" + detail::to_text(beta_min) + ") and > 0");
    }
  }

  /// β_min, the noise rate at the data end t = 1.
  [[nodiscard]] Scalar beta_min() const { return beta_min_; }
  /// β_max, the noise rate at the source end t = 0.
  [[nodiscard]] Scalar beta_max() const { return beta_max_; }

  /// α_t = exp(−½T(t)).
  Scalar alpha(Scalar t) const { return std::exp(Scalar(-0.5) * integrated_rate(t)); }
  /// σ_t = sqrt(−expm1(−T(t))).
  Scalar sigma(Scalar t) const { return std::sqrt(-std::expm1(-integrated_rate(t))); }
  /// α̇_t = ½(uΔ + β_min)·α_t with u = 1 − t.
  Scalar d_alpha(Scalar t) const { return Scalar(0.5) * rate(t) * alpha(t); }
  /// σ̇_t = −α_t·α̇_t/σ_t; at t = 1 throws std::domain_error if β_min > 0 (infinite there) and
  /// returns −sqrt(β_max/2) if β_min = 0.
  Scalar d_sigma(Scalar t) const {
    const Scalar noise = sigma(t);
    if (noise == Scalar(0)) {
      if (beta_min_ > Scalar(0)) {
        detail::reject_argument<std::domain_error>(
            "VP::d_sigma: t",
            detail::is_value(t) +
                ", where sigma_t = 0 and the derivative is infinite (beta_min = " +
                detail::to_text(beta_min_) + " > 0)",
            "t < 1");
      }
      return -std::sqrt(Scalar(0.5) * beta_max_);
    }
    return -alpha(t) * d_alpha(t) / noise;
  }
  /// The t with α_t/σ_t = ρ, for ρ in [ρ(0), +inf] (+inf maps to 1); throws std::domain_error
  /// for ρ < 0, NaN or ρ < ρ(0).
  Scalar snr_inverse(Scalar rho) const {
    detail::require_snr("VP::snr_inverse: rho", rho);
    const Scalar rho_at_source = alpha(Scalar(0)) / sigma(Scalar(0));
    if (rho <= rho_at_source) {
      if (rho < rho_at_source * (Scalar(1) - Scalar(8) * std::numeric_limits<Scalar>::epsilon())) {
        detail::reject_argument<std::domain_error>(
            "VP::snr_inverse: rho", detail::is_value(rho),
            ">= rho(0) = " + detail::to_text(rho_at_source) + " (alpha_0 > 0)");
      }
      return Scalar(0);
    }
    if (std::isinf(rho)) return Scalar(1);
    // T = log1p(1/ρ²), written to avoid overflow of ρ² and 1/ρ².
    const Scalar rate_integral = rho >= Scalar(1)
                                     ? std::log1p(Scalar(1) / (rho * rho))
                                     : std::log1p(rho * rho) - Scalar(2) * std::log(rho);
    if (rate_integral == Scalar(0)) return Scalar(1);
    const Scalar delta = beta_max_ - beta_min_;
    const Scalar remaining =
        Scalar(2) * rate_integral /
        (beta_min_ + std::sqrt(beta_min_ * beta_min_ + Scalar(2) * delta * rate_integral));
    return std::max(Scalar(0), Scalar(1) - remaining);
  }

 private:
  // T(t) = ½u²Δ + u·β_min with u = 1 − t.
  Scalar integrated_rate(Scalar t) const {
    detail::require_unit_time("VP: t", t);
    const Scalar remaining = Scalar(1) - t;
    return remaining * (beta_min_ + Scalar(0.5) * remaining * (beta_max_ - beta_min_));
  }
  // −dT/dt = uΔ + β_min, the noise rate β at time t.
  Scalar rate(Scalar t) const {
    detail::require_unit_time("VP: t", t);
    return (Scalar(1) - t) * (beta_max_ - beta_min_) + beta_min_;
  }

  Scalar beta_min_;
  Scalar beta_max_;
};

}  // namespace flowmatch
