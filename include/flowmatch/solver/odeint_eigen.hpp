/// @file odeint_eigen.hpp
/// @brief Adaptations that let Boost.Odeint steppers use dense Eigen matrices as states.
///
/// The solvers hand a rows×N `Matrix<Scalar>` to odeint directly, with
/// `vector_space_algebra` (whole-state expressions such as `x = a·y + b·z`, which Eigen
/// evaluates in one pass without temporaries). Odeint's own Eigen support provides the
/// resizing traits (eigen_resize.hpp, included here). Its algebra header is not included: it
/// adds operators to namespace Eigen that are not needed here. Two further points need care
/// with Eigen 3.4:
///   - odeint copies states as ranges when the type has begin()/end(), which Eigen 3.4 dense
///     types now have; copy_impl_sfinae is specialised to plain assignment;
///   - odeint reads the value of a state through get_unit_value, which returns by value;
///     get_unit_value_impl is specialised to return a const reference, so no whole-state copy
///     is made.
/// Pass systems to odeint as `std::ref(system)`: odeint takes systems by value.
#pragma once

#include <type_traits>

#include <boost/numeric/odeint/algebra/default_operations.hpp>
#include <boost/numeric/odeint/algebra/vector_space_algebra.hpp>
#include <boost/numeric/odeint/external/eigen/eigen_resize.hpp>
#include <boost/numeric/odeint/util/copy.hpp>
#include <boost/numeric/odeint/util/resizer.hpp>
#include <boost/numeric/odeint/util/unit_helper.hpp>
#include "flowmatch/detail/eigen_core.hpp"

namespace flowmatch::detail {

/// True for Eigen dense matrices and arrays.
template <class T>
inline constexpr bool is_eigen_dense_v = std::is_base_of_v<Eigen::DenseBase<T>, T>;

}  // namespace flowmatch::detail

namespace boost::numeric::odeint {

/// Copies one Eigen dense object into another by assignment (no range copy).
template <class From, class To>
struct copy_impl_sfinae<From, To,
                        std::enable_if_t<flowmatch::detail::is_eigen_dense_v<From> &&
                                         flowmatch::detail::is_eigen_dense_v<To>>> {
  static void copy(const From& from, To& to) { to = from; }
};

namespace detail {

/// Reads an Eigen state by const reference instead of by value.
template <class T>
struct get_unit_value_impl<T, std::enable_if_t<flowmatch::detail::is_eigen_dense_v<T>>> {
  using result_type = const T&;
  static const T& value(const T& state) { return state; }
};

}  // namespace detail
}  // namespace boost::numeric::odeint

namespace flowmatch::detail {

/// The algebra, operations and resizer every solver stepper uses on Matrix<Scalar> states.
using odeint_algebra = boost::numeric::odeint::vector_space_algebra;
using odeint_operations = boost::numeric::odeint::default_operations;
using odeint_resizer = boost::numeric::odeint::initially_resizer;

}  // namespace flowmatch::detail
