/// @file divergence.hpp
/// @brief Divergence estimators for the instantaneous change of variables: exact, or
/// Hutchinson's stochastic trace estimator.
///
/// An estimator is chosen per call of log_likelihood / sample_with_log_likelihood. At the start
/// of a call it is prepared for the batch (`estimator.template prepare<Scalar>(d, N)`), which
/// returns a callable `estimate(field, t, x, velocity, divergence)` used at every evaluation of
/// the ODE: it writes u_t(x) into the d×N `velocity` and the estimate of ∇·u_t(x) into the
/// length-N `divergence`, so that an estimator can take both from one pass of the field:
///
///   - ExactDivergence: u and ∇·u from the field's fused `velocity_divergence` member (one
///     pass), else the velocity and the divergence member, else forward mode on a generic
///     field, else a compile-time error (see detail::derive in field_derivatives.hpp);
///   - Hutchinson: ∇·u ≈ (1/K) Σ_k z_kᵀ (∂u/∂x) z_k with K probes z_k per sample,
///     E[z zᵀ] = I, so the estimate is unbiased. The probes are drawn once per call from the
///     caller's generator and fixed along the trajectory (the ODE stays deterministic, and a
///     seed reproduces the result bit for bit). The K·N Jacobian-vector products are one
///     batched evaluation on d×(K·N) columns, from the field's jvp member or else forward mode
///     (from its vjp member for a field that prefers reverse mode: field/capabilities.hpp).
///     Its standard deviation falls as 1/√K.
///
/// Finite differences are an explicit opt-in: wrap the field in FiniteDifferenceField.
#pragma once

#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// The exact divergence (the field's member or forward mode).
struct ExactDivergence {
  /// What the estimator needs of the field.
  using capability_tag = capability::VelocityDivergence;

  /// Returns the estimate callable for a batch of @p samples points in R^dim.
  template <class Scalar>
  auto prepare(Index /*dim*/, Index /*samples*/) const {
    return [](const auto& field, Scalar t, const ConstMatrixRef<Scalar>& x,
              MatrixRef<Scalar> velocity, VectorRef<Scalar> divergence) {
      detail::derive(capability::VelocityDivergence{}, field, t, x, velocity, divergence);
    };
  }
};

/// The law of Hutchinson probe entries.
enum class ProbeDistribution {
  rademacher,  ///< ±1 with probability ½ each (the smallest variance for a given field).
  gaussian,    ///< standard normal.
};

/// Draws K probes for each of N samples in R^d: a d×(K·N) matrix whose column k·N + n is probe
/// k of sample n, entries independent with mean 0 and variance 1.
/// @throws std::invalid_argument unless dim >= 1, samples >= 0 and probes >= 1.
template <class Scalar, class Generator>
Matrix<Scalar> draw_probes(Index dim, Index samples, Index probes, ProbeDistribution distribution,
                           Generator& generator) {
  detail::require_count<Index>("draw_probes: dim", dim, 1);
  detail::require_count<Index>("draw_probes: samples", samples, 0);
  detail::require_count<Index>("draw_probes: probes", probes, 1);
  Matrix<Scalar> result(dim, probes * samples);
  if (distribution == ProbeDistribution::rademacher) {
    std::uniform_int_distribution<int> coin(0, 1);
    for (Index j = 0; j < result.size(); ++j) {
      result(j) = coin(generator) == 1 ? Scalar(1) : Scalar(-1);
    }
  } else if (distribution == ProbeDistribution::gaussian) {
    std::normal_distribution<Scalar> normal;
    for (Index j = 0; j < result.size(); ++j) result(j) = normal(generator);
  } else {
    detail::reject_argument("draw_probes: distribution",
                            detail::is_value(static_cast<int>(distribution)),
                            "ProbeDistribution::rademacher or gaussian");
  }
  return result;
}

