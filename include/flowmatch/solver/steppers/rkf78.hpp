/// @file rkf78.hpp
/// @brief Fehlberg's 7(8) pair with a continuous extension, written as an odeint error stepper.
///
/// E. Fehlberg, "Classical fifth-, sixth-, seventh-, and eighth-order Runge–Kutta formulas with
/// stepsize control", NASA TR R-287 (1968). Thirteen stages; the step propagates the
/// 8th-order solution (stages 6–10, 12 and 13), and the error estimate is the 7th-order
/// solution minus it, −h·41/840·(k₁ + k₁₁ − k₁₂ − k₁₃): the steps and estimates of odeint's
/// runge_kutta_fehlberg78, bit for bit (its zero terms left out).
///
/// Dense output. k₁₄ = f(t + h, x(t + h)) is the first stage of the next step, so a
/// continuous extension over the 14 stages k₁..k₁₄ costs no evaluation:
///   x(t + θh) ≈ x(t) + h·Σ_i b_i(θ)·k_i,  θ in [0, 1],
/// with b(0) = 0, b(1) = the step's weights (the interpolant is continuous across steps),
/// b'(0) = e₁ and b'(1) = e₁₄ (its derivative is f at both ends: it is C¹). The order
/// conditions Σ_i b_i(θ)·Φ_i(τ) = θ^|τ|/γ(τ) can be met for every rooted tree τ with |τ| ≤ 5
/// but not 6, so the extension has order 5: its error within a step is O(h⁶), against O(h⁹)
/// for the step. The weights are polynomials of degree 5 that leave out stages 2–5 and 11
/// (which costs nothing in the error coefficients) and make the error coefficients of order 6
/// nearly the smallest possible (0.3% above, the free parameters rounded to fractions with
/// denominators up to 100). docs/derivations/rkf78_dense_output.py derives them in exact
/// arithmetic and compares degree 5 with degree 6: degree 6 has smaller order-6 coefficients
/// but larger order-7 ones, and is less accurate at the step sizes a solve takes.
///
/// Accuracy of dense output: the extension's error shrinks like h⁶ and the step's error
/// estimate like h⁸, so the tighter the tolerance (the shorter the steps), the further an
/// interpolated state is from it. On Van der Pol (μ = 1), steps of h = 0.4, 0.2, 0.1 and 0.05
/// estimate their errors at 2e-5, 2.4e-8, 4.8e-11 and 6.9e-14 and interpolate with errors of
/// 2.2e-4, 1.4e-6, 1.2e-8 and 2.2e-10 (printed by the derivation script). The integrator
/// therefore still ends an rkf78 step at every grid time; calc_state serves where order 5 is
/// enough.
///
/// Not an FSAL stepper: the error estimate does not use k₁₄, so the integrator evaluates it only
/// after an accepted step (where it becomes the next step's k₁); a rejected step then costs 12
/// evaluations, an accepted one 13.
#pragma once

#include <array>
#include <cstddef>

#include <boost/numeric/odeint/stepper/base/explicit_error_stepper_base.hpp>
#include <boost/numeric/odeint/util/bind.hpp>
#include <boost/numeric/odeint/util/resizer.hpp>
#include <boost/numeric/odeint/util/state_wrapper.hpp>
#include <boost/numeric/odeint/util/unwrap_reference.hpp>

#include "flowmatch/solver/odeint_eigen.hpp"

namespace flowmatch {

/// Coefficients of Fehlberg's 7(8) pair, with 0-based indices: stage s + 1 is evaluated at
/// t + c[s]·h on x + h·Σ_j a[s][j]·k_{j+1}; the step is x + h·Σ_s b[s]·k_{s+1}; the error
/// estimate is h·Σ_s e[s]·k_{s+1}.
template <class Scalar>
struct Rkf78Tableau {
  static constexpr std::size_t stages = 13;

