/// @file capabilities.hpp
/// @brief The field protocol: every capability a velocity field may offer, plain and
/// conditional, named once.
///
/// A velocity field u_t(x) maps a time t and a d×N batch x (one column per sample) to a d×N
/// batch of velocities. Besides the velocity, a field may offer exact derivatives with respect
/// to x. Each capability is one member with a fixed signature; a conditional field (u_t(x | c),
/// with a k×N condition matrix c, one column per sample) offers the same members with c after
/// x. Every argument after t (and c) has one column, or one entry, per sample.
///
/// | capability (tag)             | plain member                            | output            |
/// |------------------------------|-----------------------------------------|-------------------|
/// | capability::Velocity         | `field(t, x, out)` or `field(t, x)`     | u (d×N)           |
/// | capability::Divergence       | `divergence(t, x, out)`                 | ∇·u (length N)    |
/// | capability::Jvp              | `jvp(t, x, tangent, out)`               | (∂u/∂x)·v (d×N)   |
/// | capability::Vjp              | `vjp(t, x, cotangent, out)`             | (∂u/∂x)ᵀ·w (d×N)  |
/// | capability::DivergenceGradient | `divergence_gradient(t, x, out)`      | ∇(∇·u) (d×N)      |
/// | capability::VelocityDivergence | `velocity_divergence(t, x, u, div)`   | u and ∇·u at once |
///
/// One more fused capability, capability::VelocityVjpDivergenceGradient, is the member
/// `velocity_vjp_divergence_gradient(t, x, cotangent, velocity, vjp, divergence_gradient)`:
/// u, (∂u/∂x)ᵀ·cotangent and ∇(∇·u) from one pass (the dynamics of the exact score).
///
/// The conditional forms insert `const ConstMatrixRef<Scalar>& c` after x: `field(t, x, c, out)`,
/// `divergence(t, x, c, out)`, and so on. Inputs are `ConstMatrixRef<Scalar>`, outputs
/// `MatrixRef<Scalar>` (d×N, sized by the caller) or `VectorRef<Scalar>` (length N).
///
/// What a field offers is detected at compile time by the concepts below (HasDivergence,
/// HasConditionalJvp, ...). Each tag bundles a capability's name, its two concepts and its two
/// calls, so that generic code (the adapters of field_adapter.hpp, the type-erased AnyField)
/// handles every capability with one template instead of one hand-written member each. The
/// library's functions derive what a field does not offer where they can (forward-mode
/// differentiation of a field generic over its scalar type: autodiff/field_derivatives.hpp).
#pragma once

#include <concepts>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// @name Plain fields
///@{

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

/// A field that offers vector-Jacobian products: `field.vjp(t, x, cotangent, out)`.
template <class F, class Scalar>
concept HasVjp = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                          const ConstMatrixRef<Scalar>& cotangent, MatrixRef<Scalar> out) {
  field.vjp(t, x, cotangent, out);
};

/// A field that offers the gradient of its divergence: `field.divergence_gradient(t, x, out)`.
template <class F, class Scalar>
concept HasDivergenceGradient = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                         MatrixRef<Scalar> out) {
  field.divergence_gradient(t, x, out);
};

/// A field that offers its velocity and exact divergence from one pass:
/// `field.velocity_divergence(t, x, velocity, divergence)`.
template <class F, class Scalar>
concept HasVelocityDivergence = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                         MatrixRef<Scalar> velocity, VectorRef<Scalar> divergence) {
  field.velocity_divergence(t, x, velocity, divergence);
};

/// A field that offers its velocity, a vector-Jacobian product and the gradient of its
/// divergence from one pass (what the exact score's dynamics need):
/// `field.velocity_vjp_divergence_gradient(t, x, cotangent, velocity, vjp, divergence_gradient)`.
template <class F, class Scalar>
concept HasVelocityVjpDivergenceGradient = requires(const F& field, Scalar t,
                                                    const ConstMatrixRef<Scalar>& x,
                                                    const ConstMatrixRef<Scalar>& cotangent,
                                                    MatrixRef<Scalar> velocity,
                                                    MatrixRef<Scalar> vjp,
                                                    MatrixRef<Scalar> divergence_gradient) {
  field.velocity_vjp_divergence_gradient(t, x, cotangent, velocity, vjp, divergence_gradient);
};
///@}

