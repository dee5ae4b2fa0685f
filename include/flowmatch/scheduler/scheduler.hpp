/// @file scheduler.hpp
/// @brief The Scheduler concept: the coefficients α_t, σ_t of an affine probability path.
///
/// An affine path mixes a source sample x₀ (noise, t = 0) and a data sample x₁ (t = 1) as
/// x_t = α_t·x₁ + σ_t·x₀, with α_0 = 0, σ_0 = 1, α_1 = 1, σ_1 = 0. A scheduler supplies α_t, σ_t,
/// their time derivatives α̇_t, σ̇_t, and the inverse of the signal-to-noise ratio
/// ρ(t) = α_t/σ_t, which must be strictly increasing on [0, 1].
///
/// To write a new scheduler, give a type a member `scalar_type` and the const members
///
///     scalar_type alpha(scalar_type t);        // α_t
///     scalar_type sigma(scalar_type t);        // σ_t
///     scalar_type d_alpha(scalar_type t);      // α̇_t = dα/dt
///     scalar_type d_sigma(scalar_type t);      // σ̇_t = dσ/dt
///     scalar_type snr_inverse(scalar_type rho); // t with α_t/σ_t = ρ, for ρ in [0, +inf]
///
/// Convex schedulers (σ_t = 1 − α_t) also provide `kappa_inverse(kappa)`: the t with α_t = κ.
/// Every member throws std::domain_error for t outside [0, 1] and at the points where its
/// formula is singular, rather than returning a non-finite value.
#pragma once

#include <concepts>
#include <stdexcept>
#include <string>

#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A type that supplies the coefficients of an affine probability path.
template <class S>
concept Scheduler = requires(const S& scheduler, typename S::scalar_type t) {
  typename S::scalar_type;
  requires std::floating_point<typename S::scalar_type>;
  { scheduler.alpha(t) } -> std::convertible_to<typename S::scalar_type>;
  { scheduler.sigma(t) } -> std::convertible_to<typename S::scalar_type>;
  { scheduler.d_alpha(t) } -> std::convertible_to<typename S::scalar_type>;
  { scheduler.d_sigma(t) } -> std::convertible_to<typename S::scalar_type>;
  { scheduler.snr_inverse(t) } -> std::convertible_to<typename S::scalar_type>;
};

/// A Scheduler whose scalar type is @p Scalar.
template <class S, class Scalar>
concept SchedulerOf = Scheduler<S> && std::same_as<typename S::scalar_type, Scalar>;

/// A scheduler with σ_t = 1 − α_t, which can also invert α: kappa_inverse(κ) = t with α_t = κ.
template <class S>
concept ConvexScheduler = Scheduler<S> && requires(const S& scheduler, typename S::scalar_type k) {
  { scheduler.kappa_inverse(k) } -> std::convertible_to<typename S::scalar_type>;
};

/// The four coefficients of a scheduler at one time.
template <class Scalar>
struct SchedulerValues {
  Scalar alpha;    ///< α_t, the signal coefficient.
  Scalar sigma;    ///< σ_t, the noise coefficient.
  Scalar d_alpha;  ///< α̇_t.
  Scalar d_sigma;  ///< σ̇_t.
};

/// Evaluates all four coefficients of @p scheduler at @p t.
template <Scheduler S>
SchedulerValues<typename S::scalar_type> scheduler_values(const S& scheduler,
                                                          typename S::scalar_type t) {
  return {scheduler.alpha(t), scheduler.sigma(t), scheduler.d_alpha(t), scheduler.d_sigma(t)};
}

namespace detail {

/// Throws std::domain_error unless @p rho is a signal-to-noise ratio in [0, +inf]
/// (the argument of snr_inverse).
template <class Scalar>
void require_snr(const char* name, Scalar rho) {
  if (!(rho >= Scalar(0))) {
    reject_argument<std::domain_error>(name, is_value(rho), ">= 0 (+inf allowed)");
  }
}

}  // namespace detail

}  // namespace flowmatch
