/// @file guidance.hpp
/// @brief Classifier-free guidance of discrete flows: predictor-free guided rates and the guided
/// discrete Euler sampler.
///
/// **Rates.** At a position whose current token is c, a posterior p = p(x₁ | x_t, ·) gives the
/// chain of the mixture path the rates towards the tokens j ≠ c
///
///     R(j) = (a + b·κ)·p_j + b·(1 − κ)·p₀(j),   a = κ̇/(1 − κ),  b = η(t)·κ̇/(κ·(1 − κ)),
///
/// the expectation over x₁ ~ p of the sampler's rates (sampler.hpp); without a corrector (b = 0)
/// these are the rates a·p_j of rates.hpp. With a conditional denoiser
/// (discrete/conditional_denoiser.hpp), R_cond comes from p(x₁ | x_t, y) and R_null from
/// p(x₁ | x_t). Predictor-free guidance with weight w ≥ 0 (Nisonoff et al., 2024, "Unlocking
/// Guidance for Discrete State-Space Diffusion and Flow Models") jumps at
///
///     R_w(j) = R_cond(j)^w · R_null(j)^(1−w),   j ≠ c,      R_w(c) = −Σ_{j≠c} R_w(j),
///
/// so every row sums to zero; w = 1 is the conditional chain, w = 0 the unconditional one and
/// w > 1 sharpens the chain towards the label.
///
/// **Zero rates.** The powers follow the convention r^0 = 1 for every r ≥ 0 (0^0 included) and
/// 0^e = 0 for every e ≠ 0 — also for e < 0 (the factor R_null^(1−w) when w > 1), where the
/// power would be +∞. So w = 1 gives R_cond and w = 0 gives R_null exactly, bit for bit, and a
/// jump that one of the two models rules out (rate 0, with a non-zero exponent) stays ruled out:
/// guidance never opens a transition to a token the unconditional model excludes (guided_rate).
///
/// **The last step.** The step that ends at t = 1 (or starts where κ_t = 1), where a diverges,
/// sets x to a draw from the guided posterior
///
///     q_j ∝ p_cond(j)^w · p_null(j)^(1−w),   j in [0, K),
///
/// the distribution the rates a·q_j point to as κ → 1 (same convention for the powers); for
/// w = 1 it is p_cond and for w = 0 p_null, the x = x₁ of the plain sampler. A position whose q
/// has no mass (the two posteriors' supports disjoint) throws flowmatch::numerical_error.
///
/// **Work.** The plain sampler's O(1) jump draw relies on its rates being a mixture of a point
/// mass at one posterior draw x₁ and p₀ (jump_token). The guided rates are a geometric mean of
/// two posteriors' rates, not of that form, so the guided step forms the V rates of every token:
/// O(K) per token per step.
///
/// **Evaluations.** One call of the denoiser per step, on a stacked batch of 2N columns: the
/// tokens [x_t, x_t] with the labels [y, null] at times [t, t]; columns 0 … N − 1 give the
/// conditional posteriors and N … 2N − 1 the null ones.
///
/// **Randomness.** As sample_discrete: one 64-bit key from the generator; sequence n (column
/// n − first_sequence_index) reads four words per position per step from its own counter-based
/// stream at the counter 4·(s·L + l) (word 0: the draw of the last step, 1: whether to jump,
/// 2: the target), used or not. A sequence's tokens depend on the key, its index, its label and
/// its weight only — not on the batch, its split or the thread count. Draws are in double.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/sampler.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// R_cond^w · R_null^(1−w) with the convention of the file comment: r^0 = 1 (0^0 included) and
/// 0^e = 0 for every e ≠ 0.
/// @param conditional R_cond ≥ 0.
/// @param unconditional R_null ≥ 0.
/// @param weight w ≥ 0.
[[nodiscard]] inline double guided_rate(double conditional, double unconditional, double weight) {
  const auto power = [](double base, double exponent) {
    if (exponent == 0) return 1.0;
    if (exponent == 1) return base;
    return base > 0 ? std::pow(base, exponent) : 0.0;
  };
  // A zero factor wins over an overflowing one: 0·∞ would be NaN.
  const double conditional_factor = power(conditional, weight);
  if (conditional_factor == 0) return 0.0;
  const double unconditional_factor = power(unconditional, 1.0 - weight);
  if (unconditional_factor == 0) return 0.0;
  return conditional_factor * unconditional_factor;
}