/// Whether a field's derivatives come from reverse-mode differentiation (a network evaluated by
/// an autograd engine). Such a field declares `static constexpr bool prefers_reverse_mode =
/// true;`: its vector-Jacobian product costs one backward pass where its Jacobian-vector product
/// costs two. An estimator that may use either product uses the vjp for such a field and the jvp
/// (forward mode, the cheaper one for the library's own fields) otherwise: Hutchinson's
/// zᵀ (∂u/∂x) z = ((∂u/∂x)ᵀ z)ᵀ z. The adapters of field_adapter.hpp pass the declaration on.
template <class F>
inline constexpr bool prefers_reverse_mode = [] {
  // unwrap_reference_t of reference_wrapper<const T> is const T&: strip that as well.
  using Field = std::remove_cvref_t<std::unwrap_reference_t<std::remove_cvref_t<F>>>;
  if constexpr (requires { Field::prefers_reverse_mode; }) {
    return static_cast<bool>(Field::prefers_reverse_mode);
  } else {
    return false;
  }
}();

/// The same preference asked of a field at run time: the field's member
/// `reverse_mode_preferred()` when it has one (AnyField, whose held field is chosen at run time,
/// and the adapters of field_adapter.hpp, which ask the field they wrap), prefers_reverse_mode<F>
/// otherwise.
template <class F>
[[nodiscard]] bool reverse_mode_preferred(const F& field) {
  const std::unwrap_reference_t<F>& held = field;
  if constexpr (requires { held.reverse_mode_preferred(); }) {
    return held.reverse_mode_preferred();
  } else {
    return prefers_reverse_mode<F>;
  }
}

/// @name Conditional fields
///@{

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

/// `field.divergence(t, x, c, out)`: the divergence in x at conditions c.
template <class F, class Scalar>
concept HasConditionalDivergence = requires(const F& field, Scalar t,
                                            const ConstMatrixRef<Scalar>& x,
                                            const ConstMatrixRef<Scalar>& condition,
                                            VectorRef<Scalar> out) {
  field.divergence(t, x, condition, out);
};

/// `field.jvp(t, x, c, tangent, out)`.
template <class F, class Scalar>
concept HasConditionalJvp = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                     const ConstMatrixRef<Scalar>& condition,
                                     const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) {
  field.jvp(t, x, condition, tangent, out);
};

/// `field.vjp(t, x, c, cotangent, out)`.
template <class F, class Scalar>
concept HasConditionalVjp = requires(const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                                     const ConstMatrixRef<Scalar>& condition,
                                     const ConstMatrixRef<Scalar>& cotangent,
                                     MatrixRef<Scalar> out) {
  field.vjp(t, x, condition, cotangent, out);
};

/// `field.divergence_gradient(t, x, c, out)`.
template <class F, class Scalar>
concept HasConditionalDivergenceGradient = requires(const F& field, Scalar t,
                                                    const ConstMatrixRef<Scalar>& x,
                                                    const ConstMatrixRef<Scalar>& condition,
                                                    MatrixRef<Scalar> out) {
  field.divergence_gradient(t, x, condition, out);
};

/// `field.velocity_divergence(t, x, c, velocity, divergence)`.
template <class F, class Scalar>
concept HasConditionalVelocityDivergence = requires(const F& field, Scalar t,
                                                    const ConstMatrixRef<Scalar>& x,
                                                    const ConstMatrixRef<Scalar>& condition,
                                                    MatrixRef<Scalar> velocity,
                                                    VectorRef<Scalar> divergence) {
  field.velocity_divergence(t, x, condition, velocity, divergence);
};

/// `field.velocity_vjp_divergence_gradient(t, x, c, cotangent, velocity, vjp,
/// divergence_gradient)`.
template <class F, class Scalar>
concept HasConditionalVelocityVjpDivergenceGradient = requires(
    const F& field, Scalar t, const ConstMatrixRef<Scalar>& x,
    const ConstMatrixRef<Scalar>& condition, const ConstMatrixRef<Scalar>& cotangent,
    MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp, MatrixRef<Scalar> divergence_gradient) {
  field.velocity_vjp_divergence_gradient(t, x, condition, cotangent, velocity, vjp,
                                         divergence_gradient);
};
///@}

namespace detail {

/// In builds with assertions (NDEBUG not defined), fills @p out with NaN before an in-place
/// field writes it, unless it shares memory with @p input: a field that leaves entries
/// unwritten then fails the integrators' finiteness checks instead of passing on stale values.
template <class Scalar>
void poison_output(MatrixRef<Scalar> out, const ConstMatrixRef<Scalar>& input) {
#ifndef NDEBUG
  if constexpr (std::numeric_limits<Scalar>::has_quiet_NaN) {
    const Scalar* out_begin = out.data();
    const Scalar* out_end = out_begin + out.outerStride() * out.cols();
    const Scalar* input_begin = input.data();
    const Scalar* input_end = input_begin + input.outerStride() * input.cols();
    const std::less<const Scalar*> before;
    if (out.size() > 0 && (!before(out_begin, input_end) || !before(input_begin, out_end))) {
      out.setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    }
  }
#else
  static_cast<void>(out);
  static_cast<void>(input);
#endif
}

}  // namespace detail

