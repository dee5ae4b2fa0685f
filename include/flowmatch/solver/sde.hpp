/// @file sde.hpp
/// @brief Stochastic sampling with the marginals of a flow: for a velocity field u_t trained on
/// an affine path x_t = α_t x₁ + σ_t x₀ with a standard normal source, the SDE
///
///     dX = [u_t(X) + ½ g(t)² ∇log p_t(X)] dt + g(t) dW
///
/// has the same marginals p_t as the flow dx/dt = u_t(x), for any diffusion coefficient
/// g(t) ≥ 0 (diffusion.hpp). The score comes from the velocity on the path,
/// ∇log p_t = (α̇·x − α·u)/(σ·(α·σ̇ − σ·α̇)) (AffinePath::velocity_to_score), so each drift costs
/// one evaluation of the field.
///
/// Schemes (SdeMethod), with h = t_{n+1} − t_n, ΔW = W(t_{n+1}) − W(t_n), b(t, x) the drift and
/// g_n = g(t_n):
///
///   - euler_maruyama (weak order 1), one evaluation per step:
///         X_{n+1} = X_n + h·b(t_n, X_n) + g_n·ΔW;
///   - heun, stochastic Heun for additive noise (weak order 2 for smooth coefficients, by the
///     Itô–Taylor expansion; README, "Stochastic sampling", gives measured orders), two:
///         X̃ = X_n + h·b(t_n, X_n) + g_n·ΔW,
///         X_{n+1} = X_n + ½h·[b(t_n, X_n) + b(t_{n+1}, X̃)] + ½(g_n + g_{n+1})·ΔW.
///
/// With g ≡ 0 they are, bit for bit, the fixed-step methods euler and heun2 of integrate()
/// (same steps, same arithmetic).
///
/// The end t = 1: σ_1 = 0 there, where the score is undefined. A step with σ = 0 at either of
/// its ends is taken with g ≡ 0 in that step (the deterministic step of the scheme, drift u
/// alone, no noise). This changes no marginal of the continuous process: the flow and the SDE
/// carry p_{t_n} to the same p_{t_{n+1}}. So the score is never evaluated where σ = 0. It is
/// evaluated only at times where g > 0: where the conversion is undefined for another reason
/// (α·σ̇ − σ·α̇ = 0, as for Polynomial(n > 1) at t = 0), a g > 0 there throws
/// std::domain_error; the vanishing profile has g(0) = 0.
///
/// The path is an argument (an AffinePath, or a scheduler standing for its path): the velocity
/// alone does not determine the score, so there is no form without it.
///
/// Noise: the generator passed in gives one 64-bit key; sample n (column n − first_sample_index
/// of the batch) then draws its Brownian increments from its own counter-based stream of that
/// key and n (detail/sample_noise.hpp). The result therefore does not depend on how the field
/// splits the batch (ParallelField, any number of threads or chunk size), and the path of
/// sample n does not depend on the other samples in the batch (as far as the field's own
/// arithmetic does not). The increments are drawn at every step, whatever g, so the Brownian
/// path is a function of the key and of the fine grid (steps × brownian_substeps) alone.
///
/// Failures throw as in integrate.hpp: std::invalid_argument for bad options, shapes or a
/// non-finite initial state, std::domain_error for grid times outside [0, 1], and
/// flowmatch::numerical_error (with the time and the first bad sample) for a non-finite
/// velocity, drift or state, or a grid that needs more than max_steps steps.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/named_values.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/scheduler.hpp"
#include "flowmatch/solver/diffusion.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/solver/odeint_eigen.hpp"
#include "flowmatch/solver/result.hpp"

