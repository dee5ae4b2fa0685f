/// @file options.hpp
/// @brief Settings of an integration: method, step size or tolerances, limits, observer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/solver/error_norm.hpp"
#include "flowmatch/solver/method.hpp"
#include "flowmatch/solver/result.hpp"
#include "flowmatch/solver/step_controller.hpp"

namespace flowmatch {

/// Settings of integrate / sample / encode / integrate_system.
template <class Scalar = double>
struct SolverOptions {
  /// Called after every accepted step with the time reached, the state there and the
  /// statistics so far (t runs in the direction of integration).
  using Observer = std::function<void(Scalar t, const Matrix<Scalar>& state, const SolverStats&)>;

  /// The integration method.
  Method method = Method::dopri5;
  /// Fixed-step methods: each grid interval of length L is split into ceil(L/h) equal steps
  /// (a ratio L/h within a few rounding errors of an integer is not rounded up). Without it,
  /// one step per grid interval. Setting it with an adaptive method is an error: their first
  /// trial step is first_step.
  std::optional<Scalar> step_size;
  /// Relative tolerance of the adaptive methods (> 0).
  Scalar rtol = Scalar(1e-5);
  /// Absolute tolerance of the adaptive methods (> 0).
  Scalar atol = Scalar(1e-5);
  /// How the scaled local error is reduced to one number (adaptive methods).
  ErrorNorm error_norm = ErrorNorm::rms;
  /// The step-size controller of the adaptive methods (see step_controller.hpp). The PID
  /// controller with Gustafsson's PI.3.4 coefficients reaches a given accuracy with fewer
  /// evaluations than the integral one on the problems of tests/bench/controller_nfe.cpp
  /// (README, "Step-size controllers"), hence the default.
  StepController controller = StepController::pid;
  /// The exponents of StepController::pid (named sets in PidCoefficients).
  PidCoefficients pid_coefficients = PidCoefficients::pi34();
  /// First trial step of an adaptive method (and again after each of tstops); without it,
  /// the step is chosen by the heuristic of Hairer, Nørsett and Wanner (Solving ODEs I, II.4),
  /// at the cost of one extra evaluation. Kept within [min_step, max_step] and the range left.
  std::optional<Scalar> first_step;
  /// The former name of first_step, still read: set one of the two (or both to one value).
  std::optional<Scalar> initial_step;
  /// Largest |step| an adaptive method takes; without it, no limit but the grid's range.
  std::optional<Scalar> max_step;
  /// Most steps (accepted plus rejected) before numerical_error is thrown.
  std::size_t max_steps = 100000;
  /// Smallest |step| of an adaptive method. When the error control asks for a smaller step the
  /// solve throws numerical_error naming this bound, or, with force_min_step, takes a step of
  /// min_step without error control. Steps within a few rounding errors of t always throw.
  Scalar min_step = Scalar(0);
  /// With min_step > 0: a step the error control would make smaller than min_step is taken at
  /// min_step and accepted whatever its error estimate, and counted in SolverStats::forced.
  bool force_min_step = false;
  /// Times at which every method ends a step exactly, for fields that change abruptly there
  /// (guidance intervals, schedule switches). Between two of them the field is evaluated only
  /// at times strictly inside: a stage that falls on a stop is moved one rounding unit into
  /// its own side, so each side sees its own field. An adaptive method restarts its step
  /// selection (first_step or the heuristic) after each. Stops outside the open range of the
  /// grid, or on a grid time, change nothing. Each must be finite and in [0, 1].
  std::vector<Scalar> tstops;
  /// Keep the state at every grid time in SolveResult::trajectory.
  bool return_trajectory = false;
  /// Optional observer called after each accepted step.
  Observer observer;

  /// The defaults of the density tasks (log_likelihood, sample_with_log_likelihood,
  /// conditional_log_likelihood, exact_score, sample_with_score): these defaults with
  /// rtol = atol = 1e-7 (8ε ≈ 9.5e-7 in float). Sampling keeps 1e-5, where the error is small
  /// beside the model's; a log-density or score is read directly, and on the Gaussian-mixture
  /// oracle (tests/bench/density_tolerance.cpp) 1e-5 leaves errors of 2e-3 in log p and 1e-3 in
  /// the score, 1e-7 about 7e-6 and 1.4e-5, for twice the evaluations.
  [[nodiscard]] static SolverOptions for_density() {
    SolverOptions options;
    options.rtol = options.atol =
        std::max(Scalar(1e-7), Scalar(8) * std::numeric_limits<Scalar>::epsilon());
    return options;
  }
};

namespace detail {

/// The first trial step of an adaptive method, under either of its names.
template <class Scalar>
std::optional<Scalar> first_step(const SolverOptions<Scalar>& options) {
  return options.first_step ? options.first_step : options.initial_step;
}

/// Throws std::invalid_argument naming the offending option unless @p options is usable.
template <class Scalar>
void validate_options(const SolverOptions<Scalar>& options) {
  method_name(options.method);  // rejects values outside the enumeration
  if (options.step_size) {
    require_positive("SolverOptions: step_size", *options.step_size);
    if (is_adaptive(options.method)) {
      reject_argument("SolverOptions: step_size",
                      is_value(*options.step_size) + " with the adaptive method " +
                          std::string(method_name(options.method)),
                      "unset (step_size applies to the fixed-step methods): set first_step for "
                      "the first trial step, rtol and atol for the accuracy");
    }
  }
  if (options.first_step) require_positive("SolverOptions: first_step", *options.first_step);
  if (options.initial_step) {
    require_positive("SolverOptions: initial_step", *options.initial_step);
  }
  if (options.first_step && options.initial_step && *options.first_step != *options.initial_step) {
    reject_argument("SolverOptions: first_step",
                    is_value(*options.first_step) + " and its former name initial_step " +
                        is_value(*options.initial_step),
                    "one of them set, or both equal");
  }
  if (options.max_step) require_positive("SolverOptions: max_step", *options.max_step);
  require_positive("SolverOptions: rtol", options.rtol);
  require_positive("SolverOptions: atol", options.atol);
  if (options.error_norm != ErrorNorm::max && options.error_norm != ErrorNorm::rms) {
    reject_argument("SolverOptions: error_norm", is_value(static_cast<int>(options.error_norm)),
                    "ErrorNorm::max or rms");
  }
  controller_name(options.controller);  // rejects values outside the enumeration
  require_finite_value("SolverOptions: pid_coefficients.beta1", options.pid_coefficients.beta1);
  require_finite_value("SolverOptions: pid_coefficients.beta2", options.pid_coefficients.beta2);
  require_finite_value("SolverOptions: pid_coefficients.beta3", options.pid_coefficients.beta3);
  require_count<std::size_t>("SolverOptions: max_steps", options.max_steps, 1);
  require_nonnegative("SolverOptions: min_step", options.min_step);
  if (options.max_step && options.min_step > *options.max_step) {
    reject_argument("SolverOptions: min_step", is_value(options.min_step),
                    "<= max_step (" + to_text(*options.max_step) + ")");
  }
  if (options.force_min_step && !(options.min_step > Scalar(0))) {
    reject_argument("SolverOptions: force_min_step", std::string("is true with min_step 0"),
                    "min_step > 0");
  }
  for (std::size_t index = 0; index < options.tstops.size(); ++index) {
    const Scalar stop = options.tstops[index];
    if (!(stop >= Scalar(0) && stop <= Scalar(1))) {
      reject_argument(argument_name("SolverOptions", "tstops[" + to_text(index) + "]"),
                      is_value(stop), "in [0, 1]");
    }
  }
}

}  // namespace detail
}  // namespace flowmatch
