/// @file field_adapter.hpp
/// @brief FieldAdapter: the one forwarding mechanism and the one ownership rule of every field
/// wrapper (parallel evaluation, bound conditions, guidance, schedule transforms).
///
/// **Ownership.** An adapter holds the field it wraps by value. To wrap a field owned
/// elsewhere, pass `std::cref(field)` (or `std::ref`): the adapter sees through the
/// reference_wrapper, so every capability of the referenced field is found. The referenced
/// field must then outlive the adapter.
///
/// **Forwarding.** An adapter derives from `FieldAdapter<Adapter, Field>` and states only what
/// it changes:
///
///     template <class Tag, class Scalar>
///     static constexpr bool offers = ...;               // the plain members it offers
///     template <class Tag, class Scalar>
///     static constexpr bool offers_conditionally = ...; // the conditional ones (default: none)
///     template <class Tag, class Scalar, class... Args>
///     void forward(Tag, Scalar t, const ConstMatrixRef<Scalar>& x, Args... args) const;
///
/// The base then defines every member of the protocol (capabilities.hpp) — `operator()`,
/// `divergence`, `jvp`, `vjp`, `divergence_gradient`, `velocity_divergence`,
/// `velocity_vjp_divergence_gradient`, in plain and conditional form — each present exactly when
/// `offers<Tag, Scalar>` (or `offers_conditionally`) holds, and each calling `forward(Tag{}, t, x,
/// args...)` with the member's remaining arguments (the condition first for a conditional member)
/// as Eigen::Ref views: `ConstMatrixRef<Scalar>` for inputs, `MatrixRef<Scalar>` or
/// `VectorRef<Scalar>` for outputs. An adapter whose change is the same for every capability (split
/// the columns, bind the conditions, combine guided predictions) writes one `forward` template; one
/// whose change differs per capability writes one `forward` overload per tag.
///
/// The base checks the shape of every argument after x (O(1), no scan of the values): outputs,
/// tangents and cotangents must match x (a length-N vector for a divergence), a condition must
/// have N columns; a mismatch throws std::invalid_argument naming the member and the argument.
///
/// Adapters must not declare members with the protocol's names: they would hide the base's.
#pragma once

#include <functional>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"

namespace flowmatch {

namespace detail {

/// Adapter::offers and Adapter::offers_conditionally, named outside the base so that the
/// constraints of its members are looked up only when a member is called (the adapter is
/// incomplete while the base is instantiated).
template <class Adapter, class Tag, class Scalar>
inline constexpr bool adapter_offers = Adapter::template offers<Tag, Scalar>;
template <class Adapter, class Tag, class Scalar>
inline constexpr bool adapter_offers_conditionally =
    Adapter::template offers_conditionally<Tag, Scalar>;

}  // namespace detail

/// A field that an adapter can hold (see the file comment): a velocity field over @p Scalar,
/// or a std::reference_wrapper to one.
template <class Field, class Scalar>
concept HeldVelocityField = VelocityField<std::unwrap_reference_t<Field>, Scalar>;

/// The base of every field wrapper (see the file comment).
/// @tparam Adapter the deriving class (CRTP).
/// @tparam Field the wrapped field, or a std::reference_wrapper to it.
template <class Adapter, class Field>
class FieldAdapter {
 public:
  /// The wrapped field's type, seen through a reference_wrapper.
  using wrapped_type = std::unwrap_reference_t<Field>;

  /// The wrapped field.
  [[nodiscard]] const wrapped_type& field() const { return field_; }

  /// The wrapped field's preference of derivative mode (capabilities.hpp).
  static constexpr bool prefers_reverse_mode = flowmatch::prefers_reverse_mode<wrapped_type>;
  /// The same, asked of the wrapped field at run time (capabilities.hpp).
  [[nodiscard]] bool reverse_mode_preferred() const {
    return flowmatch::reverse_mode_preferred(field_);
  }

  /// No conditional member unless the adapter says otherwise.
  template <class Tag, class Scalar>
  static constexpr bool offers_conditionally = false;