/// Evaluates @p field at (t, x) into @p out (d×N, sized by the caller). In builds with
/// assertions, @p out is first filled with NaN (unless it aliases x), so that a field that
/// leaves entries unwritten is caught (detail::poison_output).
/// A returning field whose result is not d×N throws std::invalid_argument.
template <class Scalar, VelocityField<Scalar> F>
void evaluate_velocity(const F& field, Scalar t,
                       const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                       std::type_identity_t<MatrixRef<Scalar>> out) {
  if constexpr (InPlaceVelocityField<F, Scalar>) {
    detail::poison_output(out, x);
    field(t, x, out);
  } else {
    decltype(auto) velocity = field(t, x);
    detail::require_shape("evaluate_velocity: result of the field", velocity, x.rows(), x.cols());
    out = velocity;
  }
}

/// Evaluates @p field at (t, x) and returns the d×N velocities (allocates; convenience).
template <class Scalar, VelocityField<Scalar> F>
Matrix<Scalar> evaluate_velocity(const F& field, Scalar t,
                                 const std::type_identity_t<ConstMatrixRef<Scalar>>& x) {
  Matrix<Scalar> out(x.rows(), x.cols());
  evaluate_velocity<Scalar>(field, t, x, out);
  return out;
}

/// Evaluates the conditional @p field at (t, x, condition) into @p out (d×N, sized by the
/// caller). Throws std::invalid_argument if the condition count differs from the batch size or
/// a returning field's result is not d×N.
template <class Scalar, ConditionalVelocityField<Scalar> F>
void evaluate_conditional_velocity(const F& field, Scalar t,
                                   const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                                   const std::type_identity_t<ConstMatrixRef<Scalar>>& condition,
                                   std::type_identity_t<MatrixRef<Scalar>> out) {
  if (condition.cols() != x.cols()) {
    detail::reject_argument("evaluate_conditional_velocity: condition",
                            "has " + detail::to_text(condition.cols()) + " columns",
                            "one per sample (" + detail::to_text(x.cols()) + ")");
  }
  if constexpr (InPlaceConditionalVelocityField<F, Scalar>) {
    detail::poison_output(out, x);
    field(t, x, condition, out);
  } else {
    decltype(auto) velocity = field(t, x, condition);
    detail::require_shape("evaluate_conditional_velocity: result of the field", velocity, x.rows(),
                          x.cols());
    out = velocity;
  }
}

/// The capability tags. Each names one capability and provides
///
///   - `name`: what it is, for messages;
///   - `offered_by<F, Scalar>` and `offered_conditionally_by<F, Scalar>`: the concepts above;
///   - `call(field, t, x, args...)` and `call(field, t, x, c, args...)`: the member call.
namespace capability {

template <class Scalar>
using In = std::type_identity_t<const ConstMatrixRef<Scalar>&>;
template <class Scalar>
using Out = std::type_identity_t<MatrixRef<Scalar>>;
template <class Scalar>
using PerSample = std::type_identity_t<VectorRef<Scalar>>;

/// The velocity u_t(x).
struct Velocity {
  static constexpr const char* name = "velocity";
  template <class F, class Scalar>
  static constexpr bool offered_by = VelocityField<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by = ConditionalVelocityField<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, Out<Scalar> out) {
    evaluate_velocity<Scalar>(field, t, x, out);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition, Out<Scalar> out) {
    evaluate_conditional_velocity<Scalar>(field, t, x, condition, out);
  }
};

/// The exact divergence ∇·u_t(x) = tr(∂u_t/∂x).
struct Divergence {
  static constexpr const char* name = "exact divergence";
  template <class F, class Scalar>
  static constexpr bool offered_by = HasDivergence<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by = HasConditionalDivergence<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, PerSample<Scalar> out) {
    field.divergence(t, x, out);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition,
                   PerSample<Scalar> out) {
    field.divergence(t, x, condition, out);
  }
};

/// The Jacobian-vector product (∂u_t/∂x)·tangent.
struct Jvp {
  static constexpr const char* name = "Jacobian-vector product";
  template <class F, class Scalar>
  static constexpr bool offered_by = HasJvp<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by = HasConditionalJvp<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> tangent, Out<Scalar> out) {
    field.jvp(t, x, tangent, out);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition, In<Scalar> tangent,
                   Out<Scalar> out) {
    field.jvp(t, x, condition, tangent, out);
  }
};

