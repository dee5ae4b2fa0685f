/// @file sampler.hpp
/// @brief Sampling a token sequence with the chain of a mixture path: the discrete Euler method.
///
/// Over a step from t to t + h, each token of each sequence, independently:
///
///   1. draws x₁ from the denoiser's posterior p(· | x_t) at its position;
///   2. forms the rates to the other tokens j ≠ x_t (the current token's own rate is zeroed):
///
///          λ_j = a·δ(j = x₁) + b·[(1 − κ)·p₀(j) + κ·δ(j = x₁)],
///          a = κ̇/(1 − κ),   b = η(t)·κ̇/(κ·(1 − κ)),
///
///      the conditional rate towards x₁ plus an optional divergence-free (corrector) term that
///      keeps the marginals of the path and needs the source p₀ and η(0) = 0 (b = 0 wherever
///      η(t) = 0, in particular at t = 0 where κ = 0);
///   3. jumps with probability 1 − exp(−h·Σ_j λ_j) to a token drawn in proportion to λ_j
///      (jump_token).
///
/// The step that ends at t = 1 (and any step starting where κ_t = 1) sets x = x₁ instead: there
/// the rate κ̇/(1 − κ) is infinite and every token has reached the data.
///
/// Grid: the state is returned at every time of the given grid (SolveResult-style: times,
/// trajectory, final tokens), each grid interval being split into ceil(length/step_size) equal
/// steps; the grid times are reached by counting steps, never by comparing times.
///
/// Randomness: the generator passed in gives one 64-bit key; sequence n (column
/// n − first_sequence_index) reads four words per position per step from its own counter-based
/// stream of that key and n (detail/sample_noise.hpp), at the counter 4·(s·L + l) for step s and
/// position l, whether it uses them or not. A sequence's tokens therefore do not depend on the
/// batch it is sampled in, on how the batch is split into chunks, or on the thread count.
/// Categorical draws are in double precision whatever the scalar type of the denoiser.
///
/// Work: O(K) per token to draw x₁ from the posterior (reading it), O(1) for the jump (the
/// uniform and masked sources), O(log K) for a given source.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/time_grid.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// Settings of sample_discrete.
template <class Scalar = double>
struct DiscreteSamplerOptions {
  /// Required: each grid interval of length L is split into ceil(L/h) equal steps.
  std::optional<Scalar> step_size;
  /// The corrector schedule η(t) ≥ 0 of the divergence-free term; empty for none. Must have
  /// η(0) = 0 (checked on entry).
  std::function<Scalar(Scalar)> eta;
  /// The index of column 0 among all sequences: column j draws the randomness of sequence
  /// first_sequence_index + j, so that shards of a batch draw what the whole batch would.
  std::uint64_t first_sequence_index = 0;
  /// Most steps over the whole grid; a grid that needs more throws std::invalid_argument.
  std::size_t max_steps = 100000;
  /// Tolerance on the sum of each distribution the denoiser writes.
  double posterior_tolerance = detail::default_probability_tolerance<Scalar>();
  /// Keep the tokens at every grid time in DiscreteSampleResult::trajectory.
  bool return_trajectory = false;
};

/// Counts of a discrete sampling run.
struct DiscreteSamplerStats {
  std::size_t steps = 0;        ///< Euler steps taken (each one evaluation of the denoiser).
  std::size_t evaluations = 0;  ///< Evaluations of the denoiser on the whole batch.
  std::size_t jumps = 0;        ///< Tokens changed, over all steps and sequences.
};

/// The outcome of sample_discrete over a grid t_0 < … < t_K.
template <class Scalar>
struct DiscreteSampleResult {
  /// The tokens at the last grid time (L×N).
  TokenMatrix tokens;
  /// With return_trajectory: the tokens at every grid time, trajectory[k] at times[k]
  /// (trajectory[0] is the initial state); otherwise empty.
  std::vector<TokenMatrix> trajectory;
  /// The grid t_0, …, t_K.
  std::vector<Scalar> times;
  /// Steps, evaluations and jumps.
  DiscreteSamplerStats stats;
};

/// The coefficients of one Euler step at time t shared by every token (see the file comment).
struct JumpCoefficients {
  double kappa = 0;      ///< κ_t.
  double jump_rate = 0;  ///< a = κ̇/(1 − κ), the conditional rate towards x₁.
  double corrector = 0;  ///< b = η(t)·κ̇/(κ·(1 − κ)), 0 without a corrector.
  double step = 0;       ///< h, the step length.
};