namespace detail {

/// Throws std::invalid_argument, named @p name, unless @p weights has @p count entries, each
/// finite and ≥ 0.
template <class Scalar>
void require_guidance_weights(std::string_view name, const ConstVectorRef<Scalar>& weights,
                              Index count) {
  require_shape(name, weights, count, 1);
  for (Index sequence = 0; sequence < weights.size(); ++sequence) {
    const Scalar weight = weights(sequence);
    if (std::isfinite(weight) && weight >= Scalar(0)) continue;
    reject_argument(std::string(name) + "(" + to_text(sequence) + ")", is_value(weight),
                    "a finite guidance weight >= 0");
  }
}

/// Writes the guided rates R_w(j) of one position (file comment) into @p rates (V entries, the
/// current token's entry 0) and returns their total Σ_{j≠c} R_w(j). O(V).
/// @param source the source p₀ and its V states.
/// @param position the position (for p₀).
/// @param current the current token c.
/// @param conditional p(· | x_t, y) at the position (K entries).
/// @param unconditional p(· | x_t) at the position (K entries).
/// @param weight w.
/// @param coefficients κ, a and b of the step.
template <class Scalar, class Conditional, class Unconditional>
double guided_position_rates(const DiscreteSource<Scalar>& source, Index position, Token current,
                             const Conditional& conditional, const Unconditional& unconditional,
                             double weight, const JumpCoefficients& coefficients,
                             Vector<double>& rates) {
  const Index vocabulary = source.vocabulary();
  const double to_posterior =
      coefficients.jump_rate + coefficients.corrector * coefficients.kappa;      // a + b·κ
  const double to_source = coefficients.corrector * (1.0 - coefficients.kappa);  // b·(1 − κ)
  rates.resize(source.states());
  double total = 0;
  for (Index token = 0; token < source.states(); ++token) {
    if (token == current) {
      rates(token) = 0;
      continue;
    }
    const double spread = to_source > 0 ? to_source * source.probability(token, position) : 0.0;
    const double p_conditional = token < vocabulary ? static_cast<double>(conditional(token)) : 0.0;
    const double p_null = token < vocabulary ? static_cast<double>(unconditional(token)) : 0.0;
    rates(token) =
        guided_rate(to_posterior * p_conditional + spread, to_posterior * p_null + spread, weight);
    total += rates(token);
  }
  return total;
}

/// The guided discrete Euler sampler of one call of sample_discrete_guided.
template <class Scalar, class S, class D>
class GuidedEulerSampler {
 public:
  /// Refers to the arguments of sample_discrete_guided (checked there); @p key keys the streams.
  GuidedEulerSampler(const D& denoiser, const MixturePath<S>& path,
                     const DiscreteSource<Scalar>& source, const ConstLabelRef& labels,
                     const ConstVectorRef<Scalar>& weights,
                     const DiscreteSamplerOptions<Scalar>& options, std::uint64_t key)
      : denoiser_(denoiser),
        path_(path),
        source_(source),
        weights_(weights),
        options_(options),
        key_(key),
        stacked_labels_(2 * labels.size()) {
    stacked_labels_.head(labels.size()) = labels;
    stacked_labels_.tail(labels.size()).setConstant(denoiser.labels());  // the null label
  }

  /// Carries @p tokens (at times[0]) over the grid @p times.
  DiscreteSampleResult<Scalar> run(std::span<const Scalar> times, TokenMatrix tokens) {
    return walk_discrete_grid(
        times, options_, std::move(tokens),
        [this](Scalar t, Scalar h, bool final_step, TokenMatrix& state,
               DiscreteSamplerStats& stats) { take_step(t, h, final_step, state, stats); });
  }

