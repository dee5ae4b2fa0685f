/// @file tangent_field.hpp
/// @brief TangentField: any ambient velocity field (a lambda, an Mlp) made a field on a
/// manifold by projecting its velocities onto the tangent spaces.
#pragma once

#include <functional>
#include <type_traits>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/manifold/manifold.hpp"

namespace flowmatch {

/// The field x ↦ P_x u_t(x): the velocities of an ambient field @p Field, each projected onto
/// the tangent space at its point of manifold @p M. Holds the field by value; pass
/// std::cref(field) to refer to one owned elsewhere. Offers the velocity only: the derivatives
/// of the projected field are not those of the ambient one.
template <Manifold M, class Field>
class TangentField {
 public:
  using scalar_type = typename M::scalar_type;
  /// The wrapped field's type, seen through a reference_wrapper.
  using wrapped_type = std::unwrap_reference_t<Field>;
  static_assert(VelocityField<wrapped_type, scalar_type>,
                "TangentField: Field must be a velocity field over the manifold's scalar type");

  /// The projection of @p field onto the tangent spaces of @p manifold.
  TangentField(M manifold, Field field)
      : manifold_(std::move(manifold)), field_(std::move(field)) {}

  /// The manifold.
  [[nodiscard]] const M& manifold() const { return manifold_; }
  /// The wrapped ambient field.
  [[nodiscard]] const wrapped_type& field() const { return field_; }

  /// out = P_x u_t(x) for a dimension()×N batch x of points on the manifold.
  void operator()(scalar_type t, const ConstMatrixRef<scalar_type>& x,
                  MatrixRef<scalar_type> out) const {
    detail::require_shape("TangentField: x", x, manifold_.dimension(), -1);
    evaluate_velocity<scalar_type>(static_cast<const wrapped_type&>(field_), t, x, out);
    manifold_.project_tangents(x, out, out);
  }

 private:
  M manifold_;
  Field field_;
};

}  // namespace flowmatch
