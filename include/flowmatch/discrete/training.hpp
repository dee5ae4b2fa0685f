/// @file training.hpp
/// @brief Training an MlpDenoiser: the gradients of the discrete losses with respect to the
/// logits, and a trainer that takes Adam steps on the body's parameters.
///
/// **Gradient through the softmax.** With p = softmax(z) at one position and a per-position
/// loss ℓ(p), ∂p_i/∂z_j = p_i·([i = j] − p_j), so
///
///     ∂ℓ/∂z_j = p_j·(∂ℓ/∂p_j − Σ_i p_i·∂ℓ/∂p_i).
///
/// For a token with current value c = x_t, data value y = x₁ and rate r = κ̇_t/(1 − κ_t), the
/// losses of discrete/loss.hpp give, with [·] the indicator:
///
///   - generalized KL, c = y:  ℓ = r·(1 − p_y),          ∂ℓ/∂p_j = −r·[j = y],
///                             ∂ℓ/∂z_j = r·p_y·(p_j − [j = y]);
///   - generalized KL, c ≠ y:  ℓ = −r·(p_c + log p_y),   ∂ℓ/∂p_j = −r·([j = c] + [j = y]/p_y),
///                             Σ_i p_i·∂ℓ/∂p_i = −r·(p_c + 1),
///                             ∂ℓ/∂z_j = r·(p_j·(1 + p_c) − [j = y] − p_c·[j = c]),
///     where p_c = 0 (and [j = c] = 0) for the mask token;
///   - cross-entropy:          ℓ = −log p_y,             ∂ℓ/∂z_j = p_j − [j = y].
///
/// log p_y is z_y − log Σ_i exp(z_i), from the shifted sum of the softmax, so it stays finite
/// where p_y underflows; 1 − p_y (in the loss and in the entry y of each gradient) is summed over
/// the other tokens, so it keeps its digits as p_y → 1. The mean over the L·N tokens divides every
/// gradient by L·N. From ∂L/∂z the body's backward pass (Mlp::backward) gives ∂L/∂θ.
///
/// **Training step** (DiscreteTrainer::step; every draw from the trainer's generator, in this
/// order):
///   1. x₁ = data(B, generator), L×B tokens in [0, K);
///   2. t ~ U[0, time_limit), one per sequence (times that round to 1 are moved just below it);
///   3. x₀ ~ p₀ (DiscreteSource::sample) and x_t ~ p_t(· | x₀, x₁) (MixturePath::sample);
///   4. z = Mlp(t, one_hot(x_t)), the loss and ∂L/∂z above, ∂L/∂θ by Mlp::backward, clipped to a
///      global norm if set;
///   5. one Adam step on the body's parameters with the learning rate of the schedule, and one
///      update of their exponential moving average.
/// The run is a deterministic function of the seed.
///
/// **Class labels.** A conditional denoiser (MlpDenoiserConfig::labels = C ≥ 1) trains on
/// labelled data: step 1 draws the sequences with their labels y in [0, C] (C marks a sequence
/// without a label), and after step 3 each label is replaced by the null label C with
/// probability p_uncond = options.label_dropout (one Bernoulli draw per sequence, drawn last;
/// drop_conditions of train/objective.hpp on the one-hot label code). The network then learns
/// p(x₁ | x_t, y) and, through the dropped labels, the unconditional p(x₁ | x_t) that
/// classifier-free guidance needs (discrete/guidance.hpp). In step 4 the body reads the label's
/// one-hot code as its condition.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string_view>
#include <utility>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/mlp_denoiser.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"
#include "flowmatch/scheduler/scheduler.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/ema.hpp"
#include "flowmatch/train/lr_schedule.hpp"
#include "flowmatch/train/objective.hpp"
#include "flowmatch/train/parameters.hpp"
#include "flowmatch/train/time_sampler.hpp"
#include "flowmatch/train/training_checkpoint.hpp"

