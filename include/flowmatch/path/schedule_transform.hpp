/// @file schedule_transform.hpp
/// @brief Re-expressing a velocity field trained under one scheduler as the velocity field of
/// another scheduler with the same endpoints.
///
/// Let u_t be the marginal velocity field of the path x_t = α_t·x₁ + σ_t·x₀ (scheduler "from")
/// and ᾱ_r, σ̄_r another scheduler ("to"). Both paths pass through the same distributions up to
/// a rescaling: with ρ = α/σ and ρ̄ = ᾱ/σ̄,
///
///     t_r = ρ⁻¹(ρ̄(r)),   s_r = σ̄_r/σ_{t_r} = ᾱ_r/α_{t_r},   x̄_r = s_r·x_{t_r},
///
/// so the velocity field of the new path is
///
///     ū_r(x) = (ṡ_r/s_r)·x + ṫ_r·s_r·u_{t_r}(x/s_r).
///
/// ṫ_r is computed through the bounded increasing γ = α/(α + σ) = ρ/(1 + ρ) instead of ρ, so that
/// it stays finite where ρ is infinite (r = 1):
///
///     ṫ_r = γ̄'(r)/γ'(t_r),   γ' = (α̇·σ − α·σ̇)/(α + σ)².
///
/// s_r uses whichever of σ_{t_r}, α_{t_r} is larger as its denominator (σ near r = 0, α near
/// r = 1), and ṡ_r follows by the quotient rule, e.g. ṡ = (σ̄'·σ − σ̄·σ̇·ṫ)/σ².
///
/// Where the new path needs a time the old scheduler cannot reach (e.g. a VP "from", whose
/// ρ(0) > 0, at r = 0 of CondOT), where γ'(t_r) = 0 (e.g. Polynomial(n > 1) "from" at r = 0),
/// or where a scheduler's derivative is singular, std::domain_error is thrown.
#pragma once

#include <concepts>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The time change and scale relating two schedulers at one time r (see the file comment).
template <class Scalar>
struct ScheduleChange {
  Scalar time;     ///< t_r, the time of the "from" scheduler with the same ρ as r.
  Scalar d_time;   ///< ṫ_r = dt_r/dr.
  Scalar scale;    ///< s_r = σ̄_r/σ_{t_r} = ᾱ_r/α_{t_r}.
  Scalar d_scale;  ///< ṡ_r = ds_r/dr.
};

/// Two schedulers over the same scalar type.
template <class From, class To>
concept SchedulerPair = Scheduler<From> && Scheduler<To> &&
    std::same_as<typename From::scalar_type, typename To::scalar_type>;

/// t_r, ṫ_r, s_r and ṡ_r at time @p r in [0, 1] of scheduler @p to, relative to @p from.
/// Throws std::domain_error for r outside [0, 1] and where the change is singular.
template <Scheduler From, Scheduler To>
requires SchedulerPair<From, To> ScheduleChange<typename To::scalar_type> schedule_change(
    const From& from, const To& to, typename To::scalar_type r) {
  using Scalar = typename To::scalar_type;
  const auto target = scheduler_values(to, r);
  const Scalar target_snr = target.sigma == Scalar(0) ? std::numeric_limits<Scalar>::infinity()
                                                      : target.alpha / target.sigma;
  const Scalar time = from.snr_inverse(target_snr);
  const auto source = scheduler_values(from, time);
  // γ' = (α̇σ − ασ̇)/(α + σ)² for both schedulers.
  const Scalar target_sum = target.alpha + target.sigma;
  const Scalar source_sum = source.alpha + source.sigma;
  const Scalar target_rate =
      (target.d_alpha * target.sigma - target.alpha * target.d_sigma) / (target_sum * target_sum);
  const Scalar source_rate =
      (source.d_alpha * source.sigma - source.alpha * source.d_sigma) / (source_sum * source_sum);
  if (source_rate == Scalar(0)) {
    throw std::domain_error(
        "schedule_change: dt/dr is infinite at r = " + detail::to_text(r) +
        " (the source scheduler's alpha/sigma is stationary at t = " + detail::to_text(time) + ")");
  }
  const Scalar d_time = target_rate / source_rate;
  if (source.sigma >= source.alpha) {
    const Scalar scale = target.sigma / source.sigma;
    const Scalar d_scale =
        (target.d_sigma * source.sigma - target.sigma * source.d_sigma * d_time) /
        (source.sigma * source.sigma);
    return {time, d_time, scale, d_scale};
  }
  const Scalar scale = target.alpha / source.alpha;
  const Scalar d_scale = (target.d_alpha * source.alpha - target.alpha * source.d_alpha * d_time) /
                         (source.alpha * source.alpha);
  return {time, d_time, scale, d_scale};
}

