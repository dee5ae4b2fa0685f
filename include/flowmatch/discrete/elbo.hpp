/// @file elbo.hpp
/// @brief An upper bound on −log p(x₁) of the denoiser's chain, from the generalized KL loss.
///
/// The chain of a probability denoiser starts at the source p₀, as does the conditional chain
/// of the mixture path towards x₁; the KL divergence between their path measures bounds that of
/// their marginals at t = 1, and the latter is −log p_θ(x₁) since the conditional chain ends at
/// δ(x₁). Written out for the mixture path (discrete/loss.hpp):
///
///     −log p_θ(x₁) ≤ ∫₀¹ E_{x_t ~ p_t(· | x₁)} Σ_l ℓ(t, x_t,l, x₁,l) dt,
///
/// an evidence bound, not the likelihood: the gap is the KL divergence between the two chains
/// given x₁ (it is 0 only if the model's chain is the conditional one). For the exact posterior
/// the model's chain has the data's marginals, so the bound is ≥ −log p_data(x₁).
///
/// Estimator: N_t strata of [0, 1), one time t_i = (i + u_i)/N_t per stratum with u_i uniform,
/// x₀ ~ p₀ and x_t ~ p_t(· | x₀, x₁) drawn afresh for each; the bound is the mean over strata of
/// Σ_l ℓ. Its standard error is the standard deviation over strata divided by √N_t, which
/// overstates the error of a stratified mean (it ignores the stratification), so it is a
/// conservative error bar.
///
/// Randomness: one 64-bit key from the caller's generator; sequence n reads 1 + 2L words per
/// stratum from its own counter-based stream (detail/sample_noise.hpp), so its bound does not
/// depend on the batch it is computed in.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/loss.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The bound of discrete_elbo per sequence.
struct DiscreteElbo {
  Vector<double> bound;           ///< The estimate of the upper bound on −log p_θ(x₁) (nats).
  Vector<double> standard_error;  ///< Its standard error (conservative, see the file comment).
};

/// Estimates the upper bound on −log p_θ(x₁) of the file comment for each sequence of @p x1.
/// @param denoiser the posterior model, over the source's vocabulary K.
/// @param path the mixture path.
/// @param source the source p₀.
/// @param x1 the L×N data tokens, in [0, K).
/// @param strata N_t >= 2, the number of strata of [0, 1) (one denoiser evaluation each).
/// @param generator any UniformRandomBitGenerator; one 64-bit key is drawn from it.
/// @param tolerance on the sums of the denoiser's distributions.
/// @throws std::invalid_argument for bad tokens, shapes, a vocabulary mismatch or a denoiser
///         output that is not a distribution; std::domain_error if κ rounds to 1 at a drawn time.
template <ConvexScheduler S, Denoiser<typename S::scalar_type> D,
          std::uniform_random_bit_generator Generator>
DiscreteElbo discrete_elbo(
    const D& denoiser, const MixturePath<S>& path,
    const DiscreteSource<typename S::scalar_type>& source, const ConstTokenRef& x1, Index strata,
    Generator& generator,
    double tolerance = detail::default_probability_tolerance<typename S::scalar_type>()) {
  using Scalar = typename S::scalar_type;
  const Index vocabulary = source.vocabulary();
  if (denoiser.vocabulary() != vocabulary) {
    detail::reject_argument("discrete_elbo: denoiser vocabulary",
                            detail::is_value(denoiser.vocabulary()),
                            detail::to_text(vocabulary) + " (the source's vocabulary)");
  }
  detail::require_tokens("discrete_elbo: x1", x1, vocabulary, false, source.length().value_or(-1));
  detail::require_count("discrete_elbo: strata", strata, Index(2));
  const Index length = x1.rows();
  const Index sequences = x1.cols();
  const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
  const std::uint64_t words_per_stratum = 1 + 2 * static_cast<std::uint64_t>(length);
  const Scalar below_one = std::nextafter(Scalar(1), Scalar(0));
  Matrix<double> values(strata, sequences);
  Vector<Scalar> t(sequences);
  TokenMatrix x_t(length, sequences);
  Matrix<Scalar> posterior;
  for (Index stratum = 0; stratum < strata; ++stratum) {
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      detail::SampleStream stream(key, static_cast<std::uint64_t>(sequence),
                                  static_cast<std::uint64_t>(stratum) * words_per_stratum);
      t(sequence) = std::min(
          static_cast<Scalar>((static_cast<double>(stratum) + detail::unit_uniform(stream)) /
                              static_cast<double>(strata)),
          below_one);
      const double kappa = static_cast<double>(path.kappa(t(sequence)));
      for (Index position = 0; position < length; ++position) {
        const Token source_token = source.draw(position, detail::unit_uniform(stream));
        x_t(position, sequence) =
            detail::unit_uniform(stream) < kappa ? x1(position, sequence) : source_token;
      }
    }
    detail::evaluate_posterior<Scalar>("discrete_elbo", denoiser, t, x_t, posterior, tolerance);
    values.row(stratum) =
        generalized_kl_loss(path, source, t, x_t, x1, posterior, Reduction::none, tolerance)
            .colwise()
            .sum()
            .template cast<double>();
  }
  DiscreteElbo elbo;
  elbo.bound = values.colwise().mean().transpose();
  const Vector<double> deviation_squares =
      (values.rowwise() - elbo.bound.transpose()).array().square().colwise().sum().transpose();
  elbo.standard_error =
      (deviation_squares / static_cast<double>(strata - 1) / static_cast<double>(strata))
          .array()
          .sqrt();
  return elbo;
}

}  // namespace flowmatch