namespace flowmatch {

namespace detail {

/// Checks x₁ (L×N in [0, K)), the (K·L)×N finite logits and the gradient of their shape, named
/// "<function>: ...".
template <class Scalar>
void require_logit_arguments(std::string_view function, const ConstTokenRef& x1,
                             const ConstMatrixRef<Scalar>& logits,
                             const MatrixRef<Scalar>& gradient, Index vocabulary) {
  require_tokens(argument_name(function, "x1"), x1, vocabulary, false);
  if (logits.rows() != vocabulary * x1.rows() || logits.cols() != x1.cols()) {
    require_shape(argument_name(function, "logits"), logits, vocabulary * x1.rows(), x1.cols());
  }
  if (!logits.allFinite()) require_finite(argument_name(function, "logits"), logits);
  if (gradient.rows() != logits.rows() || gradient.cols() != logits.cols()) {
    require_shape(argument_name(function, "gradient"), gradient, logits.rows(), logits.cols());
  }
}

/// Σ_{j ≠ excluded} p_j of one position's probabilities: 1 − p_excluded without the
/// cancellation as p_excluded → 1.
template <class Segment>
auto mass_except(const Segment& probabilities, Token excluded) {
  return probabilities.head(excluded).sum() +
         probabilities.tail(probabilities.size() - excluded - 1).sum();
}

}  // namespace detail

/// The mean generalized KL loss (discrete/loss.hpp) of the posterior softmax(@p logits), and
/// its gradient with respect to the logits (see the file comment) written into @p gradient.
/// @param path the mixture path (the rate κ̇/(1 − κ)).
/// @param source the source, for the vocabulary K and the mask token.
/// @param t the N per-sequence times, each where κ_t < 1 (std::domain_error otherwise).
/// @param x_t the L×N tokens on the path, in [0, source.states()).
/// @param x1 the L×N data tokens, in [0, K).
/// @param logits the (K·L)×N logits, finite (layout of discrete/tokens.hpp).
/// @param gradient (K·L)×N, overwritten with ∂L/∂z; must not alias the logits.
/// @returns the mean over the L·N tokens.
/// @throws std::invalid_argument for bad tokens or shapes or non-finite logits.
template <ConvexScheduler S>
typename S::scalar_type generalized_kl_loss_with_gradient(
    const MixturePath<S>& path, const DiscreteSource<typename S::scalar_type>& source,
    const ConstVectorRef<typename S::scalar_type>& t, const ConstTokenRef& x_t,
    const ConstTokenRef& x1, const ConstMatrixRef<typename S::scalar_type>& logits,
    MatrixRef<typename S::scalar_type> gradient) {
  using Scalar = typename S::scalar_type;
  const Index vocabulary = source.vocabulary();
  detail::require_tokens("generalized_kl_loss_with_gradient: x_t", x_t, vocabulary,
                         source.masked());
  detail::require_shape("generalized_kl_loss_with_gradient: x1", x1, x_t.rows(), x_t.cols());
  detail::require_logit_arguments<Scalar>("generalized_kl_loss_with_gradient", x1, logits, gradient,
                                          vocabulary);
  detail::require_sequence_times("generalized_kl_loss_with_gradient", t, x_t.cols());
  const Scalar tokens = Scalar(x_t.size());
  double total = 0;
  gradient = logits;
  for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
    const Scalar rate = path.jump_rate(t(sequence));
    const Scalar weight = rate / tokens;  // r/(L·N)
    for (Index position = 0; position < x_t.rows(); ++position) {
      auto probabilities = position_distribution(gradient, vocabulary, position, sequence);
      const Scalar log_normaliser = detail::softmax_in_place(probabilities);
      const Token current = x_t(position, sequence);
      const Token target = x1(position, sequence);
      const Scalar p_target = probabilities(target);
      const Scalar p_others = detail::mass_except(probabilities, target);  // 1 − p_y
      if (current == target) {
        // ℓ = r·(1 − p_y); ∂ℓ/∂z_j = r·p_y·(p_j − [j = y]), the entry y being −r·p_y·(1 − p_y).
        total += static_cast<double>(rate * p_others);
        probabilities(target) = -p_others;
        probabilities *= weight * p_target;
        continue;
      }
      // ℓ = −r·(p_c + log p_y); ∂ℓ/∂z_j = r·(p_j·(1 + p_c) − [j = y] − p_c·[j = c]), whose
      // entries y and c are r·(p_y·p_c − (1 − p_y)) and r·p_c².
      const bool data_token = current < vocabulary;
      const Scalar p_current = data_token ? probabilities(current) : Scalar(0);
      const Scalar log_p_target = logits(position * vocabulary + target, sequence) - log_normaliser;
      total += static_cast<double>(-rate * (p_current + log_p_target));
      probabilities *= Scalar(1) + p_current;
      probabilities(target) = p_target * p_current - p_others;
      if (data_token) probabilities(current) = p_current * p_current;
      probabilities *= weight;
    }
  }
  return static_cast<Scalar>(total / static_cast<double>(x_t.size()));
}

