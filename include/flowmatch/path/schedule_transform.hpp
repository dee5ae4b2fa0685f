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
///
/// The VP and linear-VP schedulers have σ̇ = ∞ at r = 1, so their transformed field cannot be
/// evaluated there. sample_transformed() samples through the transform all the same, exactly:
/// it integrates ū on [0, r_e] with r_e < 1, maps back to the original flow's state
/// x_{t_e} = x̄_{r_e}/s_{r_e} at t_e = t_{r_e}, and finishes with u on [t_e, 1]; since
/// s_1 = 1 and t_1 = 1, its result is x̄_1 = x_1.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <functional>
#include <initializer_list>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/field_adapter.hpp"
#include "flowmatch/scheduler/scheduler.hpp"
#include "flowmatch/solver/integrate.hpp"

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
concept SchedulerPair = Scheduler<From> && SchedulerOf<To, typename From::scalar_type>;

/// t_r, ṫ_r, s_r and ṡ_r at time @p r in [0, 1] of scheduler @p to, relative to @p from.
/// Throws std::domain_error for r outside [0, 1] and where the change is singular.
template <Scheduler From, SchedulerOf<typename From::scalar_type> To>
ScheduleChange<typename To::scalar_type> schedule_change(const From& from, const To& to,
                                                         typename To::scalar_type r) {
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
    detail::reject_argument<std::domain_error>(
        "schedule_change: r",
        detail::is_value(r) +
            ", where dt/dr is infinite (the source scheduler's alpha/sigma is "
            "stationary at t = " +
            detail::to_text(time) + ")",
        "a time where the change of scheduler is regular");
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
/// @p To: ū_r(x) = (ṡ_r/s_r)·x + ṫ_r·s_r·u_{t_r}(x/s_r). An in-place VelocityField that offers
/// every member of the field protocol the wrapped field offers; with J the Jacobian of u at
/// (t_r, x/s_r), (∂ū_r/∂x) = (ṡ_r/s_r)·I + ṫ_r·J, so
///
///     ∇·ū_r(x) = d·ṡ_r/s_r + ṫ_r·(∇·u_{t_r})(x/s_r),
///     (∂ū_r/∂x)·v = (ṡ_r/s_r)·v + ṫ_r·J·v,     (∂ū_r/∂x)ᵀ·w = (ṡ_r/s_r)·w + ṫ_r·Jᵀ·w,
///     ∇_x(∇·ū_r)(x) = (ṫ_r/s_r)·∇(∇·u_{t_r})(x/s_r).
///
/// Holds the schedulers by value and the field as every adapter does (field_adapter.hpp: by
/// value, or std::cref(field)). x/s_r goes to a thread-local buffer, so that calls do not
/// allocate once it is sized and concurrent calls are safe. Every member throws
/// std::domain_error where the change of scheduler is singular (see schedule_change). Like
/// every adapter, it checks the shapes of its arguments but not the values of x on each call:
/// the integrator and the functions that take a batch check those once.
template <class Field, Scheduler From, SchedulerOf<typename From::scalar_type> To>
requires HeldVelocityField<Field, typename From::scalar_type>
class ScheduleTransformedField
    : public FieldAdapter<ScheduleTransformedField<Field, From, To>, Field> {
  using Base = FieldAdapter<ScheduleTransformedField<Field, From, To>, Field>;

 public:
  using scalar_type = typename From::scalar_type;

  /// @param field a velocity field of scheduler @p from; @param to the new scheduler.
  ScheduleTransformedField(Field field, From from, To to)
      : Base(std::move(field)), from_(std::move(from)), to_(std::move(to)) {}

  /// The scheduler the wrapped field was trained under.
  [[nodiscard]] const From& from() const { return from_; }
  /// The scheduler of the transformed field.
  [[nodiscard]] const To& to() const { return to_; }

  /// Every plain member of the wrapped field, for scalar_type.
  template <class Tag, class S>
  static constexpr bool offers =
      std::same_as<S, scalar_type> ? Tag::template offered_by<typename Base::wrapped_type, S>
                                   : false;

  /// ū_r(x) (out may alias x).
  void forward(capability::Velocity tag, scalar_type r, const ConstMatrixRef<scalar_type>& x,
               MatrixRef<scalar_type> out) const {
    const auto change = schedule_change(from_, to_, r);
    const Matrix<scalar_type>& scaled = scale_points(x, change);
    tag.call(this->field(), change.time, scaled, out);
    // (ṡ/s)·x = ṡ·(x/s), so x is not read again after out is written.
    out = (change.d_time * change.scale) * out + change.d_scale * scaled;
  }

  /// ∇·ū_r(x).
  void forward(capability::Divergence tag, scalar_type r, const ConstMatrixRef<scalar_type>& x,
               VectorRef<scalar_type> out) const {
    const auto change = schedule_change(from_, to_, r);
    tag.call(this->field(), change.time, scale_points(x, change), out);
    out.array() = change.d_time * out.array() + identity_trace(x, change);
  }

  /// ū_r(x) and ∇·ū_r(x) from the wrapped field's single pass.
  void forward(capability::VelocityDivergence tag, scalar_type r,
               const ConstMatrixRef<scalar_type>& x, MatrixRef<scalar_type> velocity,
               VectorRef<scalar_type> divergence) const {
    const auto change = schedule_change(from_, to_, r);
    const Matrix<scalar_type>& scaled = scale_points(x, change);
    tag.call(this->field(), change.time, scaled, velocity, divergence);
    velocity = (change.d_time * change.scale) * velocity + change.d_scale * scaled;
    divergence.array() = change.d_time * divergence.array() + identity_trace(x, change);
  }

  /// (∂ū_r/∂x)·v or (∂ū_r/∂x)ᵀ·w (out must not alias the direction).
  template <class Tag>
  requires(std::same_as<Tag, capability::Jvp> || std::same_as<Tag, capability::Vjp>) void forward(
      Tag tag, scalar_type r, const ConstMatrixRef<scalar_type>& x,
      const ConstMatrixRef<scalar_type>& direction, MatrixRef<scalar_type> out) const {
    const auto change = schedule_change(from_, to_, r);
    tag.call(this->field(), change.time, scale_points(x, change), direction, out);
    out = change.d_time * out + (change.d_scale / change.scale) * direction;
  }

  /// ū_r(x), (∂ū_r/∂x)ᵀ·w and ∇_x(∇·ū_r)(x) from the wrapped field's single pass (the outputs
  /// must not alias w).
  void forward(capability::VelocityVjpDivergenceGradient tag, scalar_type r,
               const ConstMatrixRef<scalar_type>& x, const ConstMatrixRef<scalar_type>& cotangent,
               MatrixRef<scalar_type> velocity, MatrixRef<scalar_type> vjp,
               MatrixRef<scalar_type> divergence_gradient) const {
    const auto change = schedule_change(from_, to_, r);
    const Matrix<scalar_type>& scaled = scale_points(x, change);
    tag.call(this->field(), change.time, scaled, cotangent, velocity, vjp, divergence_gradient);
    velocity = (change.d_time * change.scale) * velocity + change.d_scale * scaled;
    vjp = change.d_time * vjp + (change.d_scale / change.scale) * cotangent;
    divergence_gradient *= change.d_time / change.scale;
  }

  /// ∇_x(∇·ū_r)(x).
  void forward(capability::DivergenceGradient tag, scalar_type r,
               const ConstMatrixRef<scalar_type>& x, MatrixRef<scalar_type> out) const {
    const auto change = schedule_change(from_, to_, r);
    tag.call(this->field(), change.time, scale_points(x, change), out);
    out *= change.d_time / change.scale;
  }

 private:
  /// x/s_r in this thread's buffer.
  static const Matrix<scalar_type>& scale_points(const ConstMatrixRef<scalar_type>& x,
                                                 const ScheduleChange<scalar_type>& change) {
    thread_local Matrix<scalar_type> scaled;
    scaled.resize(x.rows(), x.cols());
    scaled = x / change.scale;
    return scaled;
  }

  /// d·ṡ_r/s_r, the divergence of the (ṡ_r/s_r)·x term.
  static scalar_type identity_trace(const ConstMatrixRef<scalar_type>& x,
                                    const ScheduleChange<scalar_type>& change) {
    return static_cast<scalar_type>(x.rows()) * change.d_scale / change.scale;
  }

  From from_;
  To to_;
};

/// The velocity field @p field of scheduler @p from re-expressed for scheduler @p to.
template <class Field, Scheduler From, SchedulerOf<typename From::scalar_type> To>
ScheduleTransformedField<Field, From, To> transform_schedule(Field field, From from, To to) {
  return {std::move(field), std::move(from), std::move(to)};
}

/// Samples the velocity field @p field of scheduler @p from under scheduler @p to: integrates
/// the transformed field ū (see transform_schedule) from the noise @p x0 at r = times[0] through
/// the increasing grid @p times, and is exact where ū is singular at r = 1 (VP, linear VP).
///
/// If the grid ends at r = 1, ū is integrated only up to r_e = max(1 − @p end_gap, the last grid
/// time before 1); the state there is mapped back to the original flow, x_{t_e} = x̄_{r_e}/s_{r_e}
/// with t_e = t_{r_e} (schedule_change), and @p field finishes the path on [t_e, 1]. As s_1 = 1,
/// the final state is x̄_1 = x_1. The result is that of integrate() over @p times: its
/// trajectory (with options.return_trajectory) holds x̄ at every grid time, and its statistics
/// count both integrations (steps of ū in r, of u in t).
///
/// @throws std::invalid_argument unless @p times has at least two entries with
///         times.front() < times.back() and 0 < end_gap < 1; otherwise as integrate() and
///         schedule_change().
template <Scheduler From, SchedulerOf<typename From::scalar_type> To,
          VelocityField<typename From::scalar_type> Field,
          MatrixOf<typename From::scalar_type> Derived>
SolveResult<typename From::scalar_type> sample_transformed(
    const Field& field, const From& from, const To& to, const Eigen::MatrixBase<Derived>& x0,
    std::span<const typename From::scalar_type> times,
    const SolverOptions<typename From::scalar_type>& options = {},
    typename From::scalar_type end_gap = typename From::scalar_type(1e-4)) {
  using Scalar = typename From::scalar_type;
  if (times.size() < 2 || !(times.front() < times.back())) {
    detail::reject_argument("sample_transformed: times",
                            "has " + detail::to_text(times.size()) + " entries from " +
                                (times.empty() ? std::string("none")
                                               : detail::to_text(times.front()) + " to " +
                                                     detail::to_text(times.back())),
                            "at least two times, increasing from the first to the last");
  }
  if (!(end_gap > Scalar(0) && end_gap < Scalar(1))) {
    detail::reject_argument("sample_transformed: end_gap", detail::is_value(end_gap), "in (0, 1)");
  }
  const auto transformed = transform_schedule(std::cref(field), from, to);
  if (times.back() != Scalar(1)) return integrate(transformed, x0, times, options);

  // ū on the grid up to r_e (appended to the grid unless it is a grid time).
  const Scalar switch_time = std::max(Scalar(1) - end_gap, times[times.size() - 2]);
  std::vector<Scalar> head(times.begin(), times.end() - 1);
  const bool appended = head.back() != switch_time;
  if (appended) head.push_back(switch_time);
  SolveResult<Scalar> result;
  if (head.size() > 1) {
    result = integrate(transformed, x0, std::span<const Scalar>(head), options);
    if (appended && options.return_trajectory) result.trajectory.pop_back();
  } else {
    result.state = x0;
    if (options.return_trajectory) result.trajectory.push_back(x0);
  }

  // x_{t_e} = x̄_{r_e}/s_{r_e}, then u on [t_e, 1].
  const ScheduleChange<Scalar> change = schedule_change(from, to, switch_time);
  result.state /= change.scale;
  if (change.time < Scalar(1)) {
    const std::array<Scalar, 2> tail_grid{change.time, Scalar(1)};
    SolverOptions<Scalar> tail_options = options;
    tail_options.return_trajectory = false;
    const SolveResult<Scalar> tail =
        integrate(field, result.state, std::span<const Scalar>(tail_grid), tail_options);
    result.state = tail.state;
    SolverStats& stats = result.stats;
    if (stats.accepted == 0) {
      stats.min_step = tail.stats.min_step;
    } else if (tail.stats.accepted > 0) {
      stats.min_step = std::min(stats.min_step, tail.stats.min_step);
    }
    stats.max_step = std::max(stats.max_step, tail.stats.max_step);
    stats.nfe += tail.stats.nfe;
    stats.accepted += tail.stats.accepted;
    stats.rejected += tail.stats.rejected;
  }
  if (options.return_trajectory) result.trajectory.push_back(result.state);
  result.times.assign(times.begin(), times.end());
  return result;
}

/// sample_transformed over a grid written as a braced list of times, e.g. {0.0, 0.5, 1.0}.
template <Scheduler From, SchedulerOf<typename From::scalar_type> To,
          VelocityField<typename From::scalar_type> Field,
          MatrixOf<typename From::scalar_type> Derived>
SolveResult<typename From::scalar_type> sample_transformed(
    const Field& field, const From& from, const To& to, const Eigen::MatrixBase<Derived>& x0,
    std::initializer_list<typename From::scalar_type> times,
    const SolverOptions<typename From::scalar_type>& options = {},
    typename From::scalar_type end_gap = typename From::scalar_type(1e-4)) {
  return sample_transformed(field, from, to, x0, detail::grid_span(times), options, end_gap);
}

/// Samples @p field of scheduler @p from under scheduler @p to from the noise @p x0 at r = 0
/// to r = 1 (the grid {0, 1} of the overload above).
template <Scheduler From, SchedulerOf<typename From::scalar_type> To,
          VelocityField<typename From::scalar_type> Field,
          MatrixOf<typename From::scalar_type> Derived>
SolveResult<typename From::scalar_type> sample_transformed(
    const Field& field, const From& from, const To& to, const Eigen::MatrixBase<Derived>& x0,
    const SolverOptions<typename From::scalar_type>& options = {}) {
  using Scalar = typename From::scalar_type;
  const std::array<Scalar, 2> grid{Scalar(0), Scalar(1)};
  return sample_transformed(field, from, to, x0, std::span<const Scalar>(grid), options);
}

}  // namespace flowmatch
