/// @file step_control.hpp
/// @brief Step-size control of the adaptive methods: the step adjuster used by odeint's
/// controlled_runge_kutta (the controllers of step_controller.hpp), and the automatic choice
/// of the first step.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "flowmatch/core/types.hpp"
#include "flowmatch/solver/error_norm.hpp"
#include "flowmatch/solver/step_controller.hpp"

namespace flowmatch::detail {

/// The scaled errors of the last two accepted steps, read by the PID controllers; 1 (neutral)
/// at the start of an integration and after each tstop.
template <class Scalar>
struct ErrorHistory {
  Scalar previous = 1;
  Scalar before_previous = 1;

  void reset() { previous = before_previous = Scalar(1); }
};

/// Odeint StepAdjuster for the controllers of step_controller.hpp (Hairer, Nørsett and Wanner,
/// Solving ODEs I, II.4, for the integral one): for a pair whose lower order is q, the scaled
/// error err of a step h behaves like C·h^(q+1), so with k = q + 1
///   rejected: h_new = h · clamp(0.9 · err^(−1/k), 0.2, 10),
///   accepted: h_new = h · clamp(0.9 · err^(−β₁/k) · err_prev^(−β₂/k) · err_prev2^(−β₃/k), 0.2,
///   10),
/// and an accepted step shifts its error into @p history (owned by the integrator, which
/// resets it after a tstop).
template <class Scalar>
class StepAdjuster {
 public:
  using time_type = Scalar;
  using value_type = Scalar;

  StepAdjuster(int lower_order, const PidCoefficients& coefficients, ErrorHistory<Scalar>& history)
      : order_(Scalar(lower_order + 1)),
        exponent1_(Scalar(-coefficients.beta1) / order_),
        exponent2_(Scalar(-coefficients.beta2) / order_),
        exponent3_(Scalar(-coefficients.beta3) / order_),
        history_(&history) {}

  Scalar decrease_step(Scalar dt, Scalar error, int /*error_order*/) const {
    return dt * clamp_factor(safety * std::pow(floored(error), Scalar(-1) / order_));
  }
  Scalar increase_step(Scalar dt, Scalar error, int /*stepper_order*/) const {
    const Scalar current = floored(error);
    Scalar factor = safety * std::pow(current, exponent1_);
    if (exponent2_ != Scalar(0)) factor *= std::pow(history_->previous, exponent2_);
    if (exponent3_ != Scalar(0)) factor *= std::pow(history_->before_previous, exponent3_);
    history_->before_previous = history_->previous;
    history_->previous = current;
    return dt * clamp_factor(factor);
  }
  /// No maximum step here (SolverOptions::max_step is applied by the integrator).
  bool check_step_size_limit(Scalar /*dt*/) const { return true; }
  Scalar get_max_dt() const { return Scalar(0); }

 private:
  static constexpr Scalar safety = Scalar(0.9);

  // An error of zero (a step that is exact in the pair's eyes) counts as a tiny one.
  static Scalar floored(Scalar error) {
    return std::max(error, std::numeric_limits<Scalar>::min());
  }
  static Scalar clamp_factor(Scalar factor) { return std::clamp(factor, Scalar(0.2), Scalar(10)); }

  Scalar order_;
  Scalar exponent1_;
  Scalar exponent2_;
  Scalar exponent3_;
  ErrorHistory<Scalar>* history_;
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
