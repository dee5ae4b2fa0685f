/// @file tsit5.hpp
/// @brief Tsitouras 5(4): an explicit FSAL Runge–Kutta pair, written as an odeint error stepper.
///
/// Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the first column simplifying
/// assumption", Computers & Mathematics with Applications 62 (2011) 770–775, Table 1.
/// Seven stages; the seventh is f(t + h, x_new), which is also the first stage of the next
/// step (first same as last), so a step costs six evaluations. The propagated solution has
/// order 5, the embedded one order 4; the error estimate is h·Σ (b_i − b̂_i)·k_i. The
/// continuous extension of the same paper gives dense output between the ends of a step.
#pragma once

#include <array>
#include <cstddef>

#include <boost/numeric/odeint/stepper/base/explicit_error_stepper_fsal_base.hpp>
#include <boost/numeric/odeint/util/bind.hpp>
#include <boost/numeric/odeint/util/copy.hpp>
#include <boost/numeric/odeint/util/resizer.hpp>
#include <boost/numeric/odeint/util/same_instance.hpp>
#include <boost/numeric/odeint/util/state_wrapper.hpp>
#include <boost/numeric/odeint/util/unwrap_reference.hpp>

#include "flowmatch/solver/odeint_eigen.hpp"

namespace flowmatch {

/// Coefficients of the Tsitouras 5(4) pair (rows a_i of A; b = a_7; e = b − b̂).
template <class Scalar>
struct Tsit5Tableau {
  static constexpr Scalar c2 = Scalar(0.161);
  static constexpr Scalar c3 = Scalar(0.327);
  static constexpr Scalar c4 = Scalar(0.9);
  static constexpr Scalar c5 = Scalar(0.9800255409045097);

  static constexpr Scalar a21 = Scalar(0.161);
  static constexpr Scalar a31 = Scalar(-0.008480655492356989);
  static constexpr Scalar a32 = Scalar(0.335480655492357);
  static constexpr Scalar a41 = Scalar(2.897153057105493);
  static constexpr Scalar a42 = Scalar(-6.359448489975075);
  static constexpr Scalar a43 = Scalar(4.3622954328695815);
  static constexpr Scalar a51 = Scalar(5.325864828439257);
  static constexpr Scalar a52 = Scalar(-11.748883564062828);
  static constexpr Scalar a53 = Scalar(7.4955393428898365);
  static constexpr Scalar a54 = Scalar(-0.09249506636175525);
  static constexpr Scalar a61 = Scalar(5.86145544294642);
  static constexpr Scalar a62 = Scalar(-12.92096931784711);
  static constexpr Scalar a63 = Scalar(8.159367898576159);
  static constexpr Scalar a64 = Scalar(-0.071584973281401);
  static constexpr Scalar a65 = Scalar(-0.028269050394068383);

  static constexpr Scalar b1 = Scalar(0.09646076681806523);
  static constexpr Scalar b2 = Scalar(0.01);
  static constexpr Scalar b3 = Scalar(0.4798896504144996);
  static constexpr Scalar b4 = Scalar(1.379008574103742);
  static constexpr Scalar b5 = Scalar(-3.290069515436081);
  static constexpr Scalar b6 = Scalar(2.324710524099774);

  static constexpr Scalar e1 = Scalar(-0.00178001105222577714);
  static constexpr Scalar e2 = Scalar(-0.0008164344596567469);
  static constexpr Scalar e3 = Scalar(0.007880878010261995);
  static constexpr Scalar e4 = Scalar(-0.1447110071732629);
  static constexpr Scalar e5 = Scalar(0.5823571654525552);
  static constexpr Scalar e6 = Scalar(-0.45808210592918697);
  static constexpr Scalar e7 = Scalar(1) / Scalar(66);

