/// @file explicit_tableaux.hpp
/// @brief Fixed-step explicit Runge–Kutta methods that odeint does not name, as odeint
/// explicit_generic_rk steppers on Matrix<Scalar> states: explicit midpoint, Heun's second-
/// and third-order methods and Kutta's 3/8 rule. (Forward Euler and the classic RK4 are
/// odeint's euler and runge_kutta4.)
///
/// Butcher tableaux (c | A, b):
///   midpoint: c = (0, 1/2),        a21 = 1/2,                         b = (0, 1)
///   heun2:    c = (0, 1),          a21 = 1,                           b = (1/2, 1/2)
///   heun3:    c = (0, 1/3, 2/3),   a21 = 1/3, a31 = 0, a32 = 2/3,     b = (1/4, 0, 3/4)
///   rk38:     c = (0, 1/3, 2/3, 1), a21 = 1/3, a31 = −1/3, a32 = 1,
///             a41 = 1, a42 = −1, a43 = 1,                             b = (1, 3, 3, 1)/8
#pragma once

#include <cstddef>

#include <boost/array.hpp>
#include <boost/fusion/container/generation/make_vector.hpp>
#include <boost/numeric/odeint/stepper/explicit_generic_rk.hpp>

#include "flowmatch/core/types.hpp"
#include "flowmatch/solver/odeint_eigen.hpp"

namespace flowmatch::detail {

/// An explicit_generic_rk stepper with @p Stages stages of order @p Order on Matrix<Scalar>.
template <std::size_t Stages, std::size_t Order, class Scalar>
using GenericRkStepper =
    boost::numeric::odeint::explicit_generic_rk<Stages, Order, Matrix<Scalar>, Scalar,
                                                Matrix<Scalar>, Scalar, odeint_algebra,
                                                odeint_operations, odeint_resizer>;

/// A row of a Butcher tableau.
template <class Scalar, std::size_t Size>
using TableauRow = boost::array<Scalar, Size>;

/// The explicit midpoint rule, order 2.
template <class Scalar>
GenericRkStepper<2, 2, Scalar> make_midpoint_stepper() {
  const Scalar half = Scalar(1) / Scalar(2);
  return GenericRkStepper<2, 2, Scalar>(boost::fusion::make_vector(TableauRow<Scalar, 1>{{half}}),
                                        TableauRow<Scalar, 2>{{Scalar(0), Scalar(1)}},
                                        TableauRow<Scalar, 2>{{Scalar(0), half}});
}

/// Heun's trapezoidal method, order 2.
template <class Scalar>
GenericRkStepper<2, 2, Scalar> make_heun2_stepper() {
  const Scalar half = Scalar(1) / Scalar(2);
  return GenericRkStepper<2, 2, Scalar>(
      boost::fusion::make_vector(TableauRow<Scalar, 1>{{Scalar(1)}}),
      TableauRow<Scalar, 2>{{half, half}}, TableauRow<Scalar, 2>{{Scalar(0), Scalar(1)}});
}

/// Heun's third-order method.
template <class Scalar>
GenericRkStepper<3, 3, Scalar> make_heun3_stepper() {
  const Scalar third = Scalar(1) / Scalar(3);
  const Scalar two_thirds = Scalar(2) / Scalar(3);
  return GenericRkStepper<3, 3, Scalar>(
      boost::fusion::make_vector(TableauRow<Scalar, 1>{{third}},
                                 TableauRow<Scalar, 2>{{Scalar(0), two_thirds}}),
      TableauRow<Scalar, 3>{{Scalar(1) / Scalar(4), Scalar(0), Scalar(3) / Scalar(4)}},
      TableauRow<Scalar, 3>{{Scalar(0), third, two_thirds}});
}

/// Kutta's 3/8 rule, order 4.
template <class Scalar>
GenericRkStepper<4, 4, Scalar> make_rk38_stepper() {
  const Scalar third = Scalar(1) / Scalar(3);
  const Scalar eighth = Scalar(1) / Scalar(8);
  const Scalar three_eighths = Scalar(3) / Scalar(8);
  return GenericRkStepper<4, 4, Scalar>(
      boost::fusion::make_vector(TableauRow<Scalar, 1>{{third}},
                                 TableauRow<Scalar, 2>{{-third, Scalar(1)}},
                                 TableauRow<Scalar, 3>{{Scalar(1), Scalar(-1), Scalar(1)}}),
      TableauRow<Scalar, 4>{{eighth, three_eighths, three_eighths, eighth}},
      TableauRow<Scalar, 4>{{Scalar(0), third, Scalar(2) / Scalar(3), Scalar(1)}});
}

}  // namespace flowmatch::detail