/// The token after one Euler step of one position (step 3 of the file comment), in O(1) work
/// (O(log K) for a given source).
///
/// Before the current token c is zeroed, the rates are a mixture of two distributions:
///
///     λ_j = (a + b·κ)·δ(j = x₁) + b·(1 − κ)·p₀(j),
///
/// so without c they total Λ = w₁ + w₀ with w₁ = (a + b·κ)·[x₁ ≠ c] (all on the token x₁) and
/// w₀ = b·(1 − κ)·(1 − p₀(c)) (spread as p₀ restricted to j ≠ c). A jump happens with
/// probability 1 − exp(−h·Λ); its target is x₁ with probability w₁/Λ and otherwise a draw of
/// p₀(j)/(1 − p₀(c)), j ≠ c. The resulting probability of each j ≠ c is
/// (1 − e^{−hΛ})·λ_j/Λ — the draw in proportion to the K rates — without forming them (x₁'s share
/// b(1 − κ)p₀(x₁) of the second part is drawn by the p₀ branch).
///
/// @param source the source p₀.
/// @param position the position (for a given source).
/// @param current the current token c.
/// @param target the posterior draw x₁.
/// @param coefficients κ, a, b and h of the step.
/// @param uniforms three uniform variates in [0, 1): jump, branch, p₀ draw.
template <class Scalar>
Token jump_token(const DiscreteSource<Scalar>& source, Index position, Token current, Token target,
                 const JumpCoefficients& coefficients, const std::array<double, 3>& uniforms) {
  const double to_target =
      target != current ? coefficients.jump_rate + coefficients.corrector * coefficients.kappa
                        : 0.0;
  const double to_source = coefficients.corrector > 0
                               ? coefficients.corrector * (1.0 - coefficients.kappa) *
                                     (1.0 - source.probability(current, position))
                               : 0.0;
  const double total = to_target + to_source;
  // Jump when u < 1 − exp(−hΛ), i.e. u < −expm1(−hΛ).
  if (!(total > 0) || !(uniforms[0] < -std::expm1(-coefficients.step * total))) return current;
  if (uniforms[1] * total < to_target) return target;
  return source.draw_excluding(position, current, uniforms[2]);
}

