/// @file velocity_field.hpp
/// @brief The VelocityField concept and the capabilities a field may offer.
///
/// A velocity field u_t(x) maps a time t in [0, 1] and a d×N batch x (one column per sample)
/// to a d×N batch of velocities. A type is a field for scalar type `Scalar` if it is callable
/// in one of two ways:
///
///   - in place:   `field(t, x, out)` with `Scalar t`, `ConstMatrixRef<Scalar> x` and
///                 `MatrixRef<Scalar> out` (out is already d×N); library fields do this, and
///                 it is what the solvers call, so it never allocates;
///   - returning:  `field(t, x)` returning a matrix or an Eigen expression of shape d×N;
///                 a plain lambda such as `[](double t, const auto& x) { return -x; }`.
///
/// A field may also offer, detected at compile time:
///
///   - `field.divergence(t, x, out)`: the exact divergence ∇·u_t at each sample into a
///     length-N `VectorRef<Scalar> out`;
///   - `field.jvp(t, x, tangent, out)`: the Jacobian-vector product (∂u_t/∂x)·tangent for each
///     sample (tangent and out are d×N).
#pragma once

#include <concepts>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A field evaluated in place: `field(t, x, out)`.
template <class F, class Scalar>
concept InPlaceVelocityField = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                        MatrixRef<Scalar> out) {
  field(t, x, out);
};

/// A field that returns its velocities: `Matrix<Scalar> v = field(t, x)`.
template <class F, class Scalar>
concept ReturningVelocityField = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                          Matrix<Scalar>& out) {
  out = field(t, x);
};

/// A velocity field over batches of scalar type `Scalar`, callable in place or returning.
template <class F, class Scalar>
concept VelocityField = InPlaceVelocityField<F, Scalar> || ReturningVelocityField<F, Scalar>;

/// A field that offers its exact divergence: `field.divergence(t, x, out)`.
template <class F, class Scalar>
concept HasDivergence = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                 VectorRef<Scalar> out) {
  field.divergence(t, x, out);
};

/// A field that offers Jacobian-vector products: `field.jvp(t, x, tangent, out)`.
template <class F, class Scalar>
concept HasJvp = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                          const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) {
  field.jvp(t, x, tangent, out);
};

/// Evaluates @p field at (t, x) into @p out (d×N, sized by the caller).
/// A returning field whose result is not d×N throws std::invalid_argument.
template <class Scalar, class F>
requires VelocityField<F, Scalar>
void evaluate_velocity(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                       MatrixRef<Scalar> out) {
  if constexpr (InPlaceVelocityField<F, Scalar>) {
    field(t, x, out);
  } else {
    decltype(auto) velocity = field(t, x);
    detail::require_shape("velocity field result", velocity, x.rows(), x.cols());
    out = velocity;
  }
}

/// Evaluates @p field at (t, x) and returns the d×N velocities (allocates; convenience).
template <class Scalar, class F>
requires VelocityField<F, Scalar> Matrix<Scalar> evaluate_velocity(
    const F& field, Scalar t, const ConstMatrixRef<Scalar>& x) {
  Matrix<Scalar> out(x.rows(), x.cols());
  evaluate_velocity<Scalar>(field, t, x, out);
  return out;
}

}  // namespace flowmatch
