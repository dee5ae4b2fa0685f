/// @file integrate.hpp
/// @brief Integration of velocity fields and general matrix-state systems over a time grid:
/// sampling (noise → data, t from 0 to 1), encoding (data → noise, t from 1 to 0) and any
/// monotone grid inside [0, 1] in either direction.
///
/// The core is integrate_system, for a system dx/dt = F(t, x) on a rows×N matrix state,
/// evaluated in place as `system(t, x, dxdt)`. The state may be a batch of points or an
/// augmented batch (for instance x with an extra row for a log-density change): error control
/// covers every row. integrate, sample and encode are thin wrappers that evaluate a
/// VelocityField.
///
/// Adaptive methods step freely past the grid times inside the range (only tstops end steps
/// early) and, for a trajectory, interpolate the states there by continuous extensions: of
/// order 4 at no cost for dopri5 and tsit5, of order 7 for rkf78 at 3 evaluations in each
/// step that holds such a time (counted in SolverStats::nfe; see steppers/rkf78.hpp).
///
/// Guarantees:
///   - the system is evaluated on the whole batch at once, columns in their original order,
///     so a field that carries per-sample data (labels, guidance weights) stays aligned with
///     the columns of the state;
///   - the system is never evaluated at a time outside [min(grid), max(grid)]: the adaptive
///     loop shortens its last step to end exactly on the final time;
///   - the initial state is not modified (results are new matrices);
///   - once the steppers have taken their first step, stepping does not allocate
///     (with an in-place system, no observer side effects and no trajectory resizing);
///   - failures throw: invalid arguments throw std::invalid_argument (shapes, options, grid
///     order) or std::domain_error (grid times outside [0, 1]); a non-finite derivative or
///     state, step-size underflow and exceeding max_steps throw flowmatch::numerical_error
///     carrying the time and, where one sample is to blame, its column.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/numeric/odeint/stepper/controlled_runge_kutta.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_dopri5.hpp>
#include <boost/numeric/odeint/stepper/stepper_categories.hpp>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/time_grid.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/solver/error_norm.hpp"
#include "flowmatch/solver/method.hpp"
#include "flowmatch/solver/odeint_eigen.hpp"
#include "flowmatch/solver/options.hpp"
#include "flowmatch/solver/result.hpp"
#include "flowmatch/solver/step_control.hpp"
#include "flowmatch/solver/steppers/explicit_tableaux.hpp"
#include "flowmatch/solver/steppers/rkf78.hpp"
#include "flowmatch/solver/steppers/tsit5.hpp"

namespace flowmatch {

/// A system dx/dt = F(t, x) on a rows×N matrix state, evaluated in place:
/// `system(t, x, dxdt)` with dxdt already rows×N.
template <class S, class Scalar>
concept MatrixSystem = requires(S& system, Scalar t, const ConstMatrixRef<Scalar>& x,
                                MatrixRef<Scalar> dxdt) {
  system(t, x, dxdt);
};

/// A time grid given as a range: a contiguous range of Scalar (std::vector, std::array,
/// std::span). Functions take it as a template parameter rather than a span where `{}` in the
/// following options' place must not mean an empty grid.
template <class Times, class Scalar>
concept TimeGrid = std::ranges::contiguous_range<Times> &&
    std::same_as<std::remove_cv_t<std::ranges::range_value_t<Times>>, Scalar>;

namespace detail {

/// Throws numerical_error naming @p what, the time and the first non-finite column, if any.
template <class Scalar>
void require_finite_during_solve(const char* what, const Matrix<Scalar>& matrix, Scalar t) {
  const Index column = first_nonfinite_index(matrix);
  if (column >= 0) {
    throw numerical_error(std::string("non-finite ") + what + " at t = " + to_text(t) +
                              " in column " + to_text(column) + " (sample " + to_text(column) + ")",
                          static_cast<double>(t), column);
  }
}

/// Throws std::invalid_argument unless @p state is a finite matrix with rows and columns;
/// @p function names the caller.
template <class Derived>
void validate_initial_state(const char* function, const Eigen::MatrixBase<Derived>& state) {
  if (state.rows() == 0 || state.cols() == 0) {
    reject_argument(argument_name(function, "initial state"),
                    "has shape " + to_text(state.rows()) + "x" + to_text(state.cols()),
                    "at least one row and one column");
  }
  if (!state.allFinite()) require_finite(argument_name(function, "initial state"), state);
}

/// A non-owning reference to a MatrixSystem. The integrator and its nine steppers see only
/// this type, so they are compiled once per scalar type instead of once per system type; the
/// price is one indirect call per evaluation of a whole batch.
template <class Scalar>
class SystemReference {
 public:
  template <class System>
  explicit SystemReference(System& system)
      : system_(const_cast<void*>(static_cast<const void*>(std::addressof(system)))),
        call_([](void* erased, Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> dxdt) {
          (*static_cast<System*>(erased))(t, x, dxdt);
        }) {}

  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> dxdt) const {
    call_(system_, t, x, dxdt);
  }