namespace detail {

/// The buffers of hutchinson_divergence, kept between the calls of a prepared estimator so
/// that they are allocated only once.
template <class Scalar>
struct HutchinsonBuffers {
  Matrix<Scalar> repeated;  ///< x repeated K times side by side (K > 1 only).
  Matrix<Scalar> products;  ///< J z for every probe.
};

/// Hutchinson's estimate without the argument checks (see the public hutchinson_divergence).
template <class Scalar, class Field>
void hutchinson_divergence(const Field& field, Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& probes, VectorRef<Scalar> out,
                           HutchinsonBuffers<Scalar>& buffers) {
  const Index samples = x.cols();
  const Index count = probes.cols() / samples;
  if (count > 1) {
    buffers.repeated.resize(x.rows(), probes.cols());
    for (Index k = 0; k < count; ++k) buffers.repeated.middleCols(k * samples, samples) = x;
  }
  const ConstMatrixRef<Scalar> points = count > 1 ? ConstMatrixRef<Scalar>(buffers.repeated) : x;
  buffers.products.resize(x.rows(), probes.cols());
  // J z, or Jᵀ z for a reverse-mode field: z·(J z) = (Jᵀ z)·z.
  bool transposed = false;
  if constexpr (HasVjp<std::unwrap_reference_t<Field>, Scalar>) {
    transposed = reverse_mode_preferred(field);
    if (transposed) derive(capability::Vjp{}, field, t, points, probes, buffers.products);
  }
  if (!transposed) derive(capability::Jvp{}, field, t, points, probes, buffers.products);
  // z·(J z) per column, then the mean over the K probes of each sample.
  out.setZero();
  for (Index k = 0; k < count; ++k) {
    out.transpose() += probes.middleCols(k * samples, samples)
                           .cwiseProduct(buffers.products.middleCols(k * samples, samples))
                           .colwise()
                           .sum();
  }
  out /= Scalar(count);
}

}  // namespace detail

/// Hutchinson's estimate (1/K) Σ_k z_kᵀ (∂u_t/∂x) z_k of ∇·u_t for each sample, into @p out
/// (length N), with the probes z of draw_probes (d×(K·N), column k·N + n for sample n).
/// The Jacobian-vector products are one evaluation on d×(K·N) columns (see
/// jacobian_vector_product).
/// @throws std::invalid_argument for bad shapes or non-finite x or probes.
template <class Scalar, class Field>
void hutchinson_divergence(const Field& field, Scalar t,
                           const std::type_identity_t<ConstMatrixRef<Scalar>>& x,
                           const std::type_identity_t<ConstMatrixRef<Scalar>>& probes,
                           std::type_identity_t<VectorRef<Scalar>> out) {
  detail::require_batch("hutchinson_divergence: x", x);
  const Index samples = x.cols();
  if (samples == 0 || probes.rows() != x.rows() || probes.cols() % samples != 0 ||
      probes.cols() == 0) {
    detail::reject_argument(
        "hutchinson_divergence: probes",
        "has shape " + detail::to_text(probes.rows()) + "x" + detail::to_text(probes.cols()),
        detail::to_text(x.rows()) + "x(K·" + detail::to_text(samples) + ") with K >= 1");
  }
  detail::require_finite("hutchinson_divergence: probes", probes);
  detail::require_shape("hutchinson_divergence: out", out, samples, 1);
  detail::HutchinsonBuffers<Scalar> buffers;
  detail::hutchinson_divergence<Scalar>(field, t, x, probes, out, buffers);
}

/// Hutchinson's estimator with K probes per sample, drawn from @p generator once per call of
/// the function it is given to (held by reference: it must outlive the estimator).
template <class Generator>
class Hutchinson {
 public:
  /// @param probes K >= 1, the number of probes per sample.
  /// @param distribution the law of the probe entries.
  /// @param generator the source of randomness, advanced by every call that uses the estimator.
  /// @throws std::invalid_argument if probes < 1.
  Hutchinson(Index probes, ProbeDistribution distribution, Generator& generator)
      : probes_(probes), distribution_(distribution), generator_(&generator) {
    detail::require_count<Index>("Hutchinson: probes", probes_, 1);
  }

  /// What the estimator needs of the field.
  using capability_tag = capability::Jvp;

  /// The number of probes per sample.
  [[nodiscard]] Index probes() const { return probes_; }

  /// Draws the probes for a batch and returns the estimate callable that uses them.
  template <class Scalar>
  auto prepare(Index dim, Index samples) const {
    return [probes = draw_probes<Scalar>(dim, samples, probes_, distribution_, *generator_),
            buffers = detail::HutchinsonBuffers<Scalar>{}](
               const auto& field, Scalar t, const ConstMatrixRef<Scalar>& x,
               MatrixRef<Scalar> velocity, VectorRef<Scalar> divergence) mutable {
      evaluate_velocity<Scalar>(field, t, x, velocity);
      detail::hutchinson_divergence<Scalar>(field, t, x, probes, divergence, buffers);
    };
  }

 private:
  Index probes_;
  ProbeDistribution distribution_;
  Generator* generator_;
};

}  // namespace flowmatch
