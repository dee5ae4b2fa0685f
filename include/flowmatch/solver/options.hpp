/// @file options.hpp
/// @brief Settings of an integration: method, step size or tolerances, limits, observer.
#pragma once

#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/solver/error_norm.hpp"
#include "flowmatch/solver/method.hpp"
#include "flowmatch/solver/result.hpp"

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
  /// one step per grid interval. Ignored by adaptive methods.
  std::optional<Scalar> step_size;
  /// Relative tolerance of the adaptive methods (> 0).
  Scalar rtol = Scalar(1e-5);
  /// Absolute tolerance of the adaptive methods (> 0).
  Scalar atol = Scalar(1e-5);
  /// How the scaled local error is reduced to one number (adaptive methods).
  ErrorNorm error_norm = ErrorNorm::rms;
  /// First trial step of an adaptive method; without it, the step is chosen by the heuristic
  /// of Hairer, Nørsett and Wanner (Solving ODEs I, II.4), at the cost of one extra
  /// evaluation.
  std::optional<Scalar> initial_step;
  /// Most steps (accepted plus rejected) before numerical_error is thrown.
  std::size_t max_steps = 100000;
  /// An adaptive step smaller than this (or than a few rounding errors of t) throws
  /// numerical_error (step-size underflow).
  Scalar min_step = Scalar(0);
  /// Keep the state at every grid time in SolveResult::trajectory.
  bool return_trajectory = false;
  /// Optional observer called after each accepted step.
  Observer observer;
};

namespace detail {

/// Throws std::invalid_argument naming the offending option unless @p options is usable.
template <class Scalar>
void validate_options(const SolverOptions<Scalar>& options) {
  const auto require_positive = [](const char* name, Scalar value) {
    if (!(std::isfinite(value) && value > Scalar(0))) {
      throw std::invalid_argument(std::string("SolverOptions::") + name +
                                  " must be finite and > 0, got " + to_text(value));
    }
  };
  method_name(options.method);  // rejects values outside the enumeration
  if (options.step_size) require_positive("step_size", *options.step_size);
  if (options.initial_step) require_positive("initial_step", *options.initial_step);
  require_positive("rtol", options.rtol);
  require_positive("atol", options.atol);
  if (options.error_norm != ErrorNorm::max && options.error_norm != ErrorNorm::rms) {
    throw std::invalid_argument("SolverOptions::error_norm is not a valid ErrorNorm");
  }
  if (options.max_steps == 0) {
    throw std::invalid_argument("SolverOptions::max_steps must be >= 1, got 0");
  }
  if (!(std::isfinite(options.min_step) && options.min_step >= Scalar(0))) {
    throw std::invalid_argument("SolverOptions::min_step must be finite and >= 0, got " +
                                to_text(options.min_step));
  }
}

}  // namespace detail
}  // namespace flowmatch