/// The mean cross-entropy −log p(x₁) of the posterior softmax(@p logits) at the L×N data tokens
/// @p x1 (in [0, vocabulary)), and its gradient p_j − [j = x₁] (divided by L·N) with respect to
/// the logits, written into @p gradient ((K·L)×N, not aliasing the logits).
/// @throws std::invalid_argument for bad tokens or shapes or non-finite logits.
template <class Scalar>
Scalar cross_entropy_loss_with_gradient(const ConstTokenRef& x1,
                                        const ConstMatrixRef<Scalar>& logits, Index vocabulary,
                                        MatrixRef<Scalar> gradient) {
  detail::require_count("cross_entropy_loss_with_gradient: vocabulary", vocabulary, Index(1));
  detail::require_logit_arguments<Scalar>("cross_entropy_loss_with_gradient", x1, logits, gradient,
                                          vocabulary);
  const Scalar tokens = Scalar(x1.size());
  double total = 0;
  gradient = logits;
  for (Index sequence = 0; sequence < x1.cols(); ++sequence) {
    for (Index position = 0; position < x1.rows(); ++position) {
      auto probabilities = position_distribution(gradient, vocabulary, position, sequence);
      const Scalar log_normaliser = detail::softmax_in_place(probabilities);
      const Token target = x1(position, sequence);
      // −log p_y = log Σ exp(z) − z_y.
      total +=
          static_cast<double>(log_normaliser - logits(position * vocabulary + target, sequence));
      probabilities(target) = -detail::mass_except(probabilities, target);  // p_y − 1
      probabilities /= tokens;
    }
  }
  return static_cast<Scalar>(total / static_cast<double>(x1.size()));
}

/// The loss a DiscreteTrainer minimises.
enum class DiscreteLoss {
  generalized_kl,  ///< the generalized KL of the mixture path (an ELBO term).
  cross_entropy,   ///< −log p(x₁) at every position.
};

/// Settings of a DiscreteTrainer.
template <class Scalar = double>
struct DiscreteTrainerOptions {
  Index batch_size = 256;      ///< B >= 1 sequences per step.
  AdamOptions<Scalar> adam{};  ///< Adam's hyperparameters.
  /// η(s) for the 0-based step index s.
  std::function<Scalar(std::int64_t)> learning_rate = ConstantSchedule<Scalar>(Scalar(1e-3));
  DiscreteLoss loss = DiscreteLoss::generalized_kl;  ///< what is minimised.
  /// Times are drawn from U[0, time_limit), time_limit in (0, 1]; below 1 it keeps the
  /// generalized KL's weight κ̇/(1 − κ) bounded.
  Scalar time_limit = Scalar(1);
  std::optional<Scalar> max_gradient_norm;  ///< clip ‖∂L/∂θ‖ to this (> 0) if set.
  Scalar ema_decay = Scalar(0.999);         ///< decay of the moving average, in [0, 1].
  /// p_uncond in [0, 1]: the probability that a label is replaced by the null label (conditional
  /// denoisers only; see the file comment).
  Scalar label_dropout = Scalar(0);
};

