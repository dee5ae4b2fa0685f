/// @file dual.hpp
/// @brief Forward-mode dual numbers x + ẋ·ε (ε² = 0), usable as an Eigen scalar type.
///
/// Dual<T> carries a value and one directional derivative: evaluating a function f on
/// Dual{x, v} gives Dual{f(x), f'(x)·v}. Nesting Dual<Dual<double>> gives second derivatives
/// (the derivative part of the outer number is differentiated along a second direction).
/// A generic field written over its scalar type (a generic lambda, or a template) can thus be
/// differentiated exactly, without any change to its code: call it on a batch of duals whose
/// derivative parts hold the tangent directions.
///
/// Supported functions (found by argument-dependent lookup, also from inside Eigen's
/// coefficient-wise operations): + − × ÷, comparisons (by value), abs, sqrt, cbrt, exp, expm1,
/// log, log1p, pow (dual or real exponent), sin, cos, tan, sinh, cosh, tanh, atan, erf,
/// isfinite, isnan, isinf. abs is differentiated as sign(x)·ẋ (0 at x = 0).
#pragma once

#include <cmath>
#include <concepts>
#include <numbers>
#include <ostream>
#include <type_traits>

#include "flowmatch/detail/eigen_core.hpp"

namespace flowmatch {

namespace detail {

/// A type whose values are constants for Dual<T> (@p DualType): convertible to T and not the
/// dual type itself.
template <class U, class T, class DualType>
concept DualConstant =
    std::convertible_to<const U&, T> && !std::same_as<std::remove_cvref_t<U>, DualType>;

}  // namespace detail

/// A forward-mode dual number: a value and its derivative along one direction.
template <class T>
struct Dual {
  using value_type = T;

  T value{0};       ///< The value f(x).
  T derivative{0};  ///< The directional derivative f'(x)·v.

  constexpr Dual() = default;
  /// A dual with the given value and derivative.
  constexpr Dual(T value_part, T derivative_part)
      : value(value_part), derivative(derivative_part) {}
  /// A constant (zero derivative) from anything convertible to T, such as a double or an int
  /// (implicit, so that constants mix with duals in expressions, also for nested duals).
  template <detail::DualConstant<T, Dual> U>
  constexpr Dual(const U& constant)  // NOLINT(google-explicit-constructor)
      : value(static_cast<T>(constant)), derivative(0) {}

  constexpr Dual& operator+=(const Dual& other) {
    value += other.value;
    derivative += other.derivative;
    return *this;
  }
  constexpr Dual& operator-=(const Dual& other) {
    value -= other.value;
    derivative -= other.derivative;
    return *this;
  }
  constexpr Dual& operator*=(const Dual& other) { return *this = *this * other; }
  constexpr Dual& operator/=(const Dual& other) { return *this = *this / other; }

  friend constexpr Dual operator+(const Dual& a) { return a; }
  friend constexpr Dual operator-(const Dual& a) { return {-a.value, -a.derivative}; }
  friend constexpr Dual operator+(const Dual& a, const Dual& b) {
    return {a.value + b.value, a.derivative + b.derivative};
  }
  friend constexpr Dual operator-(const Dual& a, const Dual& b) {
    return {a.value - b.value, a.derivative - b.derivative};
  }
  friend constexpr Dual operator*(const Dual& a, const Dual& b) {
    return {a.value * b.value, a.derivative * b.value + a.value * b.derivative};
  }
  /// (a/b)' = (ȧ − (a/b)·ḃ)/b.
  friend constexpr Dual operator/(const Dual& a, const Dual& b) {
    const T quotient = a.value / b.value;
    return {quotient, (a.derivative - quotient * b.derivative) / b.value};
  }

  friend constexpr bool operator==(const Dual& a, const Dual& b) { return a.value == b.value; }
  friend constexpr bool operator!=(const Dual& a, const Dual& b) { return a.value != b.value; }
  friend constexpr bool operator<(const Dual& a, const Dual& b) { return a.value < b.value; }
  friend constexpr bool operator<=(const Dual& a, const Dual& b) { return a.value <= b.value; }
  friend constexpr bool operator>(const Dual& a, const Dual& b) { return a.value > b.value; }
  friend constexpr bool operator>=(const Dual& a, const Dual& b) { return a.value >= b.value; }

