/// @file rkf78.hpp
/// @brief Fehlberg's 7(8) pair with a continuous extension, written as an odeint error stepper.
///
/// E. Fehlberg, "Classical fifth-, sixth-, seventh-, and eighth-order Runge–Kutta formulas with
/// stepsize control", NASA TR R-287 (1968). Thirteen stages; the step propagates the
/// 8th-order solution (stages 6–10, 12 and 13), and the error estimate is the 7th-order
/// solution minus it, −h·41/840·(k₁ + k₁₁ − k₁₂ − k₁₃): the steps and estimates of odeint's
/// runge_kutta_fehlberg78, bit for bit (its zero terms left out).
///
/// Dense output. k₁₄ = f(t + h, x(t + h)) is the first stage of the next step and costs
/// nothing, but no continuous extension over k₁..k₁₄ has order above 5, and an error falling
/// like h⁶ misses the tolerance that the step's h⁸ estimate meets, the more so the tighter the
/// tolerance. Three further stages give order 7 (as many as the order-7 dense output of Hairer's
/// DOP853 takes):
///   k₁₅, k₁₆ at c = (7 ∓ √7)/14 on rows over k₁..k₁₄ of stage order 6 (0 and 1 aside, the
///   only points where such rows exist), k₁₇ at c = 1/2 on a row over k₁..k₁₆ of stage order 7
///   (the only interior point where one exists), and
///   x(t + θh) ≈ x(t) + h·Σ_{i=1..17} b_i(θ)·k_i,  θ in [0, 1],
/// with b_i polynomials of degree 7, b(0) = 0, b(1) = the step's weights (the interpolant is
/// continuous across steps), b'(0) = e₁ and b'(1) = e₁₄ (C¹). The order conditions
/// Σ_i b_i(θ)·Φ_i(τ) = θ^|τ|/γ(τ) hold for every rooted tree τ with |τ| ≤ 7: the error within a
/// step is O(h⁸), against O(h⁹) for the step. Stages 2–5 and 11 have weight 0 in the new rows
/// and in b(θ). docs/derivations/rkf78_dense_output.py finds the points and derives the rows and
/// weights in exact arithmetic (rationals and √7), each with the smallest errors of the next
/// order among its solutions.
///
/// Cost: the extra stages are evaluated by prepare_dense_output, which the integrator calls
/// once in each accepted step that holds a time to interpolate, and never otherwise: a
/// trajectory costs 3 evaluations per such step on top of the 13 of every accepted step.
///
/// Accuracy: on Van der Pol (μ = 1), steps of h = 0.4, 0.2, 0.1 and 0.05 estimate their errors
/// at 2e-5, 2.4e-8, 4.8e-11 and 6.9e-14 and interpolate with errors of 4.1e-6, 6.3e-9, 1.8e-11
/// and 6.6e-14 (printed by the derivation script). On the Gaussian CondOT flow
/// (tests/test_solver.cpp) with 101 output times and rtol = atol = tol, the largest interpolated
/// error, over the scale tol·(1 + |x|), against solves stopping at each time and against the
/// closed-form flow:
///   tol      1e-4   1e-6   1e-8   1e-10  1e-12
///   stopped  0.22   0.06   0.79   1.21   1.10
///   exact    0.22   0.08   0.79   1.07   1.07
/// (dopri5 and tsit5: up to 3.4.) The steps there are 3, 4, 7, 10 and 17, and the evaluations
/// 41, 54, 93, 144 and 235 without output times, 50, 66, 114, 174 and 286 with them.
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

  /// The stages of the dense output, 15..17 (see the file comment), with 0-based indices as
  /// in a: stage 15 + s is evaluated at t + dense_c[s]·h on x + h·Σ_j dense_a[s][j]·k_{j+1},
  /// where k₁₄ = f(t + h, x(t + h)). c₁₅, c₁₆ = (7 ∓ √7)/14; the irrational coefficients are
  /// rounded to 17 significant digits.
  static constexpr std::size_t dense_stages = 3;

  static constexpr std::array<Scalar, dense_stages> dense_c{
      Scalar(0.3110177634953864), Scalar(0.68898223650461365), Scalar(1) / Scalar(2)};

  static constexpr std::array<std::array<Scalar, stages + dense_stages>, dense_stages> dense_a{{
      {Scalar(0.060660382521184698), Scalar(0), Scalar(0), Scalar(0), Scalar(0),
       Scalar(0.015475668449826594), Scalar(-0.0016532312388534407), Scalar(0.23449837225968884),
       Scalar(-0.0025893915231252587), Scalar(0.012170083695533634), Scalar(0),
       Scalar(-0.0081365081547934513), Scalar(0.013187423029786439), Scalar(-0.012595035543861663),
       Scalar(0), Scalar(0)},
      {Scalar(-0.075966504970164286), Scalar(0), Scalar(0), Scalar(0), Scalar(0),
       Scalar(0.30833385535969721), Scalar(0.022644484883168309), Scalar(0.25879608838171059),
       Scalar(0.019972773447323511), Scalar(0.034732248665982401), Scalar(0),
       Scalar(0.12418364129376333), Scalar(-0.031615508549708696), Scalar(0.027901157992841253),
       Scalar(0), Scalar(0)},
      {Scalar(-1) / Scalar(288), Scalar(0), Scalar(0), Scalar(0), Scalar(0),
       Scalar(17) / Scalar(105), Scalar(3) / Scalar(140), Scalar(33) / Scalar(140),
       Scalar(3) / Scalar(320), Scalar(51) / Scalar(2240), Scalar(0), Scalar(123) / Scalar(2240),
       Scalar(-41) / Scalar(6720), Scalar(1) / Scalar(288), Scalar(0.064306455477264352),
       Scalar(-0.064306455477264352)},
  }};

  /// The weights b_i(θ), i = 1..17, of the continuous extension of order 7 (see the file
  /// comment), with which x(t + θh) ≈ x(t) + h·Σ_i b_i(θ)·k_i:
  /// b_i(θ) = r_i1·θ + r_i2·θ² + ... + r_i7·θ⁷. Stages 2–5 and 11 have weight 0.
  static std::array<Scalar, stages + 1 + dense_stages> dense_weights(Scalar theta) {
    static constexpr Scalar r[stages + 1 + dense_stages][7] = {
        {Scalar(1), Scalar(-71) / Scalar(6), Scalar(478) / Scalar(9), Scalar(-715) / Scalar(6),
         Scalar(428) / Scalar(3), Scalar(-784) / Scalar(9), Scalar(64) / Scalar(3)},
        {},
        {},
        {},
        {},
        {Scalar(0), Scalar(102) / Scalar(7), Scalar(-1972) / Scalar(21), Scalar(1836) / Scalar(7),
         Scalar(-13192) / Scalar(35), Scalar(272), Scalar(-544) / Scalar(7)},
        {Scalar(0), Scalar(27) / Scalar(7), Scalar(-246) / Scalar(7), Scalar(900) / Scalar(7),
         Scalar(-7956) / Scalar(35), Scalar(192), Scalar(-432) / Scalar(7)},
        {Scalar(0), Scalar(135) / Scalar(7), Scalar(-114), Scalar(288), Scalar(-12996) / Scalar(35),
         Scalar(240), Scalar(-432) / Scalar(7)},
        {Scalar(0), Scalar(27) / Scalar(28), Scalar(-48) / Scalar(7), Scalar(1179) / Scalar(56),
         Scalar(-1152) / Scalar(35), Scalar(51) / Scalar(2), Scalar(-54) / Scalar(7)},
        {Scalar(0), Scalar(27) / Scalar(14), Scalar(-165) / Scalar(14), Scalar(1737) / Scalar(56),
         Scalar(-1467) / Scalar(35), Scalar(57) / Scalar(2), Scalar(-54) / Scalar(7)},
        {},
        {Scalar(0), Scalar(123) / Scalar(28), Scalar(-533) / Scalar(21), Scalar(3485) / Scalar(56),
         Scalar(-2706) / Scalar(35), Scalar(287) / Scalar(6), Scalar(-82) / Scalar(7)},
        {Scalar(0), Scalar(0), Scalar(-41) / Scalar(14), Scalar(943) / Scalar(56),
         Scalar(-1271) / Scalar(35), Scalar(205) / Scalar(6), Scalar(-82) / Scalar(7)},
        {Scalar(0), Scalar(-1) / Scalar(2), Scalar(68) / Scalar(9), Scalar(-205) / Scalar(6),
         Scalar(68), Scalar(-560) / Scalar(9), Scalar(64) / Scalar(3)},
        {Scalar(0), Scalar(-22.506753059150711), Scalar(171.82279817211585),
         Scalar(-500.93462922059399), Scalar(707.09454282810998), Scalar(-486.14262538714775),
         Scalar(392) / Scalar(3)},
        {Scalar(0), Scalar(-10.159913607515955), Scalar(89.510535161217476),
         Scalar(-315.73203744607264), Scalar(534.23879050522339), Scalar(-428.52404127951888),
         Scalar(392) / Scalar(3)},
        {Scalar(0), Scalar(0), Scalar(-32), Scalar(160), Scalar(-288), Scalar(224), Scalar(-64)},
    };
    std::array<Scalar, stages + 1 + dense_stages> weights{};
    for (std::size_t i = 0; i < weights.size(); ++i) {
      // Horner: θ·(r1 + θ·(r2 + ... + θ·r7)).
      Scalar sum = r[i][6];
      for (std::size_t m = 6; m-- > 0;) sum = r[i][m] + theta * sum;
      weights[i] = theta * sum;
    }
    return weights;
  }
};