namespace flowmatch {

/// A fixed-step scheme for the SDE (see the file comment).
enum class SdeMethod {
  euler_maruyama,  ///< Euler–Maruyama, weak order 1; with g ≡ 0 it is Method::euler.
  heun,            ///< Stochastic Heun (additive noise), weak order 2; with g ≡ 0, Method::heun2.
};

namespace detail {

inline constexpr std::array<std::pair<SdeMethod, std::string_view>, 2> sde_method_names{{
    {SdeMethod::euler_maruyama, "euler-maruyama"},
    {SdeMethod::heun, "heun"},
}};

}  // namespace detail

/// The name of @p method ("euler-maruyama" or "heun").
inline std::string_view sde_method_name(SdeMethod method) {
  return detail::name_in(detail::sde_method_names, method, "SdeMethod");
}

/// The method called @p name; an unknown name throws std::invalid_argument listing the valid
/// ones.
inline SdeMethod sde_method_from_name(std::string_view name) {
  return detail::value_named(detail::sde_method_names, name, "SDE method");
}

/// Settings of integrate_sde / sample_sde.
template <class Scalar = double>
struct SdeOptions {
  /// The scheme.
  SdeMethod method = SdeMethod::euler_maruyama;
  /// The diffusion coefficient g(t); the default g ≡ 0 is the deterministic flow.
  Diffusion<Scalar> diffusion;
  /// Required: each grid interval of length L is split into ceil(L/h) equal steps, as for the
  /// fixed-step methods of integrate (SolverOptions::step_size).
  std::optional<Scalar> step_size;
  /// Most steps over the whole grid; a grid that needs more throws numerical_error.
  std::size_t max_steps = 100000;
  /// Each step's Brownian increment is the sum of this many independent increments over equal
  /// sub-intervals (≥ 1). K steps of m substeps and K·m steps of one substep over the same grid
  /// are driven by the same Brownian path: this compares step sizes at equal noise.
  std::size_t brownian_substeps = 1;
  /// The index of column 0 among all samples: column j draws the noise of sample
  /// first_sample_index + j, so that shards of a batch draw what the whole batch would.
  std::uint64_t first_sample_index = 0;
  /// Keep the state at every grid time in SolveResult::trajectory.
  bool return_trajectory = false;
};

namespace detail {

/// Throws std::invalid_argument naming the offending option unless @p options is usable.
template <class Scalar>
void validate_sde_options(const SdeOptions<Scalar>& options) {
  sde_method_name(options.method);  // rejects values outside the enumeration
  validate_diffusion("SdeOptions: diffusion.scale (G)", options.diffusion);
  if (!options.step_size) {
    reject_argument("SdeOptions: step_size", "is not set",
                    "a step size > 0 (the SDE schemes take fixed steps)");
  }
  require_positive("SdeOptions: step_size", *options.step_size);
  require_count("SdeOptions: max_steps", options.max_steps, std::size_t(1));
  require_count("SdeOptions: brownian_substeps", options.brownian_substeps, std::size_t(1));
}

/// One stochastic solve over a grid: the drift of the SDE, the noise streams and the step loop.
template <class Scalar, class Field, Scheduler S>
class SdeIntegrator {
 public:
  SdeIntegrator(const Field& field, const AffinePath<S>& path, Matrix<Scalar> initial_state,
                std::span<const Scalar> times, const SdeOptions<Scalar>& options, std::uint64_t key)
      : field_(field),
        path_(path),
        options_(options),
        times_(times),
        noise_(key, options.first_sample_index, initial_state.cols()),
        state_(std::move(initial_state)),
        next_state_(state_.rows(), state_.cols()),
        drift_(state_.rows(), state_.cols()),
        stage_drift_(state_.rows(), state_.cols()),
        increment_(state_.rows(), state_.cols()) {
    result_.times.assign(times.begin(), times.end());
    if (options_.return_trajectory) {
      result_.trajectory.assign(times.size(), Matrix<Scalar>(state_.rows(), state_.cols()));
      result_.trajectory.front() = state_;
    }
  }