 private:
  // One step from t to t + h of every token (to a guided-posterior draw when @p final_step).
  void take_step(Scalar t, Scalar h, bool final_step, TokenMatrix& tokens,
                 DiscreteSamplerStats& stats) {
    const Index sequences = tokens.cols();
    const Index length = tokens.rows();
    const Index vocabulary = source_.vocabulary();
    stacked_tokens_.resize(length, 2 * sequences);
    stacked_tokens_.leftCols(sequences) = tokens;
    stacked_tokens_.rightCols(sequences) = tokens;
    const Vector<Scalar> times = Vector<Scalar>::Constant(2 * sequences, t);
    evaluate_conditional_posterior<Scalar>("sample_discrete_guided", denoiser_, times,
                                           stacked_tokens_, stacked_labels_, posterior_,
                                           options_.posterior_tolerance);
    ++stats.evaluations;
    const bool to_data = final_step || !(path_.remaining(t) > Scalar(0));
    JumpCoefficients coefficients;
    if (!to_data) coefficients = jump_coefficients("sample_discrete_guided", path_, options_, t, h);
    const std::uint64_t counter = discrete_words_per_token *
                                  static_cast<std::uint64_t>(stats.steps) *
                                  static_cast<std::uint64_t>(length);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      SampleStream stream(
          key_, options_.first_sequence_index + static_cast<std::uint64_t>(sequence), counter);
      const double weight = static_cast<double>(weights_(sequence));
      for (Index position = 0; position < length; ++position) {
        const std::array<double, 4> uniforms{unit_uniform(stream), unit_uniform(stream),
                                             unit_uniform(stream), unit_uniform(stream)};
        const auto conditional = position_distribution(posterior_, vocabulary, position, sequence);
        const auto unconditional =
            position_distribution(posterior_, vocabulary, position, sequence + sequences);
        Token& token = tokens(position, sequence);
        Token next = token;
        if (to_data) {
          // q_j ∝ p_cond(j)^w · p_null(j)^(1−w) over the K data tokens.
          rates_.resize(vocabulary);
          for (Index candidate = 0; candidate < vocabulary; ++candidate) {
            rates_(candidate) = guided_rate(static_cast<double>(conditional(candidate)),
                                            static_cast<double>(unconditional(candidate)), weight);
          }
          require_rate_total(rates_.sum(), t, sequence, position, "guided posterior");
          next = categorical_index(rates_, uniforms[0]);
        } else {
          const double total = guided_position_rates(source_, position, token, conditional,
                                                     unconditional, weight, coefficients, rates_);
          // Σ R_w is 0 (no move) or must be finite and > 0 (a NaN is not 0 and throws too).
          if (total != 0) require_rate_total(total, t, sequence, position, "guided jump rate");
          // Jump when u < 1 − exp(−h·Σ R_w), to a token drawn in proportion to the rates.
          if (total > 0 && uniforms[1] < -std::expm1(-coefficients.step * total)) {
            next = categorical_index(rates_, uniforms[2]);
          }
        }
        if (next != token) ++stats.jumps;
        token = next;
      }
    }
    ++stats.steps;
  }

  // Throws flowmatch::numerical_error unless @p total is finite and > 0.
  static void require_rate_total(double total, Scalar t, Index sequence, Index position,
                                 const char* what) {
    if (std::isfinite(total) && total > 0) return;
    throw numerical_error("sample_discrete_guided: the " + std::string(what) + " of sequence " +
                              to_text(sequence) + " at position " + to_text(position) + " totals " +
                              to_text(total) + " at t = " + to_text(t) + " (finite and > 0 needed)",
                          static_cast<double>(t), sequence);
  }

  const D& denoiser_;
  const MixturePath<S>& path_;
  const DiscreteSource<Scalar>& source_;
  const ConstVectorRef<Scalar>& weights_;
  const DiscreteSamplerOptions<Scalar>& options_;
  std::uint64_t key_;
  LabelVector stacked_labels_;  // [y, null]
  TokenMatrix stacked_tokens_;  // [x_t, x_t]
  Matrix<Scalar> posterior_;    // [conditional, null] posteriors, (K·L)×2N
  Vector<double> rates_;        // the rates (or q) of one position
};

}  // namespace detail

/// The guided rates R_w of the file comment (without a corrector) for a batch: a (V·L)×N
/// matrix, V = source.states(), position-major blocks of V as in discrete/tokens.hpp; the entry
/// of each current token is minus the total of the others, so every block sums to zero.
/// @param path the mixture path (κ_t, κ̇_t).
/// @param source the source, for the vocabulary and the mask token.
/// @param t the N per-sequence times, each where κ_t < 1 (std::domain_error otherwise).
/// @param x_t the L×N current tokens, in [0, V).
/// @param conditional_posterior p(x₁ | x_t, y), (K·L)×N, each position a distribution.
/// @param null_posterior p(x₁ | x_t), (K·L)×N, each position a distribution.
/// @param weights the N guidance weights w, finite and ≥ 0.
/// @param tolerance on the sums of the posteriors' distributions.
/// @throws std::invalid_argument for bad tokens, shapes, posteriors or weights.
template <ConvexScheduler S>
Matrix<typename S::scalar_type> guided_rates(
    const MixturePath<S>& path, const DiscreteSource<typename S::scalar_type>& source,
    const ConstVectorRef<typename S::scalar_type>& t, const ConstTokenRef& x_t,
    const ConstMatrixRef<typename S::scalar_type>& conditional_posterior,
    const ConstMatrixRef<typename S::scalar_type>& null_posterior,
    const ConstVectorRef<typename S::scalar_type>& weights,
    double tolerance = detail::default_probability_tolerance<typename S::scalar_type>()) {
  using Scalar = typename S::scalar_type;
  const Index vocabulary = source.vocabulary();
  const Index states = source.states();
  detail::require_tokens("guided_rates: x_t", x_t, vocabulary, source.masked());
  detail::require_sequence_times("guided_rates", t, x_t.cols());
  detail::require_shape("guided_rates: conditional_posterior", conditional_posterior,
                        vocabulary * x_t.rows(), x_t.cols());
  detail::require_shape("guided_rates: null_posterior", null_posterior, vocabulary * x_t.rows(),
                        x_t.cols());
  detail::require_distributions("guided_rates", "conditional_posterior", conditional_posterior,
                                vocabulary, tolerance);
  detail::require_distributions("guided_rates", "null_posterior", null_posterior, vocabulary,
                                tolerance);
  detail::require_guidance_weights<Scalar>("guided_rates: weights", weights, x_t.cols());
  Matrix<Scalar> rates(states * x_t.rows(), x_t.cols());
  Vector<double> position_rates;
  for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
    JumpCoefficients coefficients;
    coefficients.kappa = static_cast<double>(path.kappa(t(sequence)));
    coefficients.jump_rate = static_cast<double>(path.jump_rate(t(sequence)));
    for (Index position = 0; position < x_t.rows(); ++position) {
      const Token current = x_t(position, sequence);
      const double total = detail::guided_position_rates(
          source, position, current,
          position_distribution(conditional_posterior, vocabulary, position, sequence),
          position_distribution(null_posterior, vocabulary, position, sequence),
          static_cast<double>(weights(sequence)), coefficients, position_rates);
      position_rates(current) = -total;
      position_distribution(rates, states, position, sequence) = position_rates.cast<Scalar>();
    }
  }
  return rates;
}