 private:
  void* system_;
  void (*call_)(void*, Scalar, const ConstMatrixRef<Scalar>&, MatrixRef<Scalar>);
};

/// Adapts a MatrixSystem to odeint's `sys(x, dxdt, t)`: clamps t into the current segment
/// (the grid's range, or the part of it between two tstops), counts evaluations and rejects
/// non-finite derivatives.
template <class Scalar, class System>
class OdeintSystem {
 public:
  OdeintSystem(System& system, SolverStats& stats) : system_(system), stats_(stats) {}

  /// Evaluations from now on happen at times in [t_low, t_high].
  void set_range(Scalar t_low, Scalar t_high) {
    t_low_ = t_low;
    t_high_ = t_high;
  }

  void operator()(const Matrix<Scalar>& x, Matrix<Scalar>& dxdt, Scalar t) {
    // Stage times t + c·dt may round one ulp past the end of the segment, and a stage on a
    // tstop belongs to the segment being integrated.
    t = std::clamp(t, t_low_, t_high_);
    ++stats_.nfe;
    system_(t, ConstMatrixRef<Scalar>(x), MatrixRef<Scalar>(dxdt));
    require_finite_during_solve("derivative (velocity)", dxdt, t);
  }

 private:
  System& system_;
  SolverStats& stats_;
  Scalar t_low_ = Scalar(0);
  Scalar t_high_ = Scalar(1);
};

/// The tstops that fall strictly inside the grid's range and on no grid time, in the direction
/// of integration, without repeats.
template <class Scalar>
std::vector<Scalar> stops_inside(std::span<const Scalar> times, const std::vector<Scalar>& tstops) {
  const Scalar low = std::min(times.front(), times.back());
  const Scalar high = std::max(times.front(), times.back());
  std::vector<Scalar> stops;
  for (const Scalar stop : tstops) {
    if (stop > low && stop < high && std::find(times.begin(), times.end(), stop) == times.end()) {
      stops.push_back(stop);
    }
  }
  const bool increasing = times.back() > times.front();
  std::sort(stops.begin(), stops.end(),
            [increasing](Scalar a, Scalar b) { return increasing ? a < b : a > b; });
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  return stops;
}

/// One integration of a system over a grid: holds the state buffers, statistics and
/// trajectory, and runs a fixed-step or an adaptive loop around an odeint stepper.
template <class Scalar, class System>
class GridIntegrator {
 public:
  GridIntegrator(System& system, Matrix<Scalar> initial_state, std::span<const Scalar> times,
                 const SolverOptions<Scalar>& options)
      : options_(options),
        times_(times),
        direction_(times.back() > times.front() ? Scalar(1) : Scalar(-1)),
        stops_(stops_inside(times, options.tstops)),
        odeint_system_(system, result_.stats),
        state_(std::move(initial_state)),
        next_state_(state_.rows(), state_.cols()) {
    result_.times.assign(times.begin(), times.end());
    if (options_.return_trajectory) {
      result_.trajectory.assign(times.size(), Matrix<Scalar>(state_.rows(), state_.cols()));
      result_.trajectory.front() = state_;
    }
  }