namespace detail {

/// The uniform words each token reads from its sequence's stream at every step, used or not.
inline constexpr std::uint64_t discrete_words_per_token = 4;

/// κ, a = κ̇/(1 − κ), b = η(t)·κ̇/(κ(1 − κ)) and h of a step from @p t of length @p h, at a time
/// where κ < 1 (1 − κ = σ); throws std::invalid_argument for a negative or non-finite η(t) and
/// flowmatch::numerical_error for non-finite rates, named "<function>: ...".
template <class Scalar, class S>
JumpCoefficients jump_coefficients(std::string_view function, const MixturePath<S>& path,
                                   const DiscreteSamplerOptions<Scalar>& options, Scalar t,
                                   Scalar h) {
  JumpCoefficients coefficients;
  const double kappa = static_cast<double>(path.kappa(t));
  const double remaining = static_cast<double>(path.remaining(t));
  coefficients.kappa = kappa;
  coefficients.step = static_cast<double>(h);
  const double d_kappa = static_cast<double>(path.d_kappa(t));
  coefficients.jump_rate = d_kappa / remaining;
  if (options.eta) {
    const Scalar eta = options.eta(t);
    if (!(eta >= Scalar(0)) || !std::isfinite(eta)) {
      reject_argument(std::string(function) + ": options.eta(" + to_text(t) + ")", is_value(eta),
                      "finite and >= 0");
    }
    if (eta > Scalar(0)) {
      coefficients.corrector = static_cast<double>(eta) * d_kappa / (kappa * remaining);
    }
  }
  if (!std::isfinite(coefficients.jump_rate) || !std::isfinite(coefficients.corrector)) {
    throw numerical_error(std::string(function) + ": the jump rates are not finite at t = " +
                              to_text(t) + " (kappa = " + to_text(kappa) + ")",
                          static_cast<double>(t));
  }
  return coefficients;
}

/// Carries @p tokens (at times[0]) over the grid @p times, each interval split into
/// ceil(length/step_size) equal steps, calling take_step(t, h, final_step, tokens, stats) for
/// each (final_step: the last step of a grid that ends at t = 1); keeps the trajectory if asked.
template <class Scalar, class TakeStep>
DiscreteSampleResult<Scalar> walk_discrete_grid(std::span<const Scalar> times,
                                                const DiscreteSamplerOptions<Scalar>& options,
                                                TokenMatrix tokens, TakeStep&& take_step) {
  DiscreteSampleResult<Scalar> result;
  result.times.assign(times.begin(), times.end());
  if (options.return_trajectory) result.trajectory.push_back(tokens);
  const Scalar step_size = *options.step_size;
  for (std::size_t interval = 0; interval + 1 < times.size(); ++interval) {
    const Scalar begin = times[interval];
    const Scalar length = times[interval + 1] - begin;
    const std::size_t steps = fixed_step_count(length, step_size);
    const bool reaches_data = interval + 2 == times.size() && times.back() == Scalar(1);
    for (std::size_t step = 0; step < steps; ++step) {
      const Scalar t = begin + length * static_cast<Scalar>(step) / static_cast<Scalar>(steps);
      const Scalar h = length / static_cast<Scalar>(steps);
      take_step(t, h, reaches_data && step + 1 == steps, tokens, result.stats);
    }
    if (options.return_trajectory) result.trajectory.push_back(tokens);
  }
  result.tokens = std::move(tokens);
  return result;
}

/// The checks of a discrete sampler's arguments (see sample_discrete), named
/// "<function>: ...": the options, the denoiser's vocabulary against the source's, the grid,
/// the initial tokens and the step count.
template <class Scalar>
void check_discrete_sampling(std::string_view function, Index denoiser_vocabulary,
                             const DiscreteSource<Scalar>& source, const ConstTokenRef& x0,
                             std::span<const Scalar> times,
                             const DiscreteSamplerOptions<Scalar>& options) {
  const std::string name(function);
  if (!options.step_size) {
    reject_argument("DiscreteSamplerOptions: step_size", "is not set",
                    "a step size > 0 (the discrete Euler method takes fixed steps)");
  }
  require_positive("DiscreteSamplerOptions: step_size", *options.step_size);
  require_positive("DiscreteSamplerOptions: posterior_tolerance", options.posterior_tolerance);
  if (options.eta && options.eta(Scalar(0)) != Scalar(0)) {
    reject_argument("DiscreteSamplerOptions: eta(0)", is_value(options.eta(Scalar(0))),
                    "0 (the corrector's kappa'/kappa diverges at t = 0)");
  }
  if (denoiser_vocabulary != source.vocabulary()) {
    reject_argument(name + ": denoiser vocabulary", is_value(denoiser_vocabulary),
                    to_text(source.vocabulary()) + " (the source's vocabulary)");
  }
  validate_grid(name.c_str(), times);
  if (times.back() < times.front()) {
    reject_argument(
        name + ": times",
        "run from " + to_text(times.front()) + " down to " + to_text(times.back()),
        "increasing times (sampling runs from the source at t = 0 towards data at t = 1)");
  }
  require_tokens(name + ": x0", x0, source.vocabulary(), source.masked(),
                 source.length().value_or(-1));
  std::size_t total_steps = 0;
  for (std::size_t interval = 0; interval + 1 < times.size(); ++interval) {
    total_steps += fixed_step_count(times[interval + 1] - times[interval], *options.step_size);
  }
  if (total_steps > options.max_steps) {
    reject_argument(name + ": times",
                    "need " + to_text(total_steps) + " steps of the given step_size",
                    "at most max_steps = " + to_text(options.max_steps));
  }
}

/// The discrete Euler sampler of one call of sample_discrete.
template <class Scalar, class S, class D>
class DiscreteEulerSampler {
 public:
  /// Refers to the arguments of sample_discrete (checked there); @p key keys the streams.
  DiscreteEulerSampler(const D& denoiser, const MixturePath<S>& path,
                       const DiscreteSource<Scalar>& source, std::span<const Scalar> times,
                       const DiscreteSamplerOptions<Scalar>& options, std::uint64_t key)
      : denoiser_(denoiser),
        path_(path),
        source_(source),
        times_(times),
        options_(options),
        key_(key) {}

  /// Carries @p tokens (at times[0]) over the grid.
  DiscreteSampleResult<Scalar> run(TokenMatrix tokens) {
    return walk_discrete_grid(
        times_, options_, std::move(tokens),
        [this](Scalar t, Scalar h, bool final_step, TokenMatrix& state,
               DiscreteSamplerStats& stats) { take_step(t, h, final_step, state, stats); });
  }