  static constexpr std::array<Scalar, stages> c{Scalar(0),
                                                Scalar(2) / Scalar(27),
                                                Scalar(1) / Scalar(9),
                                                Scalar(1) / Scalar(6),
                                                Scalar(5) / Scalar(12),
                                                Scalar(1) / Scalar(2),
                                                Scalar(5) / Scalar(6),
                                                Scalar(1) / Scalar(6),
                                                Scalar(2) / Scalar(3),
                                                Scalar(1) / Scalar(3),
                                                Scalar(1),
                                                Scalar(0),
                                                Scalar(1)};

  static constexpr std::array<std::array<Scalar, stages - 1>, stages> a{{
      {},
      {Scalar(2) / Scalar(27)},
      {Scalar(1) / Scalar(36), Scalar(1) / Scalar(12)},
      {Scalar(1) / Scalar(24), Scalar(0), Scalar(1) / Scalar(8)},
      {Scalar(5) / Scalar(12), Scalar(0), Scalar(-25) / Scalar(16), Scalar(25) / Scalar(16)},
      {Scalar(1) / Scalar(20), Scalar(0), Scalar(0), Scalar(1) / Scalar(4), Scalar(1) / Scalar(5)},
      {Scalar(-25) / Scalar(108), Scalar(0), Scalar(0), Scalar(125) / Scalar(108),
       Scalar(-65) / Scalar(27), Scalar(125) / Scalar(54)},
      {Scalar(31) / Scalar(300), Scalar(0), Scalar(0), Scalar(0), Scalar(61) / Scalar(225),
       Scalar(-2) / Scalar(9), Scalar(13) / Scalar(900)},
      {Scalar(2), Scalar(0), Scalar(0), Scalar(-53) / Scalar(6), Scalar(704) / Scalar(45),
       Scalar(-107) / Scalar(9), Scalar(67) / Scalar(90), Scalar(3)},
      {Scalar(-91) / Scalar(108), Scalar(0), Scalar(0), Scalar(23) / Scalar(108),
       Scalar(-976) / Scalar(135), Scalar(311) / Scalar(54), Scalar(-19) / Scalar(60),
       Scalar(17) / Scalar(6), Scalar(-1) / Scalar(12)},
      {Scalar(2383) / Scalar(4100), Scalar(0), Scalar(0), Scalar(-341) / Scalar(164),
       Scalar(4496) / Scalar(1025), Scalar(-301) / Scalar(82), Scalar(2133) / Scalar(4100),
       Scalar(45) / Scalar(82), Scalar(45) / Scalar(164), Scalar(18) / Scalar(41)},
      {Scalar(3) / Scalar(205), Scalar(0), Scalar(0), Scalar(0), Scalar(0), Scalar(-6) / Scalar(41),
       Scalar(-3) / Scalar(205), Scalar(-3) / Scalar(41), Scalar(3) / Scalar(41),
       Scalar(6) / Scalar(41)},
      {Scalar(-1777) / Scalar(4100), Scalar(0), Scalar(0), Scalar(-341) / Scalar(164),
       Scalar(4496) / Scalar(1025), Scalar(-289) / Scalar(82), Scalar(2193) / Scalar(4100),
       Scalar(51) / Scalar(82), Scalar(33) / Scalar(164), Scalar(12) / Scalar(41), Scalar(0),
       Scalar(1)},
  }};

  /// The weights of the 8th-order solution.
  static constexpr std::array<Scalar, stages> b{Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(34) / Scalar(105),
                                                Scalar(9) / Scalar(35),
                                                Scalar(9) / Scalar(35),
                                                Scalar(9) / Scalar(280),
                                                Scalar(9) / Scalar(280),
                                                Scalar(0),
                                                Scalar(41) / Scalar(840),
                                                Scalar(41) / Scalar(840)};

  /// e = b̂ − b, b̂ the weights of the 7th-order solution.
  static constexpr std::array<Scalar, stages> e{Scalar(-41) / Scalar(840),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(0),
                                                Scalar(-41) / Scalar(840),
                                                Scalar(41) / Scalar(840),
                                                Scalar(41) / Scalar(840)};