  /// Runs @p method and returns the result.
  SolveResult<Scalar> run() {
    namespace odeint = boost::numeric::odeint;
    using State = Matrix<Scalar>;
    switch (options_.method) {
      case Method::euler:
        run_fixed(make_euler_stepper<Scalar>());
        break;
      case Method::midpoint:
        run_fixed(make_midpoint_stepper<Scalar>());
        break;
      case Method::heun2:
        run_fixed(make_heun2_stepper<Scalar>());
        break;
      case Method::heun3:
        run_fixed(make_heun3_stepper<Scalar>());
        break;
      case Method::rk4:
        run_fixed(make_rk4_stepper<Scalar>());
        break;
      case Method::rk38:
        run_fixed(make_rk38_stepper<Scalar>());
        break;
      case Method::dopri5:
        run_adaptive(odeint::runge_kutta_dopri5<State, Scalar, State, Scalar, odeint_algebra,
                                                odeint_operations, odeint_resizer>());
        break;
      case Method::rkf78:
        run_adaptive(Rkf78Stepper<State, Scalar>());
        break;
      case Method::tsit5:
        run_adaptive(Tsit5Stepper<State, Scalar>());
        break;
    }
    result_.state = std::move(state_);
    return std::move(result_);
  }

 private:
  /// Fixed steps: each grid interval, split at the tstops inside it, is split into equal steps
  /// (see SolverOptions::step_size).
  template <class Stepper>
  void run_fixed(Stepper stepper) {
    std::size_t total_steps = 0;
    for_each_segment([&](std::size_t, Scalar begin, Scalar end, bool) {
      total_steps += steps_in_segment(begin, end);
    });
    if (total_steps > options_.max_steps) {
      throw numerical_error(
          "the grid needs " + to_text(total_steps) +
              " fixed steps, more than max_steps = " + to_text(options_.max_steps),
          static_cast<double>(times_.front()));
    }
    for_each_segment([&](std::size_t interval, Scalar begin, Scalar end, bool ends_interval) {
      enter_segment(begin, end);
      const std::size_t steps = steps_in_segment(begin, end);
      const Scalar length = end - begin;
      Scalar t = begin;
      for (std::size_t k = 1; k <= steps; ++k) {
        const Scalar t_next =
            k == steps ? end : begin + length * static_cast<Scalar>(k) / static_cast<Scalar>(steps);
        stepper.do_step(std::ref(odeint_system_), state_, t, next_state_, t_next - t);
        state_.swap(next_state_);
        accept_step(t_next, t_next - t);
        t = t_next;
      }
      if (ends_interval && options_.return_trajectory) result_.trajectory[interval + 1] = state_;
    });
  }

  /// Calls visit(interval, begin, end, ends_interval) for the pieces of every grid interval
  /// between its ends and the tstops inside it, in the order of integration.
  template <class Visit>
  void for_each_segment(Visit&& visit) const {
    std::size_t stop = 0;
    for (std::size_t interval = 0; interval + 1 < times_.size(); ++interval) {
      Scalar begin = times_[interval];
      const Scalar end = times_[interval + 1];
      while (stop < stops_.size() && direction_ * (end - stops_[stop]) > 0) {
        visit(interval, begin, stops_[stop], false);
        begin = stops_[stop++];
      }
      visit(interval, begin, end, true);
    }
  }

  std::size_t steps_in_segment(Scalar begin, Scalar end) const {
    if (!options_.step_size) return 1;
    return fixed_step_count(end - begin, *options_.step_size);
  }

  bool is_stop(Scalar t) const {
    return std::find(stops_.begin(), stops_.end(), t) != stops_.end();
  }

  /// Evaluations from now on lie between @p begin and @p end, the ends that are tstops moved
  /// one rounding unit inwards (each side of a stop sees its own field).
  void enter_segment(Scalar begin, Scalar end) {
    const Scalar inward_begin = is_stop(begin) ? std::nextafter(begin, end) : begin;
    const Scalar inward_end = is_stop(end) ? std::nextafter(end, begin) : end;
    odeint_system_.set_range(std::min(inward_begin, inward_end),
                             std::max(inward_begin, inward_end));
  }

