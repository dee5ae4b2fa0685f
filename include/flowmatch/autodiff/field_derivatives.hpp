/// @file field_derivatives.hpp
/// @brief Exact derivatives of a velocity field with respect to x: Jacobian-vector and
/// vector-Jacobian products, the divergence and the gradient of the divergence.
///
/// Each function uses what the field offers, detected at compile time:
///
///   1. the field's own member (`jvp`, `vjp`, `divergence`, `divergence_gradient`);
///   2. otherwise forward-mode differentiation with dual numbers, when the field is generic
///      over its scalar type (ForwardDifferentiable: callable on a batch of Dual<Scalar>; a
///      generic lambda `[](auto t, const auto& x) { ... }` qualifies);
///   3. otherwise a compile-time error saying what the field must offer.
///
/// Finite differences are never used silently: wrap a field in FiniteDifferenceField
/// (finite_differences.hpp) to opt in.
///
/// Forward mode evaluates the field once on a widened batch: the d directions e_1..e_d of every
/// sample side by side (d×(d·N) duals; column i·N + n carries direction e_i at sample n), and
/// for the gradient of the divergence d² pairs of directions with nested duals
/// Dual<Dual<Scalar>> (d×(d²·N)). The cost therefore grows with d; for large d give the field
/// exact members or use a Hutchinson estimator.
#pragma once

#include <concepts>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "flowmatch/autodiff/dual.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"

