/// @file conditioned_field.hpp
/// @brief A conditional field with its conditions bound: an ordinary VelocityField, so that
/// log-likelihoods, scores and samples of conditional models use the unconditional functions.
///
/// ConditionedField evaluates u_t(x | c) with a fixed k×N condition matrix c, column n for
/// sample n. The derivative routines evaluate the field on widened batches made of m copies of
/// the batch side by side (column j·N + n is a copy of sample n: forward mode, Hutchinson probes,
/// finite differences); a batch of m·N columns is therefore given the conditions repeated m
/// times. With w = 1, this is the conditional field of classifier-free guidance.
///
/// It is generic over the scalar type whenever the conditional field is (the conditions are
/// converted to that type), and forwards the conditional field's members
/// `jvp(t, x, c, tangent, out)`, `vjp(t, x, c, cotangent, out)` and `divergence(t, x, c, out)`
/// when it has them.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/conditional_field.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"

namespace flowmatch {

/// A conditional field with bound conditions (see the file comment). Holds a reference to the
/// field, which must outlive it, and a copy of the conditions.
template <class Scalar, class Field>
requires ConditionalVelocityField<Field, Scalar>
class ConditionedField {
 public:
  /// @param field the conditional field (referenced, not copied).
  /// @param condition k×N, one column per sample, finite.
  /// @throws std::invalid_argument if condition has no column or a non-finite entry.
  ConditionedField(const Field& field, Matrix<Scalar> condition)
      : field_(&field), condition_(std::move(condition)) {
    if (condition_.cols() == 0) {
      throw std::invalid_argument(
          "ConditionedField: condition has 0 columns, expected one per sample");
    }
    detail::require_finite("ConditionedField: condition", condition_);
  }

  /// The bound conditions (k×N).
  [[nodiscard]] const Matrix<Scalar>& condition() const { return condition_; }

  /// u_t(x | c) into @p out, for any scalar type the conditional field accepts.
  template <class S>
  requires ConditionalVelocityField<Field, S>
  void operator()(S t, const ConstMatrixRef<S>& x, MatrixRef<S> out) const {
    evaluate_conditional_velocity<S>(*field_, t, x, conditions_for(x.cols()).template cast<S>(),
                                     out);
  }

  /// (∂u_t/∂x)·tangent from the conditional field's jvp member.
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const requires requires(const Field& f) {
    f.jvp(t, x, x, tangent, out);
  }
  { field_->jvp(t, x, conditions_for(x.cols()), tangent, out); }

  /// (∂u_t/∂x)ᵀ·cotangent from the conditional field's vjp member.
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const requires requires(const Field& f) {
    f.vjp(t, x, x, cotangent, out);
  }
  { field_->vjp(t, x, conditions_for(x.cols()), cotangent, out); }

  /// ∇·u_t from the conditional field's divergence member.
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const requires
      requires(const Field& f) {
    f.divergence(t, x, x, out);
  }
  { field_->divergence(t, x, conditions_for(x.cols()), out); }

  /// ∇ₓ(∇·u_t) from the conditional field's divergence_gradient member.
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                           MatrixRef<Scalar> out) const requires requires(const Field& f) {
    f.divergence_gradient(t, x, x, out);
  }
  { field_->divergence_gradient(t, x, conditions_for(x.cols()), out); }

 private:
  /// The conditions for a batch of @p columns = m·N columns: the bound matrix itself for
  /// m = 1 (no copy, so solver loops do not allocate), else m copies side by side, kept for
  /// the next call of the same width. Calls with m > 1 must not run concurrently.
  [[nodiscard]] ConstMatrixRef<Scalar> conditions_for(Index columns) const {
    const Index samples = condition_.cols();
    if (columns % samples != 0) {
      throw std::invalid_argument("ConditionedField: x has " + detail::to_text(columns) +
                                  " columns, expected a multiple of the " +
                                  detail::to_text(samples) + " bound conditions");
    }
    if (columns == samples) return condition_;
    if (replicated_.cols() != columns) replicated_ = condition_.replicate(1, columns / samples);
    return replicated_;
  }

  const Field* field_;
  Matrix<Scalar> condition_;
  mutable Matrix<Scalar> replicated_;
};

/// log p_1(x | c) for a batch of conditional samples: log_likelihood of the field with the
/// conditions @p condition (k×N, column n for sample n) bound. Other arguments and exceptions as
/// log_likelihood; also throws std::invalid_argument if condition does not have N columns.
template <class Field, class Derived, class Estimator = ExactDivergence,
          class Source = StandardNormal>
requires ConditionalVelocityField<Field, typename Derived::Scalar>
    LikelihoodResult<typename Derived::Scalar> conditional_log_likelihood(
        const Field& field, const Matrix<typename Derived::Scalar>& condition,
        const Eigen::MatrixBase<Derived>& x,
        const SolverOptions<typename Derived::Scalar>& options = {},
        const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_shape("conditional_log_likelihood: condition", condition, -1, x.cols());
  const ConditionedField<Scalar, Field> conditioned(field, condition);
  return log_likelihood(conditioned, x, options, estimator, source);
}

}  // namespace flowmatch