  friend std::ostream& operator<<(std::ostream& stream, const Dual& a) {
    return stream << a.value << " + " << a.derivative << "ε";
  }
};

/// The innermost real type of a possibly nested dual: double for Dual<Dual<double>>.
template <class T>
struct dual_base {
  using type = T;
};
template <class T>
struct dual_base<Dual<T>> {
  using type = typename dual_base<T>::type;
};
template <class T>
using dual_base_t = typename dual_base<T>::type;

/// The value of a possibly nested dual down to its real part.
template <class T>
constexpr dual_base_t<T> real_value(const T& x) {
  if constexpr (std::is_same_v<T, dual_base_t<T>>) {
    return x;
  } else {
    return real_value(x.value);
  }
}

namespace detail {
/// f applied to a dual given f(x) and f'(x): Dual{f(x), f'(x)·ẋ}.
template <class T>
constexpr Dual<T> chain(const Dual<T>& x, const T& value, const T& slope) {
  return {value, slope * x.derivative};
}
}  // namespace detail

// Elementary functions. Each applies the chain rule with the closed-form derivative; the
// unqualified calls on x.value recurse into these overloads for nested duals.

template <class T>
Dual<T> abs(const Dual<T>& x) {
  using std::abs;
  const T sign = x.value > T(0) ? T(1) : (x.value < T(0) ? T(-1) : T(0));
  return detail::chain(x, abs(x.value), sign);
}
/// sqrt' = 1/(2·sqrt).
template <class T>
Dual<T> sqrt(const Dual<T>& x) {
  using std::sqrt;
  const T root = sqrt(x.value);
  return detail::chain(x, root, T(1) / (T(2) * root));
}
/// cbrt' = 1/(3·cbrt²).
template <class T>
Dual<T> cbrt(const Dual<T>& x) {
  using std::cbrt;
  const T root = cbrt(x.value);
  return detail::chain(x, root, T(1) / (T(3) * root * root));
}
template <class T>
Dual<T> exp(const Dual<T>& x) {
  using std::exp;
  const T value = exp(x.value);
  return detail::chain(x, value, value);
}
/// expm1' = exp = expm1 + 1.
template <class T>
Dual<T> expm1(const Dual<T>& x) {
  using std::expm1;
  const T value = expm1(x.value);
  return detail::chain(x, value, value + T(1));
}
template <class T>
Dual<T> log(const Dual<T>& x) {
  using std::log;
  return detail::chain(x, log(x.value), T(1) / x.value);
}
template <class T>
Dual<T> log1p(const Dual<T>& x) {
  using std::log1p;
  return detail::chain(x, log1p(x.value), T(1) / (T(1) + x.value));
}
/// (xʸ)' = y·xʸ⁻¹·ẋ for a constant exponent y.
template <class T>
Dual<T> pow(const Dual<T>& x, const dual_base_t<T>& exponent) {
  using std::pow;
  return detail::chain(x, pow(x.value, T(exponent)),
                       T(exponent) * pow(x.value, T(exponent - dual_base_t<T>(1))));
}
/// (xʸ)' = xʸ·(ẏ·log x + y·ẋ/x), for x > 0.
template <class T>
Dual<T> pow(const Dual<T>& x, const Dual<T>& exponent) {
  return exp(exponent * log(x));
}
template <class T>
Dual<T> sin(const Dual<T>& x) {
  using std::cos;
  using std::sin;
  return detail::chain(x, sin(x.value), cos(x.value));
}
template <class T>
Dual<T> cos(const Dual<T>& x) {
  using std::cos;
  using std::sin;
  return detail::chain(x, cos(x.value), -sin(x.value));
}
/// tan' = 1 + tan².
template <class T>
Dual<T> tan(const Dual<T>& x) {
  using std::tan;
  const T value = tan(x.value);
  return detail::chain(x, value, T(1) + value * value);
}
template <class T>
Dual<T> sinh(const Dual<T>& x) {
  using std::cosh;
  using std::sinh;
  return detail::chain(x, sinh(x.value), cosh(x.value));
}
template <class T>
Dual<T> cosh(const Dual<T>& x) {
  using std::cosh;
  using std::sinh;
  return detail::chain(x, cosh(x.value), sinh(x.value));
}
/// tanh' = 1 − tanh².
template <class T>
Dual<T> tanh(const Dual<T>& x) {
  using std::tanh;
  const T value = tanh(x.value);
  return detail::chain(x, value, T(1) - value * value);
}
/// atan' = 1/(1 + x²).
template <class T>
Dual<T> atan(const Dual<T>& x) {
  using std::atan;
  return detail::chain(x, atan(x.value), T(1) / (T(1) + x.value * x.value));
}
/// erf' = 2/√π · exp(−x²).
template <class T>
Dual<T> erf(const Dual<T>& x) {
  using std::erf;
  using std::exp;
  const T scale(std::numbers::inv_sqrtpi_v<dual_base_t<T>> * 2);
  return detail::chain(x, erf(x.value), scale * exp(-x.value * x.value));
}
/// x² (Eigen's square and abs2 reduce to this).
template <class T>
Dual<T> square(const Dual<T>& x) {
  return x * x;
}
template <class T>
Dual<T> max(const Dual<T>& a, const Dual<T>& b) {
  return a < b ? b : a;
}
template <class T>
Dual<T> min(const Dual<T>& a, const Dual<T>& b) {
  return b < a ? b : a;
}

/// Finite when both the value and the derivative are finite.
template <class T>
bool isfinite(const Dual<T>& x) {
  using std::isfinite;
  return isfinite(x.value) && isfinite(x.derivative);
}
template <class T>
bool isnan(const Dual<T>& x) {
  using std::isnan;
  return isnan(x.value) || isnan(x.derivative);
}
template <class T>
bool isinf(const Dual<T>& x) {
  using std::isinf;
  return isinf(x.value) || isinf(x.derivative);
}

}  // namespace flowmatch