  /// @name Plain members
  ///@{
  template <class Scalar>
  requires(detail::adapter_offers<Adapter, capability::Velocity, Scalar>) void operator()(
      Scalar t, capability::In<Scalar> x, capability::Out<Scalar> out) const {
    detail::require_shape("velocity: out", out, x.rows(), x.cols());
    adapter().forward(capability::Velocity{}, t, x, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers<Adapter, capability::Divergence, Scalar>) void divergence(
      Scalar t, capability::In<Scalar> x, capability::PerSample<Scalar> out) const {
    detail::require_shape("divergence: out", out, x.cols(), 1);
    adapter().forward(capability::Divergence{}, t, x, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers<Adapter, capability::Jvp, Scalar>) void jvp(
      Scalar t, capability::In<Scalar> x, capability::In<Scalar> tangent,
      capability::Out<Scalar> out) const {
    detail::require_shape("jvp: tangent", tangent, x.rows(), x.cols());
    detail::require_shape("jvp: out", out, x.rows(), x.cols());
    adapter().forward(capability::Jvp{}, t, x, tangent, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers<Adapter, capability::Vjp, Scalar>) void vjp(
      Scalar t, capability::In<Scalar> x, capability::In<Scalar> cotangent,
      capability::Out<Scalar> out) const {
    detail::require_shape("vjp: cotangent", cotangent, x.rows(), x.cols());
    detail::require_shape("vjp: out", out, x.rows(), x.cols());
    adapter().forward(capability::Vjp{}, t, x, cotangent, out);
  }
  template <class Scalar>
  requires(
      detail::adapter_offers<Adapter, capability::DivergenceGradient,
                             Scalar>) void divergence_gradient(Scalar t, capability::In<Scalar> x,
                                                               capability::Out<Scalar> out) const {
    detail::require_shape("divergence_gradient: out", out, x.rows(), x.cols());
    adapter().forward(capability::DivergenceGradient{}, t, x, out);
  }
  template <class Scalar>
  requires(
      detail::adapter_offers<Adapter, capability::VelocityDivergence,
                             Scalar>) void velocity_divergence(Scalar t, capability::In<Scalar> x,
                                                               capability::Out<Scalar> velocity,
                                                               capability::PerSample<Scalar>
                                                                   divergence) const {
    detail::require_shape("velocity_divergence: velocity", velocity, x.rows(), x.cols());
    detail::require_shape("velocity_divergence: divergence", divergence, x.cols(), 1);
    adapter().forward(capability::VelocityDivergence{}, t, x, velocity, divergence);
  }
  template <class Scalar>
  requires(detail::adapter_offers<
           Adapter, capability::VelocityVjpDivergenceGradient,
           Scalar>) void velocity_vjp_divergence_gradient(Scalar t, capability::In<Scalar> x,
                                                          capability::In<Scalar> cotangent,
                                                          capability::Out<Scalar> velocity,
                                                          capability::Out<Scalar> vjp,
                                                          capability::Out<Scalar>
                                                              divergence_gradient) const {
    require_fused_score_shapes(x, cotangent, velocity, vjp, divergence_gradient);
    adapter().forward(capability::VelocityVjpDivergenceGradient{}, t, x, cotangent, velocity, vjp,
                      divergence_gradient);
  }
  ///@}

  /// @name Conditional members
  ///@{
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<Adapter, capability::Velocity, Scalar>) void
  operator()(Scalar t, capability::In<Scalar> x, capability::In<Scalar> condition,
             capability::Out<Scalar> out) const {
    detail::require_shape("velocity: condition", condition, -1, x.cols());
    detail::require_shape("velocity: out", out, x.rows(), x.cols());
    adapter().forward(capability::Velocity{}, t, x, condition, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<
           Adapter, capability::Divergence,
           Scalar>) void divergence(Scalar t, capability::In<Scalar> x,
                                    capability::In<Scalar> condition,
                                    capability::PerSample<Scalar> out) const {
    detail::require_shape("divergence: condition", condition, -1, x.cols());
    detail::require_shape("divergence: out", out, x.cols(), 1);
    adapter().forward(capability::Divergence{}, t, x, condition, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<Adapter, capability::Jvp, Scalar>) void jvp(
      Scalar t, capability::In<Scalar> x, capability::In<Scalar> condition,
      capability::In<Scalar> tangent, capability::Out<Scalar> out) const {
    detail::require_shape("jvp: condition", condition, -1, x.cols());
    detail::require_shape("jvp: tangent", tangent, x.rows(), x.cols());
    detail::require_shape("jvp: out", out, x.rows(), x.cols());
    adapter().forward(capability::Jvp{}, t, x, condition, tangent, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<Adapter, capability::Vjp, Scalar>) void vjp(
      Scalar t, capability::In<Scalar> x, capability::In<Scalar> condition,
      capability::In<Scalar> cotangent, capability::Out<Scalar> out) const {
    detail::require_shape("vjp: condition", condition, -1, x.cols());
    detail::require_shape("vjp: cotangent", cotangent, x.rows(), x.cols());
    detail::require_shape("vjp: out", out, x.rows(), x.cols());
    adapter().forward(capability::Vjp{}, t, x, condition, cotangent, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<
           Adapter, capability::DivergenceGradient,
           Scalar>) void divergence_gradient(Scalar t, capability::In<Scalar> x,
                                             capability::In<Scalar> condition,
                                             capability::Out<Scalar> out) const {
    detail::require_shape("divergence_gradient: condition", condition, -1, x.cols());
    detail::require_shape("divergence_gradient: out", out, x.rows(), x.cols());
    adapter().forward(capability::DivergenceGradient{}, t, x, condition, out);
  }
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<
           Adapter, capability::VelocityDivergence,
           Scalar>) void velocity_divergence(Scalar t, capability::In<Scalar> x,
                                             capability::In<Scalar> condition,
                                             capability::Out<Scalar> velocity,
                                             capability::PerSample<Scalar> divergence) const {
    detail::require_shape("velocity_divergence: condition", condition, -1, x.cols());
    detail::require_shape("velocity_divergence: velocity", velocity, x.rows(), x.cols());
    detail::require_shape("velocity_divergence: divergence", divergence, x.cols(), 1);
    adapter().forward(capability::VelocityDivergence{}, t, x, condition, velocity, divergence);
  }
  template <class Scalar>
  requires(detail::adapter_offers_conditionally<
           Adapter, capability::VelocityVjpDivergenceGradient,
           Scalar>) void velocity_vjp_divergence_gradient(Scalar t, capability::In<Scalar> x,
                                                          capability::In<Scalar> condition,
                                                          capability::In<Scalar> cotangent,
                                                          capability::Out<Scalar> velocity,
                                                          capability::Out<Scalar> vjp,
                                                          capability::Out<Scalar>
                                                              divergence_gradient) const {
    detail::require_shape("velocity_vjp_divergence_gradient: condition", condition, -1, x.cols());
    require_fused_score_shapes(x, cotangent, velocity, vjp, divergence_gradient);
    adapter().forward(capability::VelocityVjpDivergenceGradient{}, t, x, condition, cotangent,
                      velocity, vjp, divergence_gradient);
  }
  ///@}

 protected:
  /// @param field the wrapped field (by value), or a std::reference_wrapper to it.
  explicit FieldAdapter(Field field) : field_(std::move(field)) {}

 private:
  const Adapter& adapter() const { return static_cast<const Adapter&>(*this); }

  // The d×N arguments of velocity_vjp_divergence_gradient, checked against x.
  template <class Scalar>
  static void require_fused_score_shapes(const ConstMatrixRef<Scalar>& x,
                                         const ConstMatrixRef<Scalar>& cotangent,
                                         const MatrixRef<Scalar>& velocity,
                                         const MatrixRef<Scalar>& vjp,
                                         const MatrixRef<Scalar>& divergence_gradient) {
    detail::require_shape("velocity_vjp_divergence_gradient: cotangent", cotangent, x.rows(),
                          x.cols());
    detail::require_shape("velocity_vjp_divergence_gradient: velocity", velocity, x.rows(),
                          x.cols());
    detail::require_shape("velocity_vjp_divergence_gradient: vjp", vjp, x.rows(), x.cols());
    detail::require_shape("velocity_vjp_divergence_gradient: divergence_gradient",
                          divergence_gradient, x.rows(), x.cols());
  }

  Field field_;
};

}  // namespace flowmatch