  SolveResult<Scalar> run() {
    std::size_t total_steps = 0;
    for (std::size_t k = 0; k + 1 < times_.size(); ++k) {
      total_steps += fixed_step_count(times_[k + 1] - times_[k], *options_.step_size);
    }
    if (total_steps > options_.max_steps) {
      throw numerical_error("the grid needs " + to_text(total_steps) +
                                " SDE steps, more than max_steps = " + to_text(options_.max_steps),
                            static_cast<double>(times_.front()));
    }
    for (std::size_t interval = 0; interval + 1 < times_.size(); ++interval) {
      run_interval(times_[interval], times_[interval + 1]);
      if (options_.return_trajectory) result_.trajectory[interval + 1] = state_;
    }
    result_.state = std::move(state_);
    return std::move(result_);
  }

 private:
  /// Equal steps from @p begin to @p end, at the times integrate's fixed-step loop uses.
  void run_interval(Scalar begin, Scalar end) {
    const std::size_t steps = fixed_step_count(end - begin, *options_.step_size);
    const Scalar length = end - begin;
    Scalar t = begin;
    for (std::size_t k = 1; k <= steps; ++k) {
      const Scalar t_next =
          k == steps ? end : begin + length * static_cast<Scalar>(k) / static_cast<Scalar>(steps);
      step(t, t_next - t, begin, end);
      state_.swap(next_state_);
      record_step(t_next, t_next - t);
      t = t_next;
    }
  }

  /// One step of size @p h from @p t into next_state_; stage times are kept within
  /// [begin, end] as integrate's are.
  void step(Scalar t, Scalar h, Scalar begin, Scalar end) {
    using Operations = odeint_operations;
    noise_.increments(h, options_.brownian_substeps, increment_);
    const Scalar stage_time = std::clamp(t + h, std::min(begin, end), std::max(begin, end));
    // σ = 0 at an end of the step: the deterministic step (see the file comment).
    const bool noisy =
        path_.scheduler().sigma(t) != Scalar(0) && path_.scheduler().sigma(stage_time) != Scalar(0);
    const Scalar g_start = noisy ? options_.diffusion(path_.scheduler(), t) : Scalar(0);
    evaluate_drift(t, g_start, state_, drift_);
    if (options_.method == SdeMethod::euler_maruyama) {
      // X + h·b + g·ΔW, the first two terms as odeint's euler computes them.
      typename Operations::template scale_sum2<Scalar, Scalar>(Scalar(1), h)(next_state_, state_,
                                                                             drift_);
      if (g_start != Scalar(0)) next_state_.noalias() += g_start * increment_;
      return;
    }
    // Heun: predictor X̃ = X + h·b + g_n·ΔW (held in next_state_), then the trapezoid; the
    // deterministic parts as odeint's explicit_generic_rk computes heun2's stages.
    typename Operations::template scale_sum2<Scalar, Scalar>(Scalar(1), Scalar(1) * h)(
        next_state_, state_, drift_);
    if (g_start != Scalar(0)) next_state_.noalias() += g_start * increment_;
    const Scalar g_end = noisy ? options_.diffusion(path_.scheduler(), stage_time) : Scalar(0);
    evaluate_drift(stage_time, g_end, next_state_, stage_drift_);
    const Scalar half = Scalar(1) / Scalar(2);
    typename Operations::template scale_sum3<Scalar, Scalar>(Scalar(1), half * h, half * h)(
        next_state_, state_, drift_, stage_drift_);
    const Scalar g_mean = half * (g_start + g_end);
    if (g_mean != Scalar(0)) next_state_.noalias() += g_mean * increment_;
  }

  /// The drift u_t(x) + ½g²∇log p_t(x) into @p out; with g = 0 the velocity alone (the score is
  /// not evaluated).
  void evaluate_drift(Scalar t, Scalar g, const Matrix<Scalar>& x, Matrix<Scalar>& out) {
    ++result_.stats.nfe;
    evaluate_velocity<Scalar>(field_, t, x, out);
    require_finite_during_solve("derivative (velocity)", out, t);
    if (g == Scalar(0)) return;
    // The velocity was just checked, and the drift is checked below: no second scan.
    out += (g * g / Scalar(2)) * path_.velocity_to_score_unchecked(out, x, t);
    require_finite_during_solve("drift (velocity plus score term)", out, t);
  }