  /// Adaptive steps with odeint's controlled_runge_kutta (our error norm and controller). Steps
  /// run freely to the next tstop or the final time; the grid times inside a step are
  /// interpolated by the stepper's dense output (calc_state). A stepper whose dense output
  /// needs stages of its own (rkf78: prepare_dense_output, three evaluations) gets them once in
  /// each accepted step that holds a grid time to interpolate, and in no other step. Every
  /// tstop ends a step, and the step selection starts afresh after it.
  template <class ErrorStepper>
  void run_adaptive(ErrorStepper error_stepper) {
    namespace odeint = boost::numeric::odeint;
    constexpr int lower_order =
        std::min<int>(ErrorStepper::stepper_order_value, ErrorStepper::error_order_value);
    using Controlled = odeint::controlled_runge_kutta<ErrorStepper, ScaledErrorChecker<Scalar>,
                                                      StepAdjuster<Scalar>, odeint_resizer>;
    constexpr bool fsal = std::is_same_v<typename Controlled::stepper_category,
                                         odeint::explicit_controlled_stepper_fsal_tag>;
    ErrorHistory<Scalar> history;
    Controlled controlled(
        ScaledErrorChecker<Scalar>(options_.error_norm, options_.rtol, options_.atol),
        StepAdjuster<Scalar>(lower_order,
                             options_.controller == StepController::pid
                                 ? options_.pid_coefficients
                                 : PidCoefficients::integral(),
                             history),
        error_stepper);

    Matrix<Scalar> derivative(state_.rows(), state_.cols());
    Matrix<Scalar> next_derivative(state_.rows(), state_.cols());
    Matrix<Scalar> forced_error;  // the error estimate of a forced step, unused
    Scalar t = times_.front();
    std::size_t next_grid = 1;
    std::size_t next_stop = 0;
    Scalar step = 0;
    // Entering a segment (the start, or a tstop just reached): evaluation range, derivative
    // there from the segment's side, and a first step.
    const auto start_segment = [&]() {
      const Scalar segment_end = next_stop < stops_.size() ? stops_[next_stop] : times_.back();
      enter_segment(t, segment_end);
      history.reset();
      odeint_system_(state_, derivative, t);
      const Scalar range = std::abs(times_.back() - t);
      const std::optional<Scalar> given = first_step(options_);
      step = given ? *given
                   : initial_step_size(odeint_system_, t, state_, derivative, direction_, range,
                                       ErrorStepper::order_value, options_.error_norm,
                                       options_.rtol, options_.atol, next_state_, next_derivative);
      // A first step is a guess: never below min_step (the error control has the last word).
      step = direction_ * std::min(std::max(step, options_.min_step), range);
    };
    start_segment();

    while (next_grid < times_.size()) {
      if (options_.max_step) step = direction_ * std::min(std::abs(step), *options_.max_step);
      const bool forced = step_below_minimum(step, t);
      if (forced) step = direction_ * options_.min_step;
      const Scalar segment_end = next_stop < stops_.size() ? stops_[next_stop] : times_.back();
      const Scalar target =
          direction_ * (segment_end - times_.back()) < 0 ? segment_end : times_.back();
      const Scalar remaining = target - t;
      // End exactly on the target rather than past it or just short of it.
      const bool reaches_target = std::abs(step) * Scalar(1.01) >= std::abs(remaining);
      const Scalar trial_step = reaches_target ? remaining : step;
      if (result_.stats.accepted + result_.stats.rejected >= options_.max_steps) {
        throw numerical_error(
            "exceeded max_steps = " + to_text(options_.max_steps) + " at t = " + to_text(t),
            static_cast<double>(t));
      }
      Scalar t_trial = t;
      Scalar step_trial = trial_step;
      if (forced) {
        // Taken as it is: the stepper's own step, its error estimate ignored.
        forced_error.resize(state_.rows(), state_.cols());
        if constexpr (fsal) {
          controlled.stepper().do_step(std::ref(odeint_system_), state_, derivative, t, next_state_,
                                       next_derivative, trial_step, forced_error);
        } else {
          controlled.stepper().do_step(std::ref(odeint_system_), state_, derivative, t, next_state_,
                                       trial_step, forced_error);
        }
        ++result_.stats.forced;
      } else {
        odeint::controlled_step_result outcome;
        if constexpr (fsal) {
          outcome = controlled.try_step(std::ref(odeint_system_), state_, derivative, t_trial,
                                        next_state_, next_derivative, step_trial);
        } else {
          outcome = controlled.try_step(std::ref(odeint_system_), state_, derivative, t_trial,
                                        next_state_, step_trial);
        }
        if (outcome == odeint::fail) {
          ++result_.stats.rejected;
          step = step_trial;
          continue;
        }
      }
      const Scalar t_new = reaches_target ? target : t + trial_step;
      if constexpr (!fsal) odeint_system_(next_state_, next_derivative, t_new);
      bool dense_output_ready = false;
      while (next_grid < times_.size() && direction_ * (times_[next_grid] - t_new) <= 0) {
        if (options_.return_trajectory) {
          if (times_[next_grid] == t_new) {
            result_.trajectory[next_grid] = next_state_;
          } else {
            auto& stepper = controlled.stepper();
            if constexpr (requires {
                            stepper.prepare_dense_output(std::ref(odeint_system_), state_,
                                                         derivative, t, next_derivative, t_new);
                          }) {
              if (!dense_output_ready) {
                stepper.prepare_dense_output(std::ref(odeint_system_), state_, derivative, t,
                                             next_derivative, t_new);
                dense_output_ready = true;
              }
            }
            stepper.calc_state(times_[next_grid], result_.trajectory[next_grid], state_, derivative,
                               t, next_state_, next_derivative, t_new);
          }
        }
        ++next_grid;
      }
      state_.swap(next_state_);
      derivative.swap(next_derivative);
      t = t_new;
      // A step shortened to end on a grid time says little about the step the error allows:
      // keep the longer of the proposal and the controller's suggestion.
      if (!forced) {
        step = reaches_target ? direction_ * std::max(std::abs(step), std::abs(step_trial))
                              : step_trial;
      }
      accept_step(t, trial_step);
      if (next_stop < stops_.size() && t == stops_[next_stop]) {
        ++next_stop;
        start_segment();
      }
    }
  }