/// Trains an MlpDenoiser on a mixture path with Adam (see the file comment).
template <ConvexScheduler S, std::uniform_random_bit_generator Generator = std::mt19937_64>
class DiscreteTrainer {
 public:
  using Scalar = typename S::scalar_type;
  /// Draws an L×B batch of data sequences: data(B, generator).
  using DataSampler = std::function<TokenMatrix(Index, Generator&)>;
  /// Draws an L×B batch of data sequences and their B labels in [0, C]: data(B, generator).
  using LabelledDataSampler = std::function<LabelledTokens(Index, Generator&)>;

  /// A trainer of the unconditional @p denoiser on @p path from @p source towards the sequences
  /// drawn by @p data, with its generator seeded by @p seed.
  /// @throws std::invalid_argument if the denoiser is conditional, its vocabulary, states or
  ///         length disagree with the source's, its parameters are not finite, data is empty or
  ///         an option is out of range.
  DiscreteTrainer(MlpDenoiser<Scalar> denoiser, MixturePath<S> path, DiscreteSource<Scalar> source,
                  DataSampler data, DiscreteTrainerOptions<Scalar> options, std::uint64_t seed)
      : DiscreteTrainer(std::move(denoiser), std::move(path), std::move(source), std::move(data),
                        LabelledDataSampler(), std::move(options), seed) {}

  /// A trainer of the conditional @p denoiser (C ≥ 1 labels) on @p path from @p source towards
  /// the labelled sequences drawn by @p data, with label dropout (see the file comment).
  /// @throws std::invalid_argument as the unconditional constructor, if the denoiser is
  ///         unconditional or options.label_dropout lies outside [0, 1].
  DiscreteTrainer(MlpDenoiser<Scalar> denoiser, MixturePath<S> path, DiscreteSource<Scalar> source,
                  LabelledDataSampler data, DiscreteTrainerOptions<Scalar> options,
                  std::uint64_t seed)
      : DiscreteTrainer(std::move(denoiser), std::move(path), std::move(source), DataSampler(),
                        std::move(data), std::move(options), seed) {}

