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
/// converted to that type), so forward mode differentiates it, and it offers every conditional
/// member of the field protocol (field/capabilities.hpp) that the conditional field has, as the
/// plain member (`jvp(t, x, tangent, out)` from `jvp(t, x, c, tangent, out)`, and so on).
/// Ownership as every adapter (field_adapter.hpp): the field by value, or std::cref(field).
#pragma once

#include <concepts>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/field_adapter.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"

namespace flowmatch {

/// A conditional field with bound conditions (see the file comment).
template <class Scalar, class Field>
requires ConditionalVelocityField<std::unwrap_reference_t<Field>, Scalar>
class ConditionedField : public FieldAdapter<ConditionedField<Scalar, Field>, Field> {
  using Base = FieldAdapter<ConditionedField<Scalar, Field>, Field>;
  using Wrapped = typename Base::wrapped_type;

 public:
  /// @param field the conditional field (by value, or std::cref(field)).
  /// @param condition k×N, one column per sample, finite.
  /// @throws std::invalid_argument if condition has no column or a non-finite entry.
  ConditionedField(Field field, Matrix<Scalar> condition)
      : Base(std::move(field)), condition_(std::move(condition)) {
    if (condition_.cols() == 0) {
      detail::reject_argument("ConditionedField: condition",
                              "has shape " + detail::to_text(condition_.rows()) + "x0",
                              "one column per sample");
    }
    detail::require_finite("ConditionedField: condition", condition_);
  }

  /// The bound conditions (k×N).
  [[nodiscard]] const Matrix<Scalar>& condition() const { return condition_; }

  /// The velocity for any scalar type the conditional field accepts; the derivative members
  /// for Scalar.
  template <class Tag, class S>
  static constexpr bool offers =
      std::same_as<Tag, capability::Velocity> ? ConditionalVelocityField<Wrapped, S>
      : std::same_as<S, Scalar>               ? Tag::template offered_conditionally_by<Wrapped, S>
                                              : false;

  /// Calls the conditional member with the bound conditions after x.
  template <class Tag, class S, class... Args>
  void forward(Tag, S t, const ConstMatrixRef<S>& x, Args... args) const {
    if constexpr (std::same_as<S, Scalar>) {
      Tag::call(this->field(), t, x, conditions_for(x.cols()), args...);
    } else {
      const Matrix<S> converted = conditions_for(x.cols()).template cast<S>();
      Tag::call(this->field(), t, x, converted, args...);
    }
  }

 private:
  /// The conditions for a batch of @p columns = m·N columns: the bound matrix itself for
  /// m = 1 (no copy, so solver loops do not allocate), else m copies side by side, kept for
  /// the next call of the same width. Calls with m > 1 must not run concurrently.
  [[nodiscard]] ConstMatrixRef<Scalar> conditions_for(Index columns) const {
    const Index samples = condition_.cols();
    if (columns % samples != 0) {
      detail::reject_argument(
          "ConditionedField: x", "has " + detail::to_text(columns) + " columns",
          "a multiple of the " + detail::to_text(samples) + " bound conditions");
    }
    if (columns == samples) return condition_;
    if (replicated_.cols() != columns) replicated_ = condition_.replicate(1, columns / samples);
    return replicated_;
  }

  Matrix<Scalar> condition_;
  mutable Matrix<Scalar> replicated_;
};

/// The capability @p Tag of the conditional field @p Field is available at given conditions:
/// its conditional member, or the derivation (Derivable, field_derivatives.hpp) of the field
/// with the conditions bound, such as forward mode through a conditional field that is generic
/// over its scalar type.
template <class Tag, class Field, class Scalar>
concept ConditionallyDerivable =
    Derivable<Tag,
              ConditionedField<Scalar, std::reference_wrapper<const std::remove_cvref_t<Field>>>,
              Scalar>;

namespace detail {

/// The capability @p Tag of the conditional @p field at (t, x, condition) into the outputs among
/// @p args: the conditional member if the field has one, else derive() of the field with the
/// conditions bound (which copies them). Checks no argument.
template <class Tag, class Scalar, class Field, class... Args>
void derive_conditional(Tag tag, const Field& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                        const ConstMatrixRef<Scalar>& condition, Args&&... args) {
  if constexpr (Tag::template offered_conditionally_by<Field, Scalar>) {
    tag.call(field, t, x, condition, std::forward<Args>(args)...);
  } else {
    const ConditionedField<Scalar, std::reference_wrapper<const Field>> bound(
        std::cref(field), Matrix<Scalar>(condition));
    derive(tag, bound, t, x, std::forward<Args>(args)...);
  }
}

}  // namespace detail

/// log p_1(x | c) for a batch of conditional samples: log_likelihood of the field with the
/// conditions @p condition (k×N, column n for sample n) bound. Other arguments and exceptions as
/// log_likelihood; also throws std::invalid_argument if condition does not have N columns.
template <class Derived, ConditionalVelocityField<typename Derived::Scalar> Field,
          class Estimator = ExactDivergence, class Source = StandardNormal>
LikelihoodResult<typename Derived::Scalar> conditional_log_likelihood(
    const Field& field, const Matrix<typename Derived::Scalar>& condition,
    const Eigen::MatrixBase<Derived>& x,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_shape("conditional_log_likelihood: condition", condition, -1, x.cols());
  const ConditionedField<Scalar, std::reference_wrapper<const Field>> conditioned(std::cref(field),
                                                                                  condition);
  return log_likelihood(conditioned, x, options, estimator, source);
}

}  // namespace flowmatch
