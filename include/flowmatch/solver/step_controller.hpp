/// @file step_controller.hpp
/// @brief The step-size controllers of the adaptive methods: the integral controller and
/// Söderlind's PID controllers with their classical coefficient sets.
///
/// After a step of size h with scaled error err_n (accepted when err_n ≤ 1), the next step is
///   h_next = h · clamp(0.9 · err_n^(−β₁/k) · err_{n−1}^(−β₂/k) · err_{n−2}^(−β₃/k), 0.2, 10),
/// with k = q + 1 for a pair whose lower order is q, and err_{n−1}, err_{n−2} the errors of the
/// two accepted steps before (1 at the start and after each tstop). (β₁, β₂, β₃) = (1, 0, 0)
/// is the integral (elementary) controller; the others weigh in the error history to smooth
/// the step sequence (G. Söderlind, "Digital filters in adaptive time-stepping", ACM TOMS 29
/// (2003) 1–26). A rejected step is retried with the integral rule h · 0.9 · err_n^(−1/k)
/// (at least 0.2·h), whatever the controller.
#pragma once

#include <array>
#include <string_view>
#include <utility>

#include "flowmatch/detail/named_values.hpp"

namespace flowmatch {

/// Which step-size controller an adaptive method uses.
enum class StepController {
  integral,  ///< h_next = h · 0.9 · err^(−1/k): the error of the last step only.
  pid,       ///< Söderlind's filter with SolverOptions::pid_coefficients.
};

/// The exponents (β₁, β₂, β₃) of a PID step-size controller (see the file comment).
struct PidCoefficients {
  double beta1 = 1;
  double beta2 = 0;
  double beta3 = 0;

  /// (1, 0, 0): the integral controller.
  static constexpr PidCoefficients integral() { return {1, 0, 0}; }
  /// Söderlind's H211PI, (1/6, 1/6, 0): a smooth PI filter.
  static constexpr PidCoefficients h211pi() { return {1.0 / 6, 1.0 / 6, 0}; }
  /// Söderlind's H312PID, (1/18, 1/9, 1/18): a smooth PID filter.
  static constexpr PidCoefficients h312pid() { return {1.0 / 18, 1.0 / 9, 1.0 / 18}; }
  /// Gustafsson's PI controller PI.3.4, (0.7, −0.4, 0).
  static constexpr PidCoefficients pi34() { return {0.7, -0.4, 0}; }
  /// Kennedy and Carpenter's PID, (0.58, −0.21, 0.1).
  static constexpr PidCoefficients kennedy_carpenter() { return {0.58, -0.21, 0.1}; }
};

namespace detail {

inline constexpr std::array<std::pair<StepController, std::string_view>, 2> controller_names{{
    {StepController::integral, "integral"},
    {StepController::pid, "pid"},
}};

inline constexpr std::array<std::pair<PidCoefficients, std::string_view>, 5> pid_coefficient_names{{
    {PidCoefficients::integral(), "integral"},
    {PidCoefficients::h211pi(), "h211pi"},
    {PidCoefficients::h312pid(), "h312pid"},
    {PidCoefficients::pi34(), "pi34"},
    {PidCoefficients::kennedy_carpenter(), "kennedy-carpenter"},
}};

}  // namespace detail

/// The name of @p controller ("integral" or "pid").
inline std::string_view controller_name(StepController controller) {
  return detail::name_in(detail::controller_names, controller, "StepController");
}

/// The controller called @p name; an unknown name throws std::invalid_argument listing the
/// valid ones.
inline StepController controller_from_name(std::string_view name) {
  return detail::value_named(detail::controller_names, name, "step-size controller");
}

/// The coefficient set called @p name: integral, h211pi, h312pid, pi34, kennedy-carpenter.
inline PidCoefficients pid_coefficients_from_name(std::string_view name) {
  return detail::value_named(detail::pid_coefficient_names, name, "PID coefficient set");
}

}  // namespace flowmatch