 private:
  DiscreteTrainer(MlpDenoiser<Scalar> denoiser, MixturePath<S> path, DiscreteSource<Scalar> source,
                  DataSampler data, LabelledDataSampler labelled_data,
                  DiscreteTrainerOptions<Scalar> options, std::uint64_t seed)
      : denoiser_(std::move(denoiser)),
        path_(std::move(path)),
        source_(std::move(source)),
        data_(std::move(data)),
        labelled_data_(std::move(labelled_data)),
        options_(std::move(options)),
        generator_(seed),
        adam_(denoiser_.network().parameters().size(), options_.adam),
        ema_(denoiser_.network().parameters(), options_.ema_decay),
        gradient_(denoiser_.network().zero_gradient()) {
    if (denoiser_.vocabulary() != source_.vocabulary()) {
      detail::reject_argument("DiscreteTrainer: denoiser vocabulary",
                              detail::is_value(denoiser_.vocabulary()),
                              detail::to_text(source_.vocabulary()) + " (the source's vocabulary)");
    }
    if (denoiser_.states() != source_.states()) {
      detail::reject_argument("DiscreteTrainer: denoiser states",
                              detail::is_value(denoiser_.states()),
                              detail::to_text(source_.states()) +
                                  " (the source's; masked denoiser for a masked source)");
    }
    source_.check_length("DiscreteTrainer: denoiser length", denoiser_.length());
    if (!data_ && !labelled_data_) {
      detail::reject_argument("DiscreteTrainer: data", "is empty", "a sampler");
    }
    if (denoiser_.conditional() != static_cast<bool>(labelled_data_)) {
      detail::reject_argument("DiscreteTrainer: denoiser",
                              denoiser_.conditional() ? "is conditional" : "is unconditional",
                              denoiser_.conditional() ? "labelled data for a conditional denoiser"
                                                      : "plain data for an unconditional denoiser");
    }
    detail::require_probability("DiscreteTrainer: options.label_dropout", options_.label_dropout);
    detail::require_count<Index>("DiscreteTrainer: options.batch_size", options_.batch_size, 1);
    if (!options_.learning_rate) {
      detail::reject_argument("DiscreteTrainer: options.learning_rate", "is empty",
                              "a learning-rate schedule");
    }
    if (!(options_.time_limit > Scalar(0) && options_.time_limit <= Scalar(1))) {
      detail::reject_argument("DiscreteTrainer: options.time_limit",
                              detail::is_value(options_.time_limit), "in (0, 1]");
    }
    if (options_.max_gradient_norm) {
      detail::require_positive("DiscreteTrainer: options.max_gradient_norm",
                               *options_.max_gradient_norm);
    }
    const Index rows = denoiser_.vocabulary() * denoiser_.length();
    times_.resize(options_.batch_size);
    input_.resize(rows, options_.batch_size);
    logits_.resize(rows, options_.batch_size);
    logit_gradient_.resize(rows, options_.batch_size);
    if (denoiser_.conditional()) {
      condition_.resize(denoiser_.network().cond_dim(), options_.batch_size);
      null_condition_ =
          Vector<Scalar>::Unit(denoiser_.network().cond_dim(), denoiser_.null_label());
    }
  }

 public:
  /// Takes one training step (see the file comment) and returns its loss, the mean over the
  /// batch's tokens at the parameters before the update.
  /// @throws std::invalid_argument if the data batch is not L×B with tokens in [0, K);
  ///         flowmatch::numerical_error if a logit is not finite.
  Scalar step() {
    const Index batch_size = options_.batch_size;
    const Index length = denoiser_.length();
    const Index vocabulary = denoiser_.vocabulary();
    LabelledTokens drawn;
    if (labelled_data_) {
      drawn = labelled_data_(batch_size, generator_);
      detail::require_labels("DiscreteTrainer::step: data labels", drawn.labels, batch_size,
                             denoiser_.labels(), true);
    } else {
      drawn.tokens = data_(batch_size, generator_);
    }
    const TokenMatrix& x1 = drawn.tokens;
    detail::require_tokens("DiscreteTrainer::step: data batch", x1, vocabulary, false, length);
    detail::require_shape("DiscreteTrainer::step: data batch", x1, length, batch_size);
    sample_uniform_times_into<Scalar>(times_, generator_);
    const Scalar below_one = std::nextafter(Scalar(1), Scalar(0));
    times_ = (times_ * options_.time_limit).cwiseMin(below_one);
    const TokenMatrix x0 = source_.sample(length, batch_size, generator_);
    const TokenMatrix x_t = path_.sample(x0, x1, times_, generator_);
    denoiser_.encode(x_t, input_);
    const Mlp<Scalar>& network = denoiser_.network();
    if (denoiser_.conditional()) {
      denoiser_.encode_labels(drawn.labels, condition_);
      drop_conditions<Scalar>(condition_, options_.label_dropout, null_condition_, generator_);
      network.forward(workspace_, times_, input_, condition_, logits_);
    } else {
      network.forward(workspace_, times_, input_, logits_);
    }
    const Index bad_column = detail::first_nonfinite_index(logits_);
    if (bad_column >= 0) {
      throw numerical_error(
          "DiscreteTrainer::step: the logits of column " + detail::to_text(bad_column) +
              " at t = " + detail::to_text(times_(bad_column)) + " are not finite",
          static_cast<double>(times_(bad_column)), bad_column);
    }
    const Scalar loss =
        options_.loss == DiscreteLoss::generalized_kl
            ? generalized_kl_loss_with_gradient(path_, source_, times_, x_t, x1, logits_,
                                                logit_gradient_)
            : cross_entropy_loss_with_gradient<Scalar>(x1, logits_, vocabulary, logit_gradient_);
    network.backward(workspace_, logit_gradient_, gradient_);
    Vector<Scalar>* update = &gradient_.flat();
    if (options_.max_gradient_norm) {
      clipped_gradient_ = gradient_.flat();  // gradient() stays the gradient before clipping
      clip_by_global_norm(clipped_gradient_, *options_.max_gradient_norm);
      update = &clipped_gradient_;
    }
    adam_.step(denoiser_.network().parameters(), *update, options_.learning_rate(step_));
    ema_.update(denoiser_.network().parameters());
    ++step_;
    return loss;
  }