  /// Whether @p step is below SolverOptions::min_step with force_min_step set (the step is then
  /// taken at min_step); throws numerical_error for a step below min_step without it, or below
  /// a few rounding errors of t.
  bool step_below_minimum(Scalar step, Scalar t) const {
    const Scalar range = std::abs(times_.back() - times_.front());
    const Scalar rounding =
        Scalar(4) * std::numeric_limits<Scalar>::epsilon() * std::max(std::abs(t), range);
    if (std::abs(step) < options_.min_step && options_.min_step >= rounding) {
      if (options_.force_min_step) return true;
      throw numerical_error("step size underflow at t = " + to_text(t) +
                                ": the error control asks for a step of " + to_text(step) +
                                ", below min_step = " + to_text(options_.min_step) +
                                " (set force_min_step to take such steps at min_step)",
                            static_cast<double>(t));
    }
    if (std::abs(step) < rounding) {
      throw numerical_error("step size underflow at t = " + to_text(t) + ": step " + to_text(step) +
                                " is below " + to_text(rounding) + ", a few rounding errors of t",
                            static_cast<double>(t));
    }
    return false;
  }

  /// Bookkeeping after an accepted step that ended at @p t: statistics, finiteness of the
  /// state, observer.
  void accept_step(Scalar t, Scalar step) {
    SolverStats& stats = result_.stats;
    const double size = std::abs(static_cast<double>(step));
    stats.min_step = stats.accepted == 0 ? size : std::min(stats.min_step, size);
    stats.max_step = std::max(stats.max_step, size);
    ++stats.accepted;
    require_finite_during_solve("state", state_, t);
    if (options_.observer) options_.observer(t, state_, stats);
  }

  const SolverOptions<Scalar>& options_;
  std::span<const Scalar> times_;
  Scalar direction_;
  std::vector<Scalar> stops_;  // tstops inside the grid's range, in the order of integration
  SolveResult<Scalar> result_;
  OdeintSystem<Scalar, System> odeint_system_;
  Matrix<Scalar> state_;
  Matrix<Scalar> next_state_;
};

}  // namespace detail

