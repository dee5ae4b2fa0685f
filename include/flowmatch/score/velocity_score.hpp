/// @file velocity_score.hpp
/// @brief The cheap score: ∇log p_t(x) read off a velocity field, one evaluation per batch.
///
/// On an affine path x_t = α_t x₁ + σ_t ε with a standard normal source, the marginal velocity
/// is u_t(x) = α̇ E[x₁|x] + σ̇ E[ε|x] and Tweedie's formula gives ∇log p_t(x) = −E[ε|x]/σ_t.
/// Solving the first for ε̂ = E[ε|x] = (α·u − α̇·x)/D, D = α·σ̇ − σ·α̇ (the path's
/// velocity_to_epsilon / velocity_to_score conversion), gives
///
///     ∇log p_t(x) = −ε̂/σ_t = (α̇·x − α·u)/(σ_t·D).
///
/// This is exact for the true marginal velocity of the path; for a learned field it is the
/// score implied by the field's prediction, not the score of the density of its flow (for that
/// see exact_score.hpp). It is undefined where σ_t = 0 (t = 1 for the usual schedulers), where
/// it throws std::domain_error.
#pragma once

#include <utility>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// ∇log p_t(x) = −ε̂/σ_t from the velocity of @p field at (t, x) on @p path (see the file
/// comment), for each column of the d×N batch @p x.
/// @throws std::invalid_argument for a bad shape or non-finite x; std::domain_error if t is
///         outside [0, 1] or the conversion is undefined there (σ_t = 0, D = 0).
template <Scheduler S, VelocityField<typename S::scalar_type> Field>
Matrix<typename S::scalar_type> velocity_score(const Field& field, const AffinePath<S>& path,
                                               typename S::scalar_type t,
                                               const ConstMatrixRef<typename S::scalar_type>& x) {
  using Scalar = typename S::scalar_type;
  detail::require_unit_time("velocity_score: t", t);
  detail::require_batch("velocity_score: x", x);
  const Matrix<Scalar> velocity = evaluate_velocity<Scalar>(field, t, x);
  return path.velocity_to_score(velocity, x, t);
}

/// A velocity field that also offers its cheap score `score(t, x)` on an affine path with a
/// standard normal source (see the file comment). Evaluates like the wrapped field.
template <class Field, Scheduler S>
requires VelocityField<Field, typename S::scalar_type>
class VelocityScore {
 public:
  using scalar_type = typename S::scalar_type;

  /// @param field the velocity field (held by value; pass std::cref(f) to hold a reference).
  /// @param scheduler the scheduler of the path the field was trained on.
  explicit VelocityScore(Field field, S scheduler = S{})
      : field_(std::move(field)), path_(std::move(scheduler)) {}

  /// The path.
  [[nodiscard]] const AffinePath<S>& path() const { return path_; }

  /// u_t(x) from the wrapped field.
  void operator()(scalar_type t, const ConstMatrixRef<scalar_type>& x,
                  MatrixRef<scalar_type> out) const {
    evaluate_velocity<scalar_type>(field_, t, x, out);
  }

  /// ∇log p_t(x) per column of @p x (d×N); throws as velocity_score.
  [[nodiscard]] Matrix<scalar_type> score(scalar_type t,
                                          const ConstMatrixRef<scalar_type>& x) const {
    return velocity_score(field_, path_, t, x);
  }

 private:
  Field field_;
  AffinePath<S> path_;
};

}  // namespace flowmatch