namespace flowmatch {

/// A field generic over its scalar type: it is a VelocityField for Dual<Scalar>, so forward
/// mode gives its first derivatives.
template <class F, class Scalar>
concept ForwardDifferentiable = VelocityField<F, Dual<Scalar>>;

/// A field that is a VelocityField for nested duals, so forward mode gives its second
/// derivatives.
template <class F, class Scalar>
concept TwiceForwardDifferentiable = VelocityField<F, Dual<Dual<Scalar>>>;

namespace detail {

template <class>
inline constexpr bool dependent_false = false;

/// The capabilities that are first derivatives of the velocity: divergence, jvp and vjp.
template <class Tag>
concept FirstDerivative = std::same_as<Tag, capability::Divergence> ||
    std::same_as<Tag, capability::Jvp> || std::same_as<Tag, capability::Vjp>;

/// Columns of the unit directions for forward mode: column i·N + n is e_i (d×(d·N)).
template <class Scalar>
Matrix<Scalar> unit_directions(Index dim, Index samples) {
  Matrix<Scalar> directions = Matrix<Scalar>::Zero(dim, dim * samples);
  for (Index i = 0; i < dim; ++i) directions.row(i).segment(i * samples, samples).setOnes();
  return directions;
}

/// Forward mode: (∂u_t/∂x)·tangent at the columns of @p x, from one evaluation of @p field on
/// duals (value x, derivative tangent).
template <class Scalar, class Field>
void forward_jvp(const Field& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                 const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) {
  using D = Dual<Scalar>;
  const Matrix<D> x_dual =
      x.binaryExpr(tangent, [](Scalar value, Scalar derivative) { return D(value, derivative); });
  Matrix<D> velocity(x.rows(), x.cols());
  evaluate_velocity<D>(field, D(t), x_dual, velocity);
  out = velocity.unaryExpr([](const D& u) { return u.derivative; });
}

/// Forward mode: the Jacobians of every sample, d×(d·N), column i·N + n = (∂u/∂x) e_i at x_n.
template <class Scalar, class Field>
Matrix<Scalar> forward_jacobian(const Field& field, Scalar t, const ConstMatrixRef<Scalar>& x) {
  const Index dim = x.rows();
  const Matrix<Scalar> repeated = x.replicate(1, dim);
  Matrix<Scalar> jacobian(dim, dim * x.cols());
  forward_jvp<Scalar>(field, t, repeated, unit_directions<Scalar>(dim, x.cols()), jacobian);
  return jacobian;
}

/// Σ_i block_i(i, :) for a d×(d·N) matrix of blocks block_i = columns [i·N, (i+1)·N): the trace
/// of per-sample Jacobians stored as by forward_jacobian.
template <class Scalar>
void blockwise_trace(const Matrix<Scalar>& blocks, Index samples, VectorRef<Scalar> out) {
  out.setZero();
  for (Index i = 0; i < blocks.rows(); ++i) {
    out += blocks.row(i).segment(i * samples, samples).transpose();
  }
}

/// (Jᵀ w)_i = (J e_i)·w per sample, for Jacobians stored as by forward_jacobian.
template <class Scalar>
void contract_jacobian(const Matrix<Scalar>& jacobian, const ConstMatrixRef<Scalar>& cotangent,
                       MatrixRef<Scalar> out) {
  const Index samples = cotangent.cols();
  for (Index i = 0; i < cotangent.rows(); ++i) {
    out.row(i) = jacobian.middleCols(i * samples, samples).cwiseProduct(cotangent).colwise().sum();
  }
}

/// ∇_x(∇·u_t) by forward mode with nested duals: column (j·d + i)·N + n carries directions e_i
/// (inner) and e_j (outer), and ∂_j ∂_i u_i summed over i is the j-th entry (one call on
/// d×(d²·N) duals).
template <class Scalar, class Field>
void forward_divergence_gradient(const Field& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                 MatrixRef<Scalar> out) {
  using D = Dual<Scalar>;
  using DD = Dual<D>;
  const Index dim = x.rows();
  const Index samples = x.cols();
  Matrix<DD> x_dual(dim, dim * dim * samples);
  for (Index j = 0; j < dim; ++j) {
    for (Index i = 0; i < dim; ++i) {
      for (Index n = 0; n < samples; ++n) {
        for (Index r = 0; r < dim; ++r) {
          x_dual(r, (j * dim + i) * samples + n) =
              DD(D(x(r, n), r == i ? Scalar(1) : Scalar(0)), D(r == j ? Scalar(1) : Scalar(0)));
        }
      }
    }
  }
  Matrix<DD> velocity(dim, x_dual.cols());
  evaluate_velocity<DD>(field, DD(t), x_dual, velocity);
  out.setZero();
  for (Index j = 0; j < dim; ++j) {
    for (Index i = 0; i < dim; ++i) {
      for (Index n = 0; n < samples; ++n) {
        out(j, n) += velocity(i, (j * dim + i) * samples + n).derivative.derivative;
      }
    }
  }
}

}  // namespace detail

namespace detail {

/// The capability @p Tag without its fused forms: the field's member, or forward mode (first
/// derivatives of a ForwardDifferentiable field, the gradient of the divergence of a
/// TwiceForwardDifferentiable one).
template <class Tag, class Field, class Scalar>
concept SingleDerivable = Tag::template offered_by<Field, Scalar> ||
                          (FirstDerivative<Tag> && ForwardDifferentiable<Field, Scalar>) ||
                          (std::same_as<Tag, capability::DivergenceGradient> &&
                           TwiceForwardDifferentiable<Field, Scalar>);

}  // namespace detail

/// The capability @p Tag is available for @p Field: the field offers its member, or the library
/// derives it by forward mode (first derivatives of a ForwardDifferentiable field, the gradient
/// of the divergence of a TwiceForwardDifferentiable one), or a fused capability from its parts
/// (the velocity with divergence whenever the divergence is available; the velocity, vjp and
/// divergence gradient whenever the last two are).
template <class Tag, class Field, class Scalar>
concept Derivable = detail::SingleDerivable<Tag, Field, Scalar> ||
                    (std::same_as<Tag, capability::VelocityDivergence>&&
                         detail::SingleDerivable<capability::Divergence, Field, Scalar>) ||
                    (std::same_as<Tag, capability::VelocityVjpDivergenceGradient> &&
                     detail::SingleDerivable<capability::Vjp, Field, Scalar> &&
                     detail::SingleDerivable<capability::DivergenceGradient, Field, Scalar>);

namespace detail {

/// The capability @p Tag of @p field at (t, x) into the outputs among @p args: the field's
/// member if it has one, else the derivation named by Derivable, else a compile-time error.
/// Checks no argument (the public functions below do).
template <class Tag, class Scalar, class Field, class... Args>
void derive(Tag tag, const Field& field, Scalar t, const ConstMatrixRef<Scalar>& x,
            Args&&... args) {
  if constexpr (Tag::template offered_by<Field, Scalar>) {
    tag.call(field, t, x, std::forward<Args>(args)...);
  } else if constexpr (!Derivable<Tag, Field, Scalar>) {
    static_assert(dependent_false<Field>,
                  "the field offers no member for this capability (field/capabilities.hpp) and "
                  "is not generic over its scalar type (callable on Dual<Scalar> batches, "
                  "Dual<Dual<Scalar>> for the gradient of the divergence); add one of them, use "
                  "a Hutchinson estimator with a jvp member for a divergence, or wrap the field "
                  "in FiniteDifferenceField to use finite differences");
  } else if constexpr (std::same_as<Tag, capability::VelocityDivergence>) {
    const auto& [velocity, divergence] = std::forward_as_tuple(args...);
    evaluate_velocity<Scalar>(field, t, x, velocity);
    derive(capability::Divergence{}, field, t, x, divergence);
  } else if constexpr (std::same_as<Tag, capability::VelocityVjpDivergenceGradient>) {
    const auto& [cotangent, velocity, vjp, divergence_gradient] = std::forward_as_tuple(args...);
    evaluate_velocity<Scalar>(field, t, x, velocity);
    derive(capability::Vjp{}, field, t, x, cotangent, vjp);
    derive(capability::DivergenceGradient{}, field, t, x, divergence_gradient);
  } else if constexpr (std::same_as<Tag, capability::Divergence>) {
    blockwise_trace<Scalar>(forward_jacobian<Scalar>(field, t, x), x.cols(), args...);
  } else if constexpr (std::same_as<Tag, capability::Jvp>) {
    forward_jvp<Scalar>(field, t, x, args...);
  } else if constexpr (std::same_as<Tag, capability::Vjp>) {
    const auto& [cotangent, out] = std::forward_as_tuple(args...);
    contract_jacobian<Scalar>(forward_jacobian<Scalar>(field, t, x), cotangent, out);
  } else {
    forward_divergence_gradient<Scalar>(field, t, x, args...);
  }
}

}  // namespace detail

/// (∂u_t/∂x)·tangent for each sample into @p out (d×N): field.jvp, else forward mode.
/// @throws std::invalid_argument for bad shapes or non-finite x or tangent.
template <class Scalar, class Field>
void jacobian_vector_product(const Field& field, Scalar t,
                             const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                             const std::type_identity_t<ConstMatrixRef<Scalar>>& tangent,
                             std::type_identity_t<MatrixRef<Scalar>> out) {
  detail::require_batch("jacobian_vector_product: x", x);
  detail::require_shape("jacobian_vector_product: tangent", tangent, x.rows(), x.cols());
  detail::require_finite("jacobian_vector_product: tangent", tangent);
  detail::require_shape("jacobian_vector_product: out", out, x.rows(), x.cols());
  detail::derive(capability::Jvp{}, field, t, x, tangent, out);
}

/// (∂u_t/∂x)ᵀ·cotangent for each sample into @p out (d×N): field.vjp, else forward mode (the
/// full Jacobian from d directions, then contracted).
/// @throws std::invalid_argument for bad shapes or non-finite x or cotangent.
template <class Scalar, class Field>
void vector_jacobian_product(const Field& field, Scalar t,
                             const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                             const std::type_identity_t<ConstMatrixRef<Scalar>>& cotangent,
                             std::type_identity_t<MatrixRef<Scalar>> out) {
  detail::require_batch("vector_jacobian_product: x", x);
  detail::require_shape("vector_jacobian_product: cotangent", cotangent, x.rows(), x.cols());
  detail::require_finite("vector_jacobian_product: cotangent", cotangent);
  detail::require_shape("vector_jacobian_product: out", out, x.rows(), x.cols());
  detail::derive(capability::Vjp{}, field, t, x, cotangent, out);
}

/// The exact divergence ∇·u_t = tr(∂u_t/∂x) for each sample into @p out (length N):
/// field.divergence, else the trace of the forward-mode Jacobian (one call on d×(d·N) duals).
/// @throws std::invalid_argument for bad shapes or non-finite x.
template <class Scalar, class Field>
void exact_divergence(const Field& field, Scalar t,
                      const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                      std::type_identity_t<VectorRef<Scalar>> out) {
  detail::require_batch("exact_divergence: x", x);
  detail::require_shape("exact_divergence: out", out, x.cols(), 1);
  detail::derive(capability::Divergence{}, field, t, x, out);
}

/// u_t(x) into @p velocity (d×N) and ∇·u_t(x) into @p divergence (length N): from one pass of
/// the field's `velocity_divergence` member if it has one, else the velocity and
/// exact_divergence.
/// @throws std::invalid_argument for bad shapes or non-finite x.
template <class Scalar, class Field>
void velocity_with_divergence(const Field& field, Scalar t,
                              const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                              std::type_identity_t<MatrixRef<Scalar>> velocity,
                              std::type_identity_t<VectorRef<Scalar>> divergence) {
  detail::require_batch("velocity_with_divergence: x", x);
  detail::require_shape("velocity_with_divergence: velocity", velocity, x.rows(), x.cols());
  detail::require_shape("velocity_with_divergence: divergence", divergence, x.cols(), 1);
  detail::derive(capability::VelocityDivergence{}, field, t, x, velocity, divergence);
}

/// u_t(x) into @p velocity, (∂u_t/∂x)ᵀ·cotangent into @p vjp and ∇_x(∇·u_t) into
/// @p divergence_gradient (each d×N): from one pass of the field's
/// `velocity_vjp_divergence_gradient` member if it has one, else the three separately.
/// @throws std::invalid_argument for bad shapes or non-finite x or cotangent.
template <class Scalar, class Field>
void velocity_with_vjp_and_divergence_gradient(
    const Field& field, Scalar t, const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
    const std::type_identity_t<ConstMatrixRef<Scalar>>& cotangent,
    std::type_identity_t<MatrixRef<Scalar>> velocity, std::type_identity_t<MatrixRef<Scalar>> vjp,
    std::type_identity_t<MatrixRef<Scalar>> divergence_gradient) {
  detail::require_batch("velocity_with_vjp_and_divergence_gradient: x", x);
  detail::require_shape("velocity_with_vjp_and_divergence_gradient: cotangent", cotangent, x.rows(),
                        x.cols());
  detail::require_finite("velocity_with_vjp_and_divergence_gradient: cotangent", cotangent);
  detail::require_shape("velocity_with_vjp_and_divergence_gradient: velocity", velocity, x.rows(),
                        x.cols());
  detail::require_shape("velocity_with_vjp_and_divergence_gradient: vjp", vjp, x.rows(), x.cols());
  detail::require_shape("velocity_with_vjp_and_divergence_gradient: divergence_gradient",
                        divergence_gradient, x.rows(), x.cols());
  detail::derive(capability::VelocityVjpDivergenceGradient{}, field, t, x, cotangent, velocity, vjp,
                 divergence_gradient);
}

/// The gradient of the divergence ∇_x(∇·u_t) for each sample into @p out (d×N):
/// field.divergence_gradient, else forward mode with nested duals (d²·N dual columns).
/// @throws std::invalid_argument for bad shapes or non-finite x.
template <class Scalar, class Field>
void divergence_gradient(const Field& field, Scalar t,
                         const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                         std::type_identity_t<MatrixRef<Scalar>> out) {
  detail::require_batch("divergence_gradient: x", x);
  detail::require_shape("divergence_gradient: out", out, x.rows(), x.cols());
  detail::derive(capability::DivergenceGradient{}, field, t, x, out);
}

}  // namespace flowmatch