namespace Eigen {

/// Eigen's description of Dual<T>: a real (non-complex), non-vectorised scalar.
template <class T>
struct NumTraits<flowmatch::Dual<T>> : GenericNumTraits<flowmatch::Dual<T>> {
  using Real = flowmatch::Dual<T>;
  using NonInteger = flowmatch::Dual<T>;
  using Literal = flowmatch::Dual<T>;
  using Nested = flowmatch::Dual<T>;
  enum {
    IsComplex = 0,
    IsInteger = 0,
    IsSigned = 1,
    RequireInitialization = 1,
    ReadCost = 2 * NumTraits<T>::ReadCost,
    AddCost = 2 * NumTraits<T>::AddCost,
    MulCost = 3 * NumTraits<T>::MulCost + NumTraits<T>::AddCost
  };
  static inline Real epsilon() { return Real(NumTraits<T>::epsilon()); }
  static inline Real dummy_precision() { return Real(NumTraits<T>::dummy_precision()); }
  static inline Real highest() { return Real(NumTraits<T>::highest()); }
  static inline Real lowest() { return Real(NumTraits<T>::lowest()); }
  static inline int digits10() { return NumTraits<T>::digits10(); }
};

/// A dual times (or plus) its base type is a dual, so `2.0 * dual_matrix` works in Eigen.
template <class T, class BinaryOp>
struct ScalarBinaryOpTraits<flowmatch::Dual<T>, T, BinaryOp> {
  using ReturnType = flowmatch::Dual<T>;
};
template <class T, class BinaryOp>
struct ScalarBinaryOpTraits<T, flowmatch::Dual<T>, BinaryOp> {
  using ReturnType = flowmatch::Dual<T>;
};

}  // namespace Eigen