  /// The denoiser being trained.
  [[nodiscard]] const MlpDenoiser<Scalar>& denoiser() const { return denoiser_; }
  /// The denoiser with the moving-average parameters.
  [[nodiscard]] MlpDenoiser<Scalar> ema_denoiser() const {
    MlpDenoiser<Scalar> averaged = denoiser_;
    averaged.network().parameters() = ema_.average();
    return averaged;
  }
  /// The number of steps taken.
  [[nodiscard]] std::int64_t step_count() const { return step_; }
  /// ∂L/∂θ of the last step, before clipping, at the parameters before its update (zero before
  /// the first step).
  [[nodiscard]] const MlpGradient<Scalar>& gradient() const { return gradient_; }

  /// The full state (the body's weights, Adam's state, the moving average, the step count and
  /// the generator), for save_checkpoint (train/checkpoint.hpp).
  [[nodiscard]] TrainingCheckpoint<Scalar> checkpoint() const {
    return detail::take_training_checkpoint(denoiser_.network(), adam_, ema_, step_, generator_);
  }

  /// Restores a state taken by checkpoint() (possibly through a file) of a run with a body of
  /// the same shape; the path, source, data sampler and options stay those of this trainer, so
  /// the run continues bit for bit as the one that took the checkpoint.
  /// @throws std::invalid_argument if the body's shape differs, a state has the wrong size or
  ///         the generator state does not parse; nothing is changed then.
  void restore(const TrainingCheckpoint<Scalar>& checkpoint) {
    detail::restore_training_checkpoint("DiscreteTrainer", checkpoint, denoiser_.network(), adam_,
                                        ema_, step_, generator_);
  }

 private:
  MlpDenoiser<Scalar> denoiser_;
  MixturePath<S> path_;
  DiscreteSource<Scalar> source_;
  DataSampler data_;                   // for an unconditional denoiser
  LabelledDataSampler labelled_data_;  // for a conditional one
  DiscreteTrainerOptions<Scalar> options_;
  Generator generator_;
  Adam<Scalar> adam_;
  ExponentialMovingAverage<Scalar> ema_;
  MlpGradient<Scalar> gradient_;
  Vector<Scalar> clipped_gradient_;
  MlpWorkspace<Scalar> workspace_;
  Vector<Scalar> times_;           // t of the batch's sequences
  Matrix<Scalar> input_;           // one_hot(x_t), (K·L)×B
  Matrix<Scalar> logits_;          // z, (K·L)×B
  Matrix<Scalar> logit_gradient_;  // ∂L/∂z, (K·L)×B
  Matrix<Scalar> condition_;       // the one-hot labels after dropout, (C + 1)×B
  Vector<Scalar> null_condition_;  // e_C, the code of the null label
  std::int64_t step_ = 0;
};

}  // namespace flowmatch