  void record_step(Scalar t, Scalar h) {
    SolverStats& stats = result_.stats;
    const double size = std::abs(static_cast<double>(h));
    stats.min_step = stats.accepted == 0 ? size : std::min(stats.min_step, size);
    stats.max_step = std::max(stats.max_step, size);
    ++stats.accepted;
    require_finite_during_solve("state", state_, t);
  }

  const Field& field_;
  const AffinePath<S>& path_;
  const SdeOptions<Scalar>& options_;
  std::span<const Scalar> times_;
  SampleNoise<Scalar> noise_;
  SolveResult<Scalar> result_;
  Matrix<Scalar> state_;
  Matrix<Scalar> next_state_;
  Matrix<Scalar> drift_;
  Matrix<Scalar> stage_drift_;
  Matrix<Scalar> increment_;
};

}  // namespace detail

/// Integrates the SDE of @p field on @p path (see the file comment) for the d×N batch @p x
/// from times[0] over the increasing grid @p times, with fixed steps.
/// @param field the velocity field of the path (a VelocityField; GuidedField and ParallelField
///        included); it sees the whole batch in its column order at every evaluation.
/// @param path the affine path the field was trained on (standard normal source).
/// @param x the state at times[0], finite, at least 1×1; not modified.
/// @param times a strictly increasing grid inside [0, 1] with at least two entries.
/// @param options scheme, diffusion, step size (required), noise options, trajectory.
/// @param generator any UniformRandomBitGenerator; one 64-bit key is drawn from it.
/// @return the state at the last grid time (and the trajectory), with SolverStats: nfe counts
///         the field's evaluations, accepted the steps.
/// @throws see the file comment.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          SchedulerOf<typename Derived::Scalar> S, std::uniform_random_bit_generator Generator>
SolveResult<typename Derived::Scalar> integrate_sde(
    const Field& field, const AffinePath<S>& path, const Eigen::MatrixBase<Derived>& x,
    std::span<const typename Derived::Scalar> times,
    const SdeOptions<typename Derived::Scalar>& options, Generator& generator) {
  using Scalar = typename Derived::Scalar;
  detail::validate_sde_options(options);
  detail::validate_grid("integrate_sde", times);
  if (times.back() < times.front()) {
    detail::reject_argument(
        "integrate_sde: times",
        "run from " + detail::to_text(times.front()) + " down to " + detail::to_text(times.back()),
        "increasing times (the SDE runs from noise at t = 0 towards data "
        "at t = 1)");
  }
  detail::validate_initial_state("integrate_sde", x);
  const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
  detail::SdeIntegrator<Scalar, Field, S> integrator(field, path, Matrix<Scalar>(x), times, options,
                                                     key);
  return integrator.run();
}

/// Stochastic sampling: carries the noise batch @p x0 at t = 0 to t = 1 (grid {0, 1}); see
/// integrate_sde.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          SchedulerOf<typename Derived::Scalar> S, std::uniform_random_bit_generator Generator>
SolveResult<typename Derived::Scalar> sample_sde(
    const Field& field, const AffinePath<S>& path, const Eigen::MatrixBase<Derived>& x0,
    const SdeOptions<typename Derived::Scalar>& options, Generator& generator) {
  using Scalar = typename Derived::Scalar;
  const std::array<Scalar, 2> grid{Scalar(0), Scalar(1)};
  return integrate_sde(field, path, x0, std::span<const Scalar>(grid), options, generator);
}

/// sample_sde on the path of @p scheduler, AffinePath<S>(scheduler).
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          SchedulerOf<typename Derived::Scalar> S, std::uniform_random_bit_generator Generator>
SolveResult<typename Derived::Scalar> sample_sde(
    const Field& field, const S& scheduler, const Eigen::MatrixBase<Derived>& x0,
    const SdeOptions<typename Derived::Scalar>& options, Generator& generator) {
  return sample_sde(field, AffinePath<S>(scheduler), x0, options, generator);
}

}  // namespace flowmatch
