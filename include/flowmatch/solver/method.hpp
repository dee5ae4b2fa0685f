/// @file method.hpp
/// @brief The integration methods and their names.
///
/// Fixed-step methods take one step per grid interval, or split each interval into equal steps
/// no longer than SolverOptions::step_size. Adaptive methods choose their steps from an
/// embedded error estimate and the tolerances rtol and atol.
#pragma once

#include <array>
#include <string_view>
#include <utility>

#include "flowmatch/detail/named_values.hpp"

namespace flowmatch {

/// An explicit Runge–Kutta method. The names returned by method_name are the ones accepted by
/// method_from_name.
enum class Method {
  euler,     ///< Forward Euler, order 1 (fixed step).
  midpoint,  ///< Explicit midpoint rule, order 2 (fixed step).
  heun2,     ///< Heun's trapezoidal method (improved Euler), order 2 (fixed step).
  heun3,     ///< Heun's third-order method (c = 0, 1/3, 2/3; b = 1/4, 0, 3/4) (fixed step).
  rk4,       ///< The classic fourth-order Runge–Kutta method (fixed step).
  /// Kutta's 3/8 rule, order 4 (fixed step). torchdiffeq's fixed-grid method named "rk4" is
  /// this rule, not the classic one.
  rk38,
  dopri5,  ///< Dormand–Prince 5(4), FSAL, with dense output at the grid times (adaptive).
  /// Runge–Kutta–Fehlberg 7(8) (adaptive), with dense output of order 7 at the grid times:
  /// 3 evaluations in each step that holds a grid time to interpolate, none in the others.
  rkf78,
  tsit5,  ///< Tsitouras 5(4), FSAL, with dense output at the grid times (adaptive).
};

namespace detail {

/// Every method with its name, in declaration order.
inline constexpr std::array<std::pair<Method, std::string_view>, 9> method_names{{
    {Method::euler, "euler"},
    {Method::midpoint, "midpoint"},
    {Method::heun2, "heun2"},
    {Method::heun3, "heun3"},
    {Method::rk4, "rk4"},
    {Method::rk38, "rk38"},
    {Method::dopri5, "dopri5"},
    {Method::rkf78, "rkf78"},
    {Method::tsit5, "tsit5"},
}};

}  // namespace detail

/// The name of @p method ("euler", "midpoint", "heun2", "heun3", "rk4", "rk38", "dopri5",
/// "rkf78", "tsit5").
inline std::string_view method_name(Method method) {
  return detail::name_in(detail::method_names, method, "Method");
}

/// The method called @p name (exact, lower case). An unknown name throws
/// std::invalid_argument listing the valid names.
inline Method method_from_name(std::string_view name) {
  return detail::value_named(detail::method_names, name, "integration method");
}

/// True for the methods with step-size control (dopri5, rkf78, tsit5).
constexpr bool is_adaptive(Method method) {
  return method == Method::dopri5 || method == Method::rkf78 || method == Method::tsit5;
}

}  // namespace flowmatch