/// The velocity field u of scheduler @p From re-expressed as the velocity field ū of scheduler
/// @p To: ū_r(x) = (ṡ_r/s_r)·x + ṫ_r·s_r·u_{t_r}(x/s_r). An in-place VelocityField; it also
/// offers divergence and jvp when the wrapped field does:
///
///     ∇·ū_r(x) = d·ṡ_r/s_r + ṫ_r·(∇·u_{t_r})(x/s_r),
///     (∂ū_r/∂x)·v = (ṡ_r/s_r)·v + ṫ_r·(∂u_{t_r}/∂x)(x/s_r)·v.
///
/// Holds the field and both schedulers by value (wrap a large field in std::cref, which forwards
/// only the velocity, not divergence or jvp). Each call allocates one d×N temporary for x/s_r,
/// so concurrent calls are safe.
template <class Field, Scheduler From, Scheduler To>
requires SchedulerPair<From, To> && VelocityField<Field, typename From::scalar_type>
class ScheduleTransformedField {
 public:
  using scalar_type = typename From::scalar_type;

  /// @param field a velocity field of scheduler @p from; @param to the new scheduler.
  ScheduleTransformedField(Field field, From from, To to)
      : field_(std::move(field)), from_(std::move(from)), to_(std::move(to)) {}

  /// Evaluates ū_r at the d×N batch @p x into @p out (d×N; may alias @p x).
  /// Throws std::invalid_argument for a wrong shape or non-finite x, std::domain_error where
  /// the change of scheduler is singular (see schedule_change).
  void operator()(scalar_type r, const ConstMatrixRef<scalar_type>& x,
                  MatrixRef<scalar_type> out) const {
    detail::require_shape("ScheduleTransformedField: out", out, x.rows(), x.cols());
    const auto change = checked_change(r, x);
    const Matrix<scalar_type> scaled = x / change.scale;
    evaluate_velocity<scalar_type>(field_, change.time, scaled, out);
    // (ṡ/s)·x = ṡ·(x/s), so x is not read again after out is written.
    out = (change.d_time * change.scale) * out + change.d_scale * scaled;
  }

  /// The exact divergence ∇·ū_r at each column of @p x into the length-N @p out.
  void divergence(scalar_type r, const ConstMatrixRef<scalar_type>& x,
                  VectorRef<scalar_type> out) const requires HasDivergence<Field, scalar_type> {
    detail::require_shape("ScheduleTransformedField::divergence: out", out, x.cols(), 1);
    const auto change = checked_change(r, x);
    const Matrix<scalar_type> scaled = x / change.scale;
    field_.divergence(change.time, scaled, out);
    out.array() = change.d_time * out.array() +
                  static_cast<scalar_type>(x.rows()) * change.d_scale / change.scale;
  }

  /// The Jacobian-vector product (∂ū_r/∂x)·tangent at each column of @p x into @p out (d×N;
  /// must not alias @p tangent).
  void jvp(scalar_type r, const ConstMatrixRef<scalar_type>& x,
           const ConstMatrixRef<scalar_type>& tangent,
           MatrixRef<scalar_type> out) const requires HasJvp<Field, scalar_type> {
    detail::require_shape("ScheduleTransformedField::jvp: tangent", tangent, x.rows(), x.cols());
    detail::require_finite("ScheduleTransformedField::jvp: tangent", tangent);
    detail::require_shape("ScheduleTransformedField::jvp: out", out, x.rows(), x.cols());
    const auto change = checked_change(r, x);
    const Matrix<scalar_type> scaled = x / change.scale;
    field_.jvp(change.time, scaled, tangent, out);
    out = change.d_time * out + (change.d_scale / change.scale) * tangent;
  }

  /// The wrapped field.
  [[nodiscard]] const Field& field() const { return field_; }
  /// The scheduler the wrapped field was trained under.
  [[nodiscard]] const From& from() const { return from_; }
  /// The scheduler of the transformed field.
  [[nodiscard]] const To& to() const { return to_; }

 private:
  ScheduleChange<scalar_type> checked_change(scalar_type r,
                                             const ConstMatrixRef<scalar_type>& x) const {
    detail::require_finite("ScheduleTransformedField: x", x);
    return schedule_change(from_, to_, r);
  }

  Field field_;
  From from_;
  To to_;
};

/// The velocity field @p field of scheduler @p from re-expressed for scheduler @p to.
template <class Field, Scheduler From, Scheduler To>
requires SchedulerPair<From, To> && VelocityField<Field, typename From::scalar_type>
    ScheduleTransformedField<Field, From, To> transform_schedule(Field field, From from, To to) {
  return {std::move(field), std::move(from), std::move(to)};
}

}  // namespace flowmatch