/// Integrates dx/dt = F(t, x) for a rows×N matrix state over the grid @p times and returns
/// the final state (and, with SolverOptions::return_trajectory, the state at every grid time).
/// @param system called as `system(t, x, dxdt)` (MatrixSystem), in place; it may keep state.
/// @param state the initial state at times[0], finite, at least 1×1; not modified.
/// @param times a strictly monotone grid inside [0, 1], increasing or decreasing, at least two
///        entries (a std::vector or std::array converts; the overload below takes a braced
///        list).
/// @param options method, tolerances or step size, limits and observer.
/// @throws std::invalid_argument, std::domain_error, numerical_error (see the file comment).
template <class Derived, MatrixSystem<typename Derived::Scalar> System>
SolveResult<typename Derived::Scalar> integrate_system(
    System&& system, const Eigen::MatrixBase<Derived>& state,
    std::span<const typename Derived::Scalar> times,
    const SolverOptions<typename Derived::Scalar>& options = {}) {
  using Scalar = typename Derived::Scalar;
  detail::validate_options(options);
  detail::validate_grid("integrate", times);
  detail::validate_initial_state("integrate", state);
  detail::SystemReference<Scalar> erased_system(system);
  detail::GridIntegrator<Scalar, detail::SystemReference<Scalar>> integrator(
      erased_system, Matrix<Scalar>(state), times, options);
  return integrator.run();
}

/// integrate_system over a grid written as a braced list of times, e.g. {0.0, 0.5, 1.0}.
template <class Derived, MatrixSystem<typename Derived::Scalar> System>
SolveResult<typename Derived::Scalar> integrate_system(
    System&& system, const Eigen::MatrixBase<Derived>& state,
    std::initializer_list<typename Derived::Scalar> times,
    const SolverOptions<typename Derived::Scalar>& options = {}) {
  return integrate_system(std::forward<System>(system), state, detail::grid_span(times), options);
}

/// Integrates the flow of a velocity field, dx/dt = u_t(x), for the d×N batch @p x from
/// times[0] over the grid @p times (see integrate_system). The field sees the whole batch in
/// its column order at every evaluation.
template <class Derived, VelocityField<typename Derived::Scalar> Field>
SolveResult<typename Derived::Scalar> integrate(
    const Field& field, const Eigen::MatrixBase<Derived>& x,
    std::span<const typename Derived::Scalar> times,
    const SolverOptions<typename Derived::Scalar>& options = {}) {
  using Scalar = typename Derived::Scalar;
  auto system = [&field](Scalar t, const ConstMatrixRef<Scalar>& state,
                         MatrixRef<Scalar> velocity) {
    evaluate_velocity<Scalar>(field, t, state, velocity);
  };
  return integrate_system(system, x, times, options);
}

/// integrate over a grid written as a braced list of times:
/// `integrate(field, x0, {0.0, 0.5, 1.0}, options)`.
template <class Derived, VelocityField<typename Derived::Scalar> Field>
SolveResult<typename Derived::Scalar> integrate(
    const Field& field, const Eigen::MatrixBase<Derived>& x,
    std::initializer_list<typename Derived::Scalar> times,
    const SolverOptions<typename Derived::Scalar>& options = {}) {
  return integrate(field, x, detail::grid_span(times), options);
}

/// Sampling: pushes the noise batch @p x0 at t = 0 to t = 1 along the field (grid {0, 1}).
template <class Derived, VelocityField<typename Derived::Scalar> Field>
SolveResult<typename Derived::Scalar> sample(
    const Field& field, const Eigen::MatrixBase<Derived>& x0,
    const SolverOptions<typename Derived::Scalar>& options = {}) {
  using Scalar = typename Derived::Scalar;
  const std::array<Scalar, 2> grid{Scalar(0), Scalar(1)};
  return integrate(field, x0, grid, options);
}

/// Encoding: pulls the data batch @p x1 at t = 1 back to t = 0 along the field (grid {1, 0}).
template <class Derived, VelocityField<typename Derived::Scalar> Field>
SolveResult<typename Derived::Scalar> encode(
    const Field& field, const Eigen::MatrixBase<Derived>& x1,
    const SolverOptions<typename Derived::Scalar>& options = {}) {
  using Scalar = typename Derived::Scalar;
  const std::array<Scalar, 2> grid{Scalar(1), Scalar(0)};
  return integrate(field, x1, grid, options);
}

}  // namespace flowmatch
