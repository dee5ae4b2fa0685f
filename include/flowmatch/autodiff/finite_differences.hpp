/// @file finite_differences.hpp
/// @brief Explicit opt-in to derivatives by central finite differences, for fields that offer
/// neither exact derivative members nor genericity over their scalar type (a compiled model,
/// a field from another library).
///
/// FiniteDifferenceField wraps a field and offers jvp, vjp, divergence and
/// divergence_gradient computed by central differences with step h:
///
///   (∂u/∂x)·v ≈ [u(x + h·v) − u(x − h·v)]/(2h)              one call on 2N columns;
///   ∂u_i/∂x_j ≈ [u_i(x + h·e_j) − u_i(x − h·e_j)]/(2h)     one call on 2dN columns;
///   ∂_j(∇·u)  ≈ [div(x + H·e_j) − div(x − H·e_j)]/(2H),   div by step h, one call on 4d²N.
///
/// The error of a first derivative is O(h²·|u'''|) from truncation plus O(ε·|u|/h) from
/// rounding, smallest near h = ε^{1/3} (≈ 6e-6 for double), the default; the nested second
/// difference has an error O(H²) + O(ε/(h·H)), and H defaults to ε^{1/4} (≈ 1.2e-4). Steps are
/// absolute: scale them with the magnitude of x. Every library function that needs a
/// derivative then uses these members, because the wrapper offers them.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"

namespace flowmatch {

/// A velocity field whose derivatives are taken by central finite differences (see the file
/// comment). It evaluates like the wrapped field.
template <class Scalar, VelocityField<Scalar> Field>
class FiniteDifferenceField {
 public:
  /// @param field the wrapped field (held by value; pass std::cref(f) to hold a reference).
  /// @param step h of the first differences, finite and > 0.
  /// @param outer_step H of the difference of the divergence, finite and > 0.
  /// @throws std::invalid_argument if a step is not finite and positive.
  explicit FiniteDifferenceField(
      Field field, Scalar step = std::cbrt(std::numeric_limits<Scalar>::epsilon()),
      Scalar outer_step = std::sqrt(std::sqrt(std::numeric_limits<Scalar>::epsilon())))
      : field_(std::move(field)), step_(step), outer_step_(outer_step) {
    require_step("step", step_);
    require_step("outer_step", outer_step_);
  }

  /// The step h of the first differences.
  [[nodiscard]] Scalar step() const { return step_; }
  /// The step H of the difference of the divergence.
  [[nodiscard]] Scalar outer_step() const { return outer_step_; }

  /// u_t(x) from the wrapped field.
  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    evaluate_velocity<Scalar>(unwrapped(), t, x, out);
  }

  /// (∂u_t/∂x)·tangent ≈ [u(x + h·tangent) − u(x − h·tangent)]/(2h), per sample.
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const {
    const Index samples = x.cols();
    Matrix<Scalar> shifted(x.rows(), 2 * samples);
    shifted.leftCols(samples) = x + step_ * tangent;
    shifted.rightCols(samples) = x - step_ * tangent;
    const Matrix<Scalar> velocity = evaluate_velocity<Scalar>(unwrapped(), t, shifted);
    out = (velocity.leftCols(samples) - velocity.rightCols(samples)) / (Scalar(2) * step_);
  }

  /// (∂u_t/∂x)ᵀ·cotangent from the differenced Jacobian, per sample.
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const {
    detail::contract_jacobian<Scalar>(jacobian_columns(t, x, step_), cotangent, out);
  }

  /// ∇·u_t ≈ Σ_i [u_i(x + h·e_i) − u_i(x − h·e_i)]/(2h), per sample.
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const {
    detail::blockwise_trace<Scalar>(jacobian_columns(t, x, step_), x.cols(), out);
  }

  /// ∂_j(∇·u_t) ≈ [div(x + H·e_j) − div(x − H·e_j)]/(2H), per sample.
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    const Index dim = x.rows();
    const Index samples = x.cols();
    const Matrix<Scalar> shifted = shifted_columns(x, outer_step_);  // d×(2dN)
    Vector<Scalar> divergences(shifted.cols());
    detail::blockwise_trace<Scalar>(jacobian_columns(t, shifted, step_), shifted.cols(),
                                    divergences);
    for (Index j = 0; j < dim; ++j) {
      out.row(j) = (divergences.segment(j * samples, samples) -
                    divergences.segment((dim + j) * samples, samples))
                       .transpose() /
                   (Scalar(2) * outer_step_);
    }
  }

 private:
  static void require_step(const char* name, Scalar step) {
    if (!(std::isfinite(step) && step > Scalar(0))) {
      detail::require_positive(detail::argument_name("FiniteDifferenceField", name), step);
    }
  }

  const auto& unwrapped() const {
    if constexpr (requires { field_.get(); }) {
      return field_.get();
    } else {
      return field_;
    }
  }

  /// [x + h·e_1, …, x + h·e_d, x − h·e_1, …, x − h·e_d]: block j·N.. is x + h·e_j and block
  /// (d + j)·N.. is x − h·e_j (d×(2dN)).
  static Matrix<Scalar> shifted_columns(const ConstMatrixRef<Scalar>& x, Scalar step) {
    const Index dim = x.rows();
    const Index samples = x.cols();
    Matrix<Scalar> shifted = x.replicate(1, 2 * dim);
    for (Index j = 0; j < dim; ++j) {
      shifted.row(j).segment(j * samples, samples).array() += step;
      shifted.row(j).segment((dim + j) * samples, samples).array() -= step;
    }
    return shifted;
  }

  /// Differenced Jacobians d×(dN): column j·N + n ≈ (∂u/∂x) e_j at sample n.
  Matrix<Scalar> jacobian_columns(Scalar t, const ConstMatrixRef<Scalar>& x, Scalar step) const {
    const Index width = x.rows() * x.cols();
    const Matrix<Scalar> velocity =
        evaluate_velocity<Scalar>(unwrapped(), t, shifted_columns(x, step));
    return (velocity.leftCols(width) - velocity.rightCols(width)) / (Scalar(2) * step);
  }

  Field field_;
  Scalar step_;
  Scalar outer_step_;
};

/// Wraps @p field so that its derivatives are taken by central differences (explicit opt-in;
/// see FiniteDifferenceField). The scalar type must be given: `finite_differences<double>(f)`.
template <class Scalar, VelocityField<Scalar> Field>
FiniteDifferenceField<Scalar, Field> finite_differences(
    Field field, Scalar step = std::cbrt(std::numeric_limits<Scalar>::epsilon()),
    Scalar outer_step = std::sqrt(std::sqrt(std::numeric_limits<Scalar>::epsilon()))) {
  return FiniteDifferenceField<Scalar, Field>(std::move(field), step, outer_step);
}

}  // namespace flowmatch