/// Fehlberg's 7(8) pair as an odeint explicit error stepper (order 8, stepper order 8, error
/// order 7) on Matrix<Scalar> states, with dense output (prepare_dense_output, then
/// calc_state); usable wherever odeint accepts runge_kutta_fehlberg78, e.g. in
/// controlled_runge_kutta.
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
  /// 2–13 for the dense output.
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

  /// Evaluates the dense output's stages k₁₅..k₁₇ (see the file comment) of the last step
  /// taken, from (t_old, x_old) to t_new: three evaluations of @p system, at t_old + c·(t_new −
  /// t_old) with c = (7 − √7)/14, (7 + √7)/14 and 1/2. Call it once after the step and before
  /// calc_state. @p deriv_old is k₁ = f(t_old, x_old), @p deriv_new is k₁₄ = f(t_new, x_new).
  template <class System, class StateIn, class DerivIn1, class DerivIn2>
  void prepare_dense_output(System system, const StateIn& x_old, const DerivIn1& deriv_old,
                            time_type t_old, const DerivIn2& deriv_new, time_type t_new) {
    using T = Rkf78Tableau<value_type>;
    using ops = operations_type;
    typename boost::numeric::odeint::unwrap_reference<System>::type& sys = system;
    auto& algebra = this->m_algebra;
    const time_type dt = t_new - t_old;
    // h·a_sj, the coefficient of k_j in stage s (1-based).
    const auto h = [dt](std::size_t s, std::size_t j) { return T::dense_a[s - 15][j - 1] * dt; };
    for (const std::size_t s : {std::size_t{15}, std::size_t{16}}) {
      algebra.for_each11(x_tmp_.m_v, x_old, deriv_old, k(6), k(7), k(8), k(9), k(10), k(12), k(13),
                         deriv_new,
                         typename ops::template scale_sum10<value_type, time_type>(
                             1, h(s, 1), h(s, 6), h(s, 7), h(s, 8), h(s, 9), h(s, 10), h(s, 12),
                             h(s, 13), h(s, 14)));
      sys(x_tmp_.m_v, k(s), t_old + T::dense_c[s - 15] * dt);
    }
    algebra.for_each13(x_tmp_.m_v, x_old, deriv_old, k(6), k(7), k(8), k(9), k(10), k(12), k(13),
                       deriv_new, k(15), k(16),
                       typename ops::template scale_sum12<value_type, time_type>(
                           1, h(17, 1), h(17, 6), h(17, 7), h(17, 8), h(17, 9), h(17, 10),
                           h(17, 12), h(17, 13), h(17, 14), h(17, 15), h(17, 16)));
    sys(x_tmp_.m_v, k(17), t_old + T::dense_c[2] * dt);
  }

  /// Dense output after a step from (t_old, x_old) to (t_new, x_new): the state at @p t in
  /// [t_old, t_new] by the continuous extension (Rkf78Tableau::dense_weights), from the stages
  /// of that step, which must be the last one taken, and from prepare_dense_output, which must
  /// have been called after it. @p deriv_old is k₁ = f(t_old, x_old), @p deriv_new is
  /// k₁₄ = f(t_new, x_new).
  template <class StateOut, class StateIn1, class DerivIn1, class StateIn2, class DerivIn2>
  void calc_state(time_type t, StateOut& x, const StateIn1& x_old, const DerivIn1& deriv_old,
                  time_type t_old, const StateIn2& /*x_new*/, const DerivIn2& deriv_new,
                  time_type t_new) const {
    const time_type step = t_new - t_old;
    const auto b = Rkf78Tableau<value_type>::dense_weights((t - t_old) / step);
    algebra_type::for_each14(
        x, x_old, deriv_old, k(6), k(7), k(8), k(9), k(10), k(12), k(13), deriv_new, k(15), k(16),
        k(17),
        typename operations_type::template scale_sum13<value_type, time_type>(
            1, step * b[0], step * b[5], step * b[6], step * b[7], step * b[8], step * b[9],
            step * b[11], step * b[12], step * b[13], step * b[14], step * b[15], step * b[16]));
  }

  /// Sizes all temporaries like @p x.
  template <class StateIn>
  void adjust_size(const StateIn& x) {
    resize_stages(x);
    stepper_base_type::adjust_size(x);
  }

 private:
  /// Stage k_s: s = 2..13 of the step, 15..17 of the dense output.
  deriv_type& k(std::size_t s) { return s < 14 ? stages_[s - 2].m_v : dense_stages_[s - 15].m_v; }
  const deriv_type& k(std::size_t s) const {
    return s < 14 ? stages_[s - 2].m_v : dense_stages_[s - 15].m_v;
  }

  template <class StateIn>
  bool resize_stages(const StateIn& x) {
    namespace odeint = boost::numeric::odeint;
    bool resized = odeint::adjust_size_by_resizeability(
        x_tmp_, x, typename odeint::is_resizeable<state_type>::type());
    for (wrapped_deriv_type& stage : stages_) {
      resized |= odeint::adjust_size_by_resizeability(
          stage, x, typename odeint::is_resizeable<deriv_type>::type());
    }
    for (wrapped_deriv_type& stage : dense_stages_) {
      resized |= odeint::adjust_size_by_resizeability(
          stage, x, typename odeint::is_resizeable<deriv_type>::type());
    }
    return resized;
  }

  wrapped_state_type x_tmp_;
  std::array<wrapped_deriv_type, Rkf78Tableau<value_type>::stages - 1> stages_;  // k₂..k₁₃
  std::array<wrapped_deriv_type, Rkf78Tableau<value_type>::dense_stages> dense_stages_;  // k₁₅..k₁₇
  Resizer resizer_;
};

}  // namespace flowmatch
