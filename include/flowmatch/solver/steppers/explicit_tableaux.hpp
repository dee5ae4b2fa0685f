/// @file explicit_tableaux.hpp
/// @brief The fixed-step explicit Runge–Kutta methods (forward Euler, explicit midpoint, Heun's
/// second- and third-order methods, the classic RK4 and Kutta's 3/8 rule) as one small stepper
/// over Matrix<Scalar> states and their Butcher tableaux.
///
/// Butcher tableaux (c | A, b):
///   euler:    c = (0),             b = (1)
///   midpoint: c = (0, 1/2),        a21 = 1/2,                         b = (0, 1)
///   heun2:    c = (0, 1),          a21 = 1,                           b = (1/2, 1/2)
///   heun3:    c = (0, 1/3, 2/3),   a21 = 1/3, a31 = 0, a32 = 2/3,     b = (1/4, 0, 3/4)
///   rk4:      c = (0, 1/2, 1/2, 1), a21 = 1/2, a31 = 0, a32 = 1/2,
///             a41 = 0, a42 = 0, a43 = 1,                              b = (1, 2, 2, 1)/6
///   rk38:     c = (0, 1/3, 2/3, 1), a21 = 1/3, a31 = −1/3, a32 = 1,
///             a41 = 1, a42 = −1, a43 = 1,                             b = (1, 3, 3, 1)/8
///
/// One step from x at t with step h evaluates k_i = f(t + c_i·h, x + Σ_{j<i} (a_ij·h)·k_j) and
/// returns x + Σ_i (b_i·h)·k_i. Each sum is one whole-state expression 1·x + (a_i1·h)·k_1 + …,
/// zero coefficients included, summed from the left: the arithmetic of odeint's
/// explicit_generic_rk, so results are the same bit for bit, without its compile-time machinery.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <utility>

#include "flowmatch/core/types.hpp"

namespace flowmatch::detail {

/// The Butcher tableau of an explicit method with @p Stages stages: a[i][j] for j < i, the
/// weights b and the nodes c.
template <class Scalar, std::size_t Stages>
struct ExplicitTableau {
  std::array<std::array<Scalar, Stages>, Stages> a{};  ///< a[i][j], used for j < i.
  std::array<Scalar, Stages> b{};                      ///< weights of the stage derivatives.
  std::array<Scalar, Stages> c{};                      ///< stage times as fractions of a step.
};

/// A fixed-step explicit Runge–Kutta stepper over Matrix<Scalar> states (see the file comment).
/// `do_step(system, in, t, out, h)` calls `system(x, dxdt, t)` (a std::reference_wrapper to it
/// is seen through) @p Stages times; out must not alias in. Its buffers are sized by the first
/// step of a state's shape, so further steps allocate nothing.
template <class Scalar, std::size_t Stages>
class ExplicitRkStepper {
 public:
  /// @param tableau the method's coefficients.
  explicit ExplicitRkStepper(const ExplicitTableau<Scalar, Stages>& tableau) : tableau_(tableau) {}

  /// One step of length @p step from @p in at time @p t into @p out.
  template <class System>
  void do_step(System system, const Matrix<Scalar>& in, Scalar t, Matrix<Scalar>& out,
               Scalar step) {
    std::unwrap_reference_t<System>& evaluate = system;
    for (Matrix<Scalar>& derivative : derivatives_) derivative.resizeLike(in);
    stage_state_.resizeLike(in);
    evaluate(in, derivatives_[0], t);
    stage<1>(evaluate, in, t, out, step);
  }

 private:
  // Stage I (1-based, I < Stages): its state from the I derivatives so far, then its derivative;
  // at I = Stages, the step's result.
  template <std::size_t I, class Evaluate>
  void stage(Evaluate& evaluate, const Matrix<Scalar>& in, Scalar t, Matrix<Scalar>& out,
             Scalar step) {
    if constexpr (I == Stages) {
      combine(in, tableau_.b, step, out, std::make_index_sequence<Stages>{});
    } else {
      combine(in, tableau_.a[I], step, stage_state_, std::make_index_sequence<I>{});
      evaluate(stage_state_, derivatives_[I], t + tableau_.c[I] * step);
      stage<I + 1>(evaluate, in, t, out, step);
    }
  }