 private:
  // One step from t to t + h of every token (to x₁ when @p final_step), counting into @p stats.
  void take_step(Scalar t, Scalar h, bool final_step, TokenMatrix& tokens,
                 DiscreteSamplerStats& stats) {
    const Index length = tokens.rows();
    const Index vocabulary = source_.vocabulary();
    const Vector<Scalar> times = Vector<Scalar>::Constant(tokens.cols(), t);
    evaluate_posterior<Scalar>("sample_discrete", denoiser_, times, tokens, posterior_,
                               options_.posterior_tolerance);
    ++stats.evaluations;
    const bool to_data = final_step || !(path_.remaining(t) > Scalar(0));
    JumpCoefficients coefficients;
    if (!to_data) coefficients = jump_coefficients("sample_discrete", path_, options_, t, h);
    const std::uint64_t counter = discrete_words_per_token *
                                  static_cast<std::uint64_t>(stats.steps) *
                                  static_cast<std::uint64_t>(length);
    for (Index sequence = 0; sequence < tokens.cols(); ++sequence) {
      SampleStream stream(
          key_, options_.first_sequence_index + static_cast<std::uint64_t>(sequence), counter);
      for (Index position = 0; position < length; ++position) {
        const std::array<double, 4> uniforms{unit_uniform(stream), unit_uniform(stream),
                                             unit_uniform(stream), unit_uniform(stream)};
        const Token target = categorical_index(
            position_distribution(posterior_, vocabulary, position, sequence), uniforms[0]);
        Token& token = tokens(position, sequence);
        const Token next = to_data ? target
                                   : jump_token(source_, position, token, target, coefficients,
                                                {uniforms[1], uniforms[2], uniforms[3]});
        if (next != token) ++stats.jumps;
        token = next;
      }
    }
    ++stats.steps;
  }

  const D& denoiser_;
  const MixturePath<S>& path_;
  const DiscreteSource<Scalar>& source_;
  std::span<const Scalar> times_;
  const DiscreteSamplerOptions<Scalar>& options_;
  std::uint64_t key_;
  Matrix<Scalar> posterior_;
};

}  // namespace detail

/// Samples token sequences with the discrete Euler method (see the file comment), carrying
/// @p x0 at times[0] along the grid.
/// @param denoiser the posterior model, over the source's vocabulary K.
/// @param path the mixture path the denoiser was trained on.
/// @param source the source p₀ (its vocabulary, mask token and, for the corrector, p₀).
/// @param x0 the L×N tokens at times[0], in [0, source.states()); not modified.
/// @param times a strictly increasing grid inside [0, 1] with at least two entries.
/// @param options step size (required), corrector, sequence offset, trajectory.
/// @param generator any UniformRandomBitGenerator; one 64-bit key is drawn from it.
/// @throws std::invalid_argument for bad options, tokens, shapes, a vocabulary mismatch, η(0) ≠ 0
///         or a denoiser output that is not a distribution; std::domain_error for grid times
///         outside [0, 1]; flowmatch::numerical_error for non-finite jump rates.
template <ConvexScheduler S, Denoiser<typename S::scalar_type> D,
          std::uniform_random_bit_generator Generator>
DiscreteSampleResult<typename S::scalar_type> sample_discrete(
    const D& denoiser, const MixturePath<S>& path,
    const DiscreteSource<typename S::scalar_type>& source, const ConstTokenRef& x0,
    std::span<const typename S::scalar_type> times,
    const DiscreteSamplerOptions<typename S::scalar_type>& options, Generator& generator) {
  using Scalar = typename S::scalar_type;
  detail::check_discrete_sampling("sample_discrete", denoiser.vocabulary(), source, x0, times,
                                  options);
  const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
  detail::DiscreteEulerSampler<Scalar, S, D> sampler(denoiser, path, source, times, options, key);
  return sampler.run(TokenMatrix(x0));
}

/// sample_discrete from the source at t = 0 to the data at t = 1 (grid {0, 1}).
template <ConvexScheduler S, Denoiser<typename S::scalar_type> D,
          std::uniform_random_bit_generator Generator>
DiscreteSampleResult<typename S::scalar_type> sample_discrete(
    const D& denoiser, const MixturePath<S>& path,
    const DiscreteSource<typename S::scalar_type>& source, const ConstTokenRef& x0,
    const DiscreteSamplerOptions<typename S::scalar_type>& options, Generator& generator) {
  using Scalar = typename S::scalar_type;
  const std::array<Scalar, 2> grid{Scalar(0), Scalar(1)};
  return sample_discrete(denoiser, path, source, x0, std::span<const Scalar>(grid), options,
                         generator);
}

}  // namespace flowmatch