  /// The weights b_i(θ) of Tsitouras's continuous extension (order 4), with which
  /// x(t + θh) ≈ x(t) + h·Σ_{i=1..7} b_i(θ)·k_i for θ in [0, 1] (k_7 = f(t + h, x(t + h))):
  /// b_i(θ) = r_i1·θ + r_i2·θ² + r_i3·θ³ + r_i4·θ⁴, the paper's polynomials expanded. At θ = 1
  /// they are the weights b_i of the step (b_7 = 0).
  static std::array<Scalar, 7> dense_weights(Scalar theta) {
    static constexpr Scalar r[7][4] = {{Scalar(1), Scalar(-2.763706197274826),
                                        Scalar(2.9132554618219126), Scalar(-1.0530884977290216)},
                                       {Scalar(0), Scalar(0.1317), Scalar(-0.2234), Scalar(0.1017)},
                                       {Scalar(0), Scalar(3.9302962368947516),
                                        Scalar(-5.941033872131505), Scalar(2.490627285651253)},
                                       {Scalar(0), Scalar(-12.411077166933676),
                                        Scalar(30.33818863028232), Scalar(-16.548102889244902)},
                                       {Scalar(0), Scalar(37.50931341651104),
                                        Scalar(-88.1789048947664), Scalar(47.37952196281928)},
                                       {Scalar(0), Scalar(-27.896526289197286),
                                        Scalar(65.09189467479366), Scalar(-34.87065786149661)},
                                       {Scalar(0), Scalar(1.5), Scalar(-4), Scalar(2.5)}};
    std::array<Scalar, 7> weights{};
    for (std::size_t i = 0; i < 7; ++i) {
      // Horner: θ·(r1 + θ·(r2 + θ·(r3 + θ·r4))).
      weights[i] = theta * (r[i][0] + theta * (r[i][1] + theta * (r[i][2] + theta * r[i][3])));
    }
    return weights;
  }
};

/// The Tsitouras 5(4) pair as an odeint explicit FSAL error stepper (order 5, stepper order
/// 5, error order 4) on Matrix<Scalar> states; usable wherever odeint accepts
/// runge_kutta_dopri5, e.g. in controlled_runge_kutta.
template <class State, class Value = double, class Deriv = State, class Time = Value,
          class Algebra = detail::odeint_algebra, class Operations = detail::odeint_operations,
          class Resizer = detail::odeint_resizer>
class Tsit5Stepper : public boost::numeric::odeint::explicit_error_stepper_fsal_base<
                         Tsit5Stepper<State, Value, Deriv, Time, Algebra, Operations, Resizer>, 5,
                         5, 4, State, Value, Deriv, Time, Algebra, Operations, Resizer> {
 public:
  using stepper_base_type = boost::numeric::odeint::explicit_error_stepper_fsal_base<
      Tsit5Stepper, 5, 5, 4, State, Value, Deriv, Time, Algebra, Operations, Resizer>;
  using typename stepper_base_type::algebra_type;
  using typename stepper_base_type::deriv_type;
  using typename stepper_base_type::operations_type;
  using typename stepper_base_type::state_type;
  using typename stepper_base_type::time_type;
  using typename stepper_base_type::value_type;
  using typename stepper_base_type::wrapped_deriv_type;
  using typename stepper_base_type::wrapped_state_type;

  explicit Tsit5Stepper(const algebra_type& algebra = algebra_type())
      : stepper_base_type(algebra) {}

  /// One step without error estimate: out = x(t + dt), dxdt_out = f(t + dt, out).
  template <class System, class StateIn, class DerivIn, class StateOut, class DerivOut>
  void do_step_impl(System system, const StateIn& in, const DerivIn& dxdt_in, time_type t,
                    StateOut& out, DerivOut& dxdt_out, time_type dt) {
    using T = Tsit5Tableau<value_type>;
    using ops = operations_type;
    namespace odeint = boost::numeric::odeint;
    typename odeint::unwrap_reference<System>::type& sys = system;
    auto& algebra = this->m_algebra;
    resizer_.adjust_size(in, odeint::detail::bind(&Tsit5Stepper::template resize_stages<StateIn>,
                                                  odeint::detail::ref(*this), odeint::detail::_1));

    algebra.for_each3(x_tmp_.m_v, in, dxdt_in,
                      typename ops::template scale_sum2<value_type, time_type>(1, dt * T::a21));
    sys(x_tmp_.m_v, k2_.m_v, t + dt * T::c2);
    algebra.for_each4(x_tmp_.m_v, in, dxdt_in, k2_.m_v,
                      typename ops::template scale_sum3<value_type, time_type, time_type>(
                          1, dt * T::a31, dt * T::a32));
    sys(x_tmp_.m_v, k3_.m_v, t + dt * T::c3);
    algebra.for_each5(
        x_tmp_.m_v, in, dxdt_in, k2_.m_v, k3_.m_v,
        typename ops::template scale_sum4<value_type, time_type, time_type, time_type>(
            1, dt * T::a41, dt * T::a42, dt * T::a43));
    sys(x_tmp_.m_v, k4_.m_v, t + dt * T::c4);
    algebra.for_each6(
        x_tmp_.m_v, in, dxdt_in, k2_.m_v, k3_.m_v, k4_.m_v,
        typename ops::template scale_sum5<value_type, time_type, time_type, time_type, time_type>(
            1, dt * T::a51, dt * T::a52, dt * T::a53, dt * T::a54));
    sys(x_tmp_.m_v, k5_.m_v, t + dt * T::c5);
    algebra.for_each7(x_tmp_.m_v, in, dxdt_in, k2_.m_v, k3_.m_v, k4_.m_v, k5_.m_v,
                      typename ops::template scale_sum6<value_type, time_type, time_type, time_type,
                                                        time_type, time_type>(
                          1, dt * T::a61, dt * T::a62, dt * T::a63, dt * T::a64, dt * T::a65));
    sys(x_tmp_.m_v, k6_.m_v, t + dt);
    algebra.for_each8(
        out, in, dxdt_in, k2_.m_v, k3_.m_v, k4_.m_v, k5_.m_v, k6_.m_v,
        typename ops::template scale_sum7<value_type, time_type, time_type, time_type, time_type,
                                          time_type, time_type>(
            1, dt * T::b1, dt * T::b2, dt * T::b3, dt * T::b4, dt * T::b5, dt * T::b6));
    sys(out, dxdt_out, t + dt);
  }

  /// One step with error estimate xerr = dt·Σ e_i k_i (k_7 = dxdt_out).
  template <class System, class StateIn, class DerivIn, class StateOut, class DerivOut, class Err>
  void do_step_impl(System system, const StateIn& in, const DerivIn& dxdt_in, time_type t,
                    StateOut& out, DerivOut& dxdt_out, time_type dt, Err& xerr) {
    using T = Tsit5Tableau<value_type>;
    namespace odeint = boost::numeric::odeint;
    // In place (dxdt_in is dxdt_out), k_1 is overwritten by k_7: keep a copy.
    const bool in_place = odeint::same_instance(dxdt_in, dxdt_out);
    if (in_place) {
      dxdt_resizer_.adjust_size(
          in, odeint::detail::bind(&Tsit5Stepper::template resize_first_stage<StateIn>,
                                   odeint::detail::ref(*this), odeint::detail::_1));
      odeint::copy(dxdt_in, k1_copy_.m_v);
    }
    do_step_impl(system, in, dxdt_in, t, out, dxdt_out, dt);
    this->m_algebra.for_each8(
        xerr, in_place ? k1_copy_.m_v : dxdt_in, k2_.m_v, k3_.m_v, k4_.m_v, k5_.m_v, k6_.m_v,
        dxdt_out,
        typename operations_type::template scale_sum7<time_type, time_type, time_type, time_type,
                                                      time_type, time_type, time_type>(
            dt * T::e1, dt * T::e2, dt * T::e3, dt * T::e4, dt * T::e5, dt * T::e6, dt * T::e7));
  }

  /// Dense output after a step from (t_old, x_old) to (t_new, x_new): the state at @p t in
  /// [t_old, t_new] by the continuous extension (Tsit5Tableau::dense_weights), from the stages
  /// of that step, which must be the last one taken. @p deriv_old is k_1 = f(t_old, x_old),
  /// @p deriv_new is k_7 = f(t_new, x_new).
  template <class StateOut, class StateIn1, class DerivIn1, class StateIn2, class DerivIn2>
  void calc_state(time_type t, StateOut& x, const StateIn1& x_old, const DerivIn1& deriv_old,
                  time_type t_old, const StateIn2& /*x_new*/, const DerivIn2& deriv_new,
                  time_type t_new) const {
    const time_type step = t_new - t_old;
    const auto b = Tsit5Tableau<value_type>::dense_weights((t - t_old) / step);
    algebra_type::for_each9(
        x, x_old, deriv_old, k2_.m_v, k3_.m_v, k4_.m_v, k5_.m_v, k6_.m_v, deriv_new,
        typename operations_type::template scale_sum8<value_type, time_type, time_type, time_type,
                                                      time_type, time_type, time_type, time_type>(
            1, step * b[0], step * b[1], step * b[2], step * b[3], step * b[4], step * b[5],
            step * b[6]));
  }

  /// Sizes all temporaries like @p x.
  template <class StateIn>
  void adjust_size(const StateIn& x) {
    resize_stages(x);
    resize_first_stage(x);
    stepper_base_type::adjust_size(x);
  }

 private:
  template <class StateIn>
  bool resize_stages(const StateIn& x) {
    namespace odeint = boost::numeric::odeint;
    bool resized = odeint::adjust_size_by_resizeability(
        x_tmp_, x, typename odeint::is_resizeable<state_type>::type());
    for (wrapped_deriv_type* stage : {&k2_, &k3_, &k4_, &k5_, &k6_}) {
      resized |= odeint::adjust_size_by_resizeability(
          *stage, x, typename odeint::is_resizeable<deriv_type>::type());
    }
    return resized;
  }

  template <class StateIn>
  bool resize_first_stage(const StateIn& x) {
    namespace odeint = boost::numeric::odeint;
    return odeint::adjust_size_by_resizeability(k1_copy_, x,
                                                typename odeint::is_resizeable<deriv_type>::type());
  }

  wrapped_state_type x_tmp_;
  wrapped_deriv_type k2_, k3_, k4_, k5_, k6_;
  wrapped_deriv_type k1_copy_;
  Resizer resizer_;
  Resizer dxdt_resizer_;
};

}  // namespace flowmatch