  // target = 1·in + (w_0·h)·k_0 + (w_1·h)·k_1 + …, over the derivatives J in @p Used.
  template <std::size_t... Used>
  void combine(const Matrix<Scalar>& in, const std::array<Scalar, Stages>& weights, Scalar step,
               Matrix<Scalar>& target, std::index_sequence<Used...>) const {
    target = ((Scalar(1) * in) + ... + ((weights[Used] * step) * derivatives_[Used]));
  }

  ExplicitTableau<Scalar, Stages> tableau_;
  std::array<Matrix<Scalar>, Stages> derivatives_;
  Matrix<Scalar> stage_state_;
};

/// Forward Euler, order 1.
template <class Scalar>
ExplicitRkStepper<Scalar, 1> make_euler_stepper() {
  ExplicitTableau<Scalar, 1> tableau;
  tableau.b = {Scalar(1)};
  return ExplicitRkStepper<Scalar, 1>(tableau);
}

/// The explicit midpoint method, order 2.
template <class Scalar>
ExplicitRkStepper<Scalar, 2> make_midpoint_stepper() {
  const Scalar half = Scalar(1) / Scalar(2);
  ExplicitTableau<Scalar, 2> tableau;
  tableau.a[1] = {half};
  tableau.b = {Scalar(0), Scalar(1)};
  tableau.c = {Scalar(0), half};
  return ExplicitRkStepper<Scalar, 2>(tableau);
}

/// Heun's second-order method (explicit trapezoid).
template <class Scalar>
ExplicitRkStepper<Scalar, 2> make_heun2_stepper() {
  const Scalar half = Scalar(1) / Scalar(2);
  ExplicitTableau<Scalar, 2> tableau;
  tableau.a[1] = {Scalar(1)};
  tableau.b = {half, half};
  tableau.c = {Scalar(0), Scalar(1)};
  return ExplicitRkStepper<Scalar, 2>(tableau);
}

/// Heun's third-order method.
template <class Scalar>
ExplicitRkStepper<Scalar, 3> make_heun3_stepper() {
  const Scalar third = Scalar(1) / Scalar(3);
  const Scalar two_thirds = Scalar(2) / Scalar(3);
  ExplicitTableau<Scalar, 3> tableau;
  tableau.a[1] = {third};
  tableau.a[2] = {Scalar(0), two_thirds};
  tableau.b = {Scalar(1) / Scalar(4), Scalar(0), Scalar(3) / Scalar(4)};
  tableau.c = {Scalar(0), third, two_thirds};
  return ExplicitRkStepper<Scalar, 3>(tableau);
}

/// The classic fourth-order Runge–Kutta method.
template <class Scalar>
ExplicitRkStepper<Scalar, 4> make_rk4_stepper() {
  const Scalar half = Scalar(1) / Scalar(2);
  const Scalar sixth = Scalar(1) / Scalar(6);
  const Scalar third = Scalar(1) / Scalar(3);
  ExplicitTableau<Scalar, 4> tableau;
  tableau.a[1] = {half};
  tableau.a[2] = {Scalar(0), half};
  tableau.a[3] = {Scalar(0), Scalar(0), Scalar(1)};
  tableau.b = {sixth, third, third, sixth};
  tableau.c = {Scalar(0), half, half, Scalar(1)};
  return ExplicitRkStepper<Scalar, 4>(tableau);
}

/// Kutta's 3/8 rule, order 4.
template <class Scalar>
ExplicitRkStepper<Scalar, 4> make_rk38_stepper() {
  const Scalar third = Scalar(1) / Scalar(3);
  const Scalar eighth = Scalar(1) / Scalar(8);
  const Scalar three_eighths = Scalar(3) / Scalar(8);
  ExplicitTableau<Scalar, 4> tableau;
  tableau.a[1] = {third};
  tableau.a[2] = {-third, Scalar(1)};
  tableau.a[3] = {Scalar(1), Scalar(-1), Scalar(1)};
  tableau.b = {eighth, three_eighths, three_eighths, eighth};
  tableau.c = {Scalar(0), third, Scalar(2) / Scalar(3), Scalar(1)};
  return ExplicitRkStepper<Scalar, 4>(tableau);
}

}  // namespace flowmatch::detail