/// Samples token sequences with the guided discrete Euler method (see the file comment),
/// carrying @p x0 at times[0] along the grid, sequence n towards the label labels(n) with the
/// guidance weight weights(n).
/// @param denoiser the conditional posterior model, over the source's vocabulary K.
/// @param path the mixture path the denoiser was trained on.
/// @param source the source p₀.
/// @param x0 the L×N tokens at times[0], in [0, source.states()); not modified.
/// @param labels the N class labels, in [0, C) (C = denoiser.labels(); not the null label).
/// @param weights the N guidance weights w, finite and ≥ 0 (1: conditional, 0: unconditional).
/// @param times a strictly increasing grid inside [0, 1] with at least two entries.
/// @param options step size (required), corrector, sequence offset, trajectory.
/// @param generator any UniformRandomBitGenerator; one 64-bit key is drawn from it.
/// @throws std::invalid_argument for bad options, tokens, labels, weights, shapes, a vocabulary
///         mismatch, η(0) ≠ 0 or a denoiser output that is not a distribution;
///         std::domain_error for grid times outside [0, 1]; flowmatch::numerical_error for
///         non-finite rates or a guided posterior without mass.
template <ConvexScheduler S, ConditionalDenoiser<typename S::scalar_type> D,
          std::uniform_random_bit_generator Generator>
DiscreteSampleResult<typename S::scalar_type> sample_discrete_guided(
    const D& denoiser, const MixturePath<S>& path,
    const DiscreteSource<typename S::scalar_type>& source, const ConstTokenRef& x0,
    const ConstLabelRef& labels, const ConstVectorRef<typename S::scalar_type>& weights,
    std::span<const typename S::scalar_type> times,
    const DiscreteSamplerOptions<typename S::scalar_type>& options, Generator& generator) {
  using Scalar = typename S::scalar_type;
  detail::check_discrete_sampling("sample_discrete_guided", denoiser.vocabulary(), source, x0,
                                  times, options);
  detail::require_labels("sample_discrete_guided: labels", labels, x0.cols(), denoiser.labels(),
                         false);
  detail::require_guidance_weights<Scalar>("sample_discrete_guided: weights", weights, x0.cols());
  const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
  detail::GuidedEulerSampler<Scalar, S, D> sampler(denoiser, path, source, labels, weights, options,
                                                   key);
  return sampler.run(times, TokenMatrix(x0));
}

/// sample_discrete_guided from the source at t = 0 to the data at t = 1 (grid {0, 1}).
template <ConvexScheduler S, ConditionalDenoiser<typename S::scalar_type> D,
          std::uniform_random_bit_generator Generator>
DiscreteSampleResult<typename S::scalar_type> sample_discrete_guided(
    const D& denoiser, const MixturePath<S>& path,
    const DiscreteSource<typename S::scalar_type>& source, const ConstTokenRef& x0,
    const ConstLabelRef& labels, const ConstVectorRef<typename S::scalar_type>& weights,
    const DiscreteSamplerOptions<typename S::scalar_type>& options, Generator& generator) {
  using Scalar = typename S::scalar_type;
  const std::array<Scalar, 2> grid{Scalar(0), Scalar(1)};
  return sample_discrete_guided(denoiser, path, source, x0, labels, weights,
                                std::span<const Scalar>(grid), options, generator);
}

}  // namespace flowmatch
