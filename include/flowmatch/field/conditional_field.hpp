/// @file conditional_field.hpp
/// @brief The ConditionalVelocityField concept: u_t(x | c) with one condition per sample.
///
/// A conditional field maps a time t, a d×N batch x and a k×N condition matrix c (column i is
/// the condition of sample i: a one-hot label, an embedding, any feature vector) to a d×N batch
/// of velocities. Like an unconditional field it is callable in place,
/// `field(t, x, c, out)`, or returning, `field(t, x, c)`. A designated null condition (by
/// convention the all-zeros column) stands for "no condition".
#pragma once

#include <stdexcept>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A conditional field evaluated in place: `field(t, x, c, out)`.
template <class F, class Scalar>
concept InPlaceConditionalVelocityField = requires(const F& field, Scalar t,
                                                   const ConstMatrixRef<Scalar>& x,
                                                   const ConstMatrixRef<Scalar>& condition,
                                                   MatrixRef<Scalar> out) {
  field(t, x, condition, out);
};

/// A conditional field that returns its velocities: `Matrix<Scalar> v = field(t, x, c)`.
template <class F, class Scalar>
concept ReturningConditionalVelocityField = requires(const F& field, Scalar t,
                                                     const ConstMatrixRef<Scalar>& x,
                                                     const ConstMatrixRef<Scalar>& condition,
                                                     Matrix<Scalar>& out) {
  out = field(t, x, condition);
};

/// A conditional velocity field over batches of scalar type `Scalar`.
template <class F, class Scalar>
concept ConditionalVelocityField =
    InPlaceConditionalVelocityField<F, Scalar> || ReturningConditionalVelocityField<F, Scalar>;

/// A conditional field that offers its exact divergence in x: `field.divergence(t, x, c, out)`
/// with a length-N `VectorRef<Scalar> out`.
template <class F, class Scalar>
concept HasConditionalDivergence = requires(const F& field, Scalar t,
                                            const ConstMatrixRef<Scalar>& x,
                                            const ConstMatrixRef<Scalar>& condition,
                                            VectorRef<Scalar> out) {
  field.divergence(t, x, condition, out);
};

/// Evaluates the conditional @p field at (t, x, condition) into @p out (d×N, sized by the
/// caller). Throws std::invalid_argument if the condition count differs from the batch size or
/// a returning field's result is not d×N.
template <class Scalar, class F>
requires ConditionalVelocityField<F, Scalar>
void evaluate_conditional_velocity(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                   const ConstMatrixRef<Scalar>& condition, MatrixRef<Scalar> out) {
  if (condition.cols() != x.cols()) {
    throw std::invalid_argument("condition has " + detail::to_text(condition.cols()) +
                                " columns, expected one per sample (" + detail::to_text(x.cols()) +
                                ")");
  }
  if constexpr (InPlaceConditionalVelocityField<F, Scalar>) {
    field(t, x, condition, out);
  } else {
    decltype(auto) velocity = field(t, x, condition);
    detail::require_shape("conditional velocity field result", velocity, x.rows(), x.cols());
    out = velocity;
  }
}

}  // namespace flowmatch