  /// The weights b_i(θ), i = 1..14, of the continuous extension (order 5; see the file
  /// comment), with which x(t + θh) ≈ x(t) + h·Σ_i b_i(θ)·k_i (k₁₄ = f(t + h, x(t + h))):
  /// b_i(θ) = r_i1·θ + r_i2·θ² + r_i3·θ³ + r_i4·θ⁴ + r_i5·θ⁵. Stages 2–5 and 11 have weight 0.
  static std::array<Scalar, stages + 1> dense_weights(Scalar theta) {
    static constexpr Scalar r[stages + 1][5] = {
        {Scalar(1), Scalar(-112974251) / Scalar(17839800), Scalar(44418587) / Scalar(2973300),
         Scalar(-2681409) / Scalar(180200), Scalar(5221) / Scalar(990)},
        {},
        {},
        {},
        {},
        {Scalar(0), Scalar(-430023) / Scalar(126140), Scalar(2821769) / Scalar(189210),
         Scalar(-324009) / Scalar(18020), Scalar(34) / Scalar(5)},
        {Scalar(0), Scalar(1849613) / Scalar(1261400), Scalar(-5363513) / Scalar(630700),
         Scalar(2503859) / Scalar(180200), Scalar(-33) / Scalar(5)},
        {Scalar(0), Scalar(7679689) / Scalar(1261400), Scalar(-11193589) / Scalar(630700),
         Scalar(3336727) / Scalar(180200), Scalar(-33) / Scalar(5)},
        {Scalar(0), Scalar(12331) / Scalar(63070), Scalar(1184) / Scalar(31535),
         Scalar(-18053) / Scalar(36040), Scalar(3) / Scalar(10)},
        {Scalar(0), Scalar(3467) / Scalar(2968), Scalar(-2831) / Scalar(1484),
         Scalar(25) / Scalar(53), Scalar(3) / Scalar(10)},
        {},
        {Scalar(0), Scalar(129631) / Scalar(94248), Scalar(-387151) / Scalar(78540),
         Scalar(508) / Scalar(85), Scalar(-235) / Scalar(99)},
        {Scalar(0), Scalar(2571) / Scalar(1400), Scalar(-15913) / Scalar(2100),
         Scalar(989) / Scalar(100), Scalar(-41) / Scalar(10)},
        {Scalar(0), Scalar(-203) / Scalar(85), Scalar(916) / Scalar(85), Scalar(-1308) / Scalar(85),
         Scalar(7)}};
    std::array<Scalar, stages + 1> weights{};
    for (std::size_t i = 0; i <= stages; ++i) {
      // Horner: θ·(r1 + θ·(r2 + θ·(r3 + θ·(r4 + θ·r5)))).
      weights[i] =
          theta *
          (r[i][0] + theta * (r[i][1] + theta * (r[i][2] + theta * (r[i][3] + theta * r[i][4]))));
    }
    return weights;
  }
};

/// Fehlberg's 7(8) pair as an odeint explicit error stepper (order 8, stepper order 8, error
/// order 7) on Matrix<Scalar> states, with dense output (calc_state); usable wherever odeint
/// accepts runge_kutta_fehlberg78, e.g. in controlled_runge_kutta.
template <class State, class Value = double, class Deriv = State, class Time = Value,
          class Algebra = detail::odeint_algebra, class Operations = detail::odeint_operations,
          class Resizer = detail::odeint_resizer>
class Rkf78Stepper : public boost::numeric::odeint::explicit_error_stepper_base<
                         Rkf78Stepper<State, Value, Deriv, Time, Algebra, Operations, Resizer>, 8,
                         8, 7, State, Value, Deriv, Time, Algebra, Operations, Resizer> {
 public:
  using stepper_base_type = boost::numeric::odeint::explicit_error_stepper_base<
      Rkf78Stepper, 8, 8, 7, State, Value, Deriv, Time, Algebra, Operations, Resizer>;
  using typename stepper_base_type::algebra_type;
  using typename stepper_base_type::deriv_type;
  using typename stepper_base_type::operations_type;
  using typename stepper_base_type::state_type;
  using typename stepper_base_type::time_type;
  using typename stepper_base_type::value_type;
  using typename stepper_base_type::wrapped_deriv_type;
  using typename stepper_base_type::wrapped_state_type;

  explicit Rkf78Stepper(const algebra_type& algebra = algebra_type())
      : stepper_base_type(algebra) {}

  /// One step without error estimate: out = x(t + dt), from dxdt = f(t, in). Keeps stages
  /// 2–13 for calc_state.
  template <class System, class StateIn, class DerivIn, class StateOut>
  void do_step_impl(System system, const StateIn& in, const DerivIn& dxdt, time_type t,
                    StateOut& out, time_type dt) {
    using T = Rkf78Tableau<value_type>;
    using ops = operations_type;
    namespace odeint = boost::numeric::odeint;
    typename odeint::unwrap_reference<System>::type& sys = system;
    auto& algebra = this->m_algebra;
    resizer_.adjust_size(in, odeint::detail::bind(&Rkf78Stepper::template resize_stages<StateIn>,
                                                  odeint::detail::ref(*this), odeint::detail::_1));
    // h·a_sj, the coefficient of k_j in stage s (1-based, as in the paper).
    const auto h = [dt](std::size_t s, std::size_t j) { return T::a[s - 1][j - 1] * dt; };
    const auto evaluate = [&](std::size_t s) { sys(x_tmp_.m_v, k(s), t + T::c[s - 1] * dt); };

    algebra.for_each3(x_tmp_.m_v, in, dxdt,
                      typename ops::template scale_sum2<value_type, time_type>(1, h(2, 1)));
    evaluate(2);
    algebra.for_each4(
        x_tmp_.m_v, in, dxdt, k(2),
        typename ops::template scale_sum3<value_type, time_type>(1, h(3, 1), h(3, 2)));
    evaluate(3);
    algebra.for_each4(
        x_tmp_.m_v, in, dxdt, k(3),
        typename ops::template scale_sum3<value_type, time_type>(1, h(4, 1), h(4, 3)));
    evaluate(4);
    algebra.for_each5(
        x_tmp_.m_v, in, dxdt, k(3), k(4),
        typename ops::template scale_sum4<value_type, time_type>(1, h(5, 1), h(5, 3), h(5, 4)));
    evaluate(5);
    algebra.for_each5(
        x_tmp_.m_v, in, dxdt, k(4), k(5),
        typename ops::template scale_sum4<value_type, time_type>(1, h(6, 1), h(6, 4), h(6, 5)));
    evaluate(6);
    algebra.for_each6(x_tmp_.m_v, in, dxdt, k(4), k(5), k(6),
                      typename ops::template scale_sum5<value_type, time_type>(1, h(7, 1), h(7, 4),
                                                                               h(7, 5), h(7, 6)));
    evaluate(7);
    algebra.for_each6(x_tmp_.m_v, in, dxdt, k(5), k(6), k(7),
                      typename ops::template scale_sum5<value_type, time_type>(1, h(8, 1), h(8, 5),
                                                                               h(8, 6), h(8, 7)));
    evaluate(8);
    algebra.for_each8(x_tmp_.m_v, in, dxdt, k(4), k(5), k(6), k(7), k(8),
                      typename ops::template scale_sum7<value_type, time_type>(
                          1, h(9, 1), h(9, 4), h(9, 5), h(9, 6), h(9, 7), h(9, 8)));
    evaluate(9);
    algebra.for_each9(x_tmp_.m_v, in, dxdt, k(4), k(5), k(6), k(7), k(8), k(9),
                      typename ops::template scale_sum8<value_type, time_type>(
                          1, h(10, 1), h(10, 4), h(10, 5), h(10, 6), h(10, 7), h(10, 8), h(10, 9)));
    evaluate(10);
    algebra.for_each10(
        x_tmp_.m_v, in, dxdt, k(4), k(5), k(6), k(7), k(8), k(9), k(10),
        typename ops::template scale_sum9<value_type, time_type>(
            1, h(11, 1), h(11, 4), h(11, 5), h(11, 6), h(11, 7), h(11, 8), h(11, 9), h(11, 10)));
    evaluate(11);
    algebra.for_each8(x_tmp_.m_v, in, dxdt, k(6), k(7), k(8), k(9), k(10),
                      typename ops::template scale_sum7<value_type, time_type>(
                          1, h(12, 1), h(12, 6), h(12, 7), h(12, 8), h(12, 9), h(12, 10)));
    evaluate(12);
    algebra.for_each11(x_tmp_.m_v, in, dxdt, k(4), k(5), k(6), k(7), k(8), k(9), k(10), k(12),
                       typename ops::template scale_sum10<value_type, time_type>(
                           1, h(13, 1), h(13, 4), h(13, 5), h(13, 6), h(13, 7), h(13, 8), h(13, 9),
                           h(13, 10), h(13, 12)));
    evaluate(13);
    algebra.for_each9(out, in, k(6), k(7), k(8), k(9), k(10), k(12), k(13),
                      typename ops::template scale_sum8<value_type, time_type>(
                          1, T::b[5] * dt, T::b[6] * dt, T::b[7] * dt, T::b[8] * dt, T::b[9] * dt,
                          T::b[11] * dt, T::b[12] * dt));
  }

  /// One step with error estimate xerr = dt·Σ e_i k_i.
  template <class System, class StateIn, class DerivIn, class StateOut, class Err>
  void do_step_impl(System system, const StateIn& in, const DerivIn& dxdt, time_type t,
                    StateOut& out, time_type dt, Err& xerr) {
    using T = Rkf78Tableau<value_type>;
    do_step_impl(system, in, dxdt, t, out, dt);
    this->m_algebra.for_each5(xerr, dxdt, k(11), k(12), k(13),
                              typename operations_type::template scale_sum4<time_type>(
                                  T::e[0] * dt, T::e[10] * dt, T::e[11] * dt, T::e[12] * dt));
  }

  /// Dense output after a step from (t_old, x_old) to (t_new, x_new): the state at @p t in
  /// [t_old, t_new] by the continuous extension (Rkf78Tableau::dense_weights), from the stages
  /// of that step, which must be the last one taken. @p deriv_old is k₁ = f(t_old, x_old),
  /// @p deriv_new is k₁₄ = f(t_new, x_new).
  template <class StateOut, class StateIn1, class DerivIn1, class StateIn2, class DerivIn2>
  void calc_state(time_type t, StateOut& x, const StateIn1& x_old, const DerivIn1& deriv_old,
                  time_type t_old, const StateIn2& /*x_new*/, const DerivIn2& deriv_new,
                  time_type t_new) const {
    const time_type step = t_new - t_old;
    const auto b = Rkf78Tableau<value_type>::dense_weights((t - t_old) / step);
    algebra_type::for_each11(x, x_old, deriv_old, k(6), k(7), k(8), k(9), k(10), k(12), k(13),
                             deriv_new,
                             typename operations_type::template scale_sum10<value_type, time_type>(
                                 1, step * b[0], step * b[5], step * b[6], step * b[7], step * b[8],
                                 step * b[9], step * b[11], step * b[12], step * b[13]));
  }

  /// Sizes all temporaries like @p x.
  template <class StateIn>
  void adjust_size(const StateIn& x) {
    resize_stages(x);
    stepper_base_type::adjust_size(x);
  }

 private:
  /// Stage k_s, s = 2..13.
  deriv_type& k(std::size_t s) { return stages_[s - 2].m_v; }
  const deriv_type& k(std::size_t s) const { return stages_[s - 2].m_v; }

  template <class StateIn>
  bool resize_stages(const StateIn& x) {
    namespace odeint = boost::numeric::odeint;
    bool resized = odeint::adjust_size_by_resizeability(
        x_tmp_, x, typename odeint::is_resizeable<state_type>::type());
    for (wrapped_deriv_type& stage : stages_) {
      resized |= odeint::adjust_size_by_resizeability(
          stage, x, typename odeint::is_resizeable<deriv_type>::type());
    }
    return resized;
  }

  wrapped_state_type x_tmp_;
  std::array<wrapped_deriv_type, Rkf78Tableau<value_type>::stages - 1> stages_;
  Resizer resizer_;
};

}  // namespace flowmatch
