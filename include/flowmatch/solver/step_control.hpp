/// @file step_control.hpp
/// @brief Step-size control of the adaptive methods: the step adjuster used by odeint's
/// controlled_runge_kutta, and the automatic choice of the first step.
#pragma once

#include <algorithm>
#include <cmath>

#include "flowmatch/core/types.hpp"
#include "flowmatch/solver/error_norm.hpp"

namespace flowmatch::detail {

/// Odeint StepAdjuster with the classical controller of Hairer, Nørsett and Wanner
/// (Solving ODEs I, II.4): for a pair whose lower order is q, the scaled error err of a step
/// h behaves like C·h^(q+1), so the next step is
///   h_new = h · clamp(0.9 · err^(−1/(q+1)), 0.2, 10),
/// used both to retry a rejected step (err > 1) and to continue after an accepted one.
template <class Scalar>
class HairerStepAdjuster {
 public:
  using time_type = Scalar;
  using value_type = Scalar;

  /// @param lower_order q, the lower of the two orders of the embedded pair.
  explicit HairerStepAdjuster(int lower_order = 4)
      : exponent_(Scalar(-1) / Scalar(lower_order + 1)) {}

  Scalar decrease_step(Scalar dt, Scalar error, int /*error_order*/) const {
    return dt * factor(error);
  }
  Scalar increase_step(Scalar dt, Scalar error, int /*stepper_order*/) const {
    return dt * factor(error);
  }
  /// No maximum step: every step size is within the limit.
  bool check_step_size_limit(Scalar /*dt*/) const { return true; }
  Scalar get_max_dt() const { return Scalar(0); }

 private:
  Scalar factor(Scalar error) const {
    constexpr Scalar safety = Scalar(0.9);
    constexpr Scalar min_factor = Scalar(0.2);
    constexpr Scalar max_factor = Scalar(10);
    if (error <= Scalar(0)) return max_factor;
    return std::clamp(safety * std::pow(error, exponent_), min_factor, max_factor);
  }

  Scalar exponent_;
};

/// The size of the first trial step (positive) by the heuristic of Hairer, Nørsett and Wanner
/// (Solving ODEs I, II.4, "starting step size"), with ‖·‖ the scaled error norm:
///   d0 = ‖x0‖, d1 = ‖f(t0, x0)‖, h0 = 0.01·d0/d1 (or 1e-6 if either is below 1e-5),
///   d2 = ‖f(t0 + h0, x0 + h0·f0) − f0‖ / h0,
///   h1 = (0.01 / max(d1, d2))^(1/(p+1)) (or max(1e-6, 1e-3·h0) if both are ≤ 1e-15),
///   h = min(100·h0, h1),
/// with h0 and h also capped at the length of the integration range. One evaluation of
/// @p derivative_at (through probe_state and probe_derivative, which are work buffers).
/// @param derivative_at callable (x, dxdt, t) evaluating the system (odeint's order).
/// @param direction +1 or −1, the direction of integration.
template <class Scalar, class Evaluate>
Scalar initial_step_size(Evaluate&& derivative_at, Scalar t0, const Matrix<Scalar>& x0,
                         const Matrix<Scalar>& f0, Scalar direction, Scalar range, int order,
                         ErrorNorm norm, Scalar rtol, Scalar atol, Matrix<Scalar>& probe_state,
                         Matrix<Scalar>& probe_derivative) {
  const Scalar d0 = scaled_error_norm(norm, x0, x0, rtol, atol);
  const Scalar d1 = scaled_error_norm(norm, f0, x0, rtol, atol);
  Scalar h0 = (d0 < Scalar(1e-5) || d1 < Scalar(1e-5)) ? Scalar(1e-6) : Scalar(0.01) * d0 / d1;
  h0 = std::min(h0, range);
  probe_state = x0 + (direction * h0) * f0;
  derivative_at(probe_state, probe_derivative, t0 + direction * h0);
  const Scalar d2 = scaled_error_norm(norm, (probe_derivative - f0) / h0, x0, rtol, atol);
  const Scalar largest = std::max(d1, d2);
  const Scalar h1 = largest <= Scalar(1e-15)
                        ? std::max(Scalar(1e-6), h0 * Scalar(1e-3))
                        : std::pow(Scalar(0.01) / largest, Scalar(1) / Scalar(order + 1));
  return std::min({Scalar(100) * h0, h1, range});
}

}  // namespace flowmatch::detail