/// The vector-Jacobian product (∂u_t/∂x)ᵀ·cotangent.
struct Vjp {
  static constexpr const char* name = "vector-Jacobian product";
  template <class F, class Scalar>
  static constexpr bool offered_by = HasVjp<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by = HasConditionalVjp<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> cotangent, Out<Scalar> out) {
    field.vjp(t, x, cotangent, out);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition,
                   In<Scalar> cotangent, Out<Scalar> out) {
    field.vjp(t, x, condition, cotangent, out);
  }
};

/// The gradient of the divergence ∇_x(∇·u_t).
struct DivergenceGradient {
  static constexpr const char* name = "gradient of the divergence";
  template <class F, class Scalar>
  static constexpr bool offered_by = HasDivergenceGradient<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by = HasConditionalDivergenceGradient<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, Out<Scalar> out) {
    field.divergence_gradient(t, x, out);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition, Out<Scalar> out) {
    field.divergence_gradient(t, x, condition, out);
  }
};

/// The velocity and the exact divergence from one pass.
struct VelocityDivergence {
  static constexpr const char* name = "velocity with divergence in one pass";
  template <class F, class Scalar>
  static constexpr bool offered_by = HasVelocityDivergence<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by = HasConditionalVelocityDivergence<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, Out<Scalar> velocity,
                   PerSample<Scalar> divergence) {
    field.velocity_divergence(t, x, velocity, divergence);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition,
                   Out<Scalar> velocity, PerSample<Scalar> divergence) {
    field.velocity_divergence(t, x, condition, velocity, divergence);
  }
};

/// The velocity, the vector-Jacobian product (∂u_t/∂x)ᵀ·cotangent and the gradient of the
/// divergence from one pass.
struct VelocityVjpDivergenceGradient {
  static constexpr const char* name =
      "velocity, vector-Jacobian product and gradient of the divergence in one pass";
  template <class F, class Scalar>
  static constexpr bool offered_by = HasVelocityVjpDivergenceGradient<F, Scalar>;
  template <class F, class Scalar>
  static constexpr bool offered_conditionally_by =
      HasConditionalVelocityVjpDivergenceGradient<F, Scalar>;
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> cotangent,
                   Out<Scalar> velocity, Out<Scalar> vjp, Out<Scalar> divergence_gradient) {
    field.velocity_vjp_divergence_gradient(t, x, cotangent, velocity, vjp, divergence_gradient);
  }
  template <class F, class Scalar>
  static void call(const F& field, Scalar t, In<Scalar> x, In<Scalar> condition,
                   In<Scalar> cotangent, Out<Scalar> velocity, Out<Scalar> vjp,
                   Out<Scalar> divergence_gradient) {
    field.velocity_vjp_divergence_gradient(t, x, condition, cotangent, velocity, vjp,
                                           divergence_gradient);
  }
};

/// Every capability, in the order of the table in the file comment.
using All = std::tuple<Velocity, Divergence, Jvp, Vjp, DivergenceGradient, VelocityDivergence,
                       VelocityVjpDivergenceGradient>;

/// The number of capabilities.
inline constexpr std::size_t count = std::tuple_size_v<All>;

/// The position of @p Tag in All: 0 for Velocity, 1 for Divergence, ...
template <class Tag>
inline constexpr std::size_t index = []<class... Tags>(std::tuple<Tags...>*) {
  std::size_t position = 0;
  // Counts the tags before the first match (&& stops there).
  static_cast<void>(((!std::is_same_v<Tag, Tags> && ++position > 0) && ...));
  return position;
}(static_cast<All*>(nullptr));

}  // namespace capability

/// A capability tag (one of the types of namespace capability).
template <class Tag>
concept CapabilityTag = requires {
  { Tag::name } -> std::convertible_to<const char*>;
};

/// A field whose capabilities are known only at run time (AnyField): `field.offers(tag)` says
/// whether a capability is available, `field.require(tag, purpose)` throws
/// std::invalid_argument unless it is.
template <class F>
concept RuntimeCapabilities = requires(const F& field, const std::string& purpose) {
  { field.offers(capability::Divergence{}) } -> std::convertible_to<bool>;
  field.require(capability::Divergence{}, purpose);
};

namespace detail {

/// Throws std::invalid_argument, saying that the function @p purpose needs it, if @p field has
/// run-time capabilities without @p Tag; nothing for other fields, whose capabilities are checked
/// at compile time. Functions call it on entry, so that a missing capability is reported before any
/// work starts.
template <CapabilityTag Tag, class Field>
void require_capability(const Field& field, Tag tag, const char* purpose) {
  if constexpr (RuntimeCapabilities<Field>) field.require(tag, purpose);
}

}  // namespace detail

}  // namespace flowmatch
