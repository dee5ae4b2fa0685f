/// @file mlp_denoiser.hpp
/// @brief A probability denoiser built on the Mlp: one-hot tokens and the time in, a softmax
/// over the K data tokens at every position out.
///
/// For sequences of L tokens over K data tokens (and the mask token K of a masked source), the
/// denoiser is
///
///     input = one_hot(x_t)                 (K·L)×N
///     z     = Mlp(t, input)                (K·L)×N logits, the time through the Mlp's embedding
///     p(j | x_t; l) = exp(z_{lK+j}) / Σ_i exp(z_{lK+i})    (a softmax per position)
///
/// **Layouts.** The input and the logits have the layout of discrete/tokens.hpp: column n is
/// sequence n, rows l·K … l·K + K − 1 belong to position l (a C-order [N, L, K] array). The
/// one-hot block of a data token j is the unit vector e_j; the block of the mask token is zero.
///
/// **Why the mask token has no row of its own.** The Mlp's output has as many rows as its input
/// x (`dim`), and the posterior needs K·L rows, so the input has K·L rows too. A one-hot code of
/// the K + 1 states would take (K + 1)·L rows; coding the mask as the zero block loses nothing,
/// because exactly one state of K + 1 is present at each position: the first layer's
/// W·one_hot_{K+1}(x) + b equals W'·code_K(x) + b' with the columns W'_{l,j} = W_{l,j} − W_{l,K}
/// (token j, mask K, at position l) and b' = b + Σ_l W_{l,K}. The same network then serves the
/// uniform source (K states, a plain one-hot) and the masked one, without a conditioning input.
///
/// **Class labels.** A conditional denoiser (labels C >= 1; discrete/conditional_denoiser.hpp)
/// gives the body the one-hot code of a label y ∈ [0, C] as its condition input (C + 1 rows,
/// the last one for the null label C):
///
///     z = Mlp(t, one_hot(x_t), one_hot_{C+1}(y)),
///
/// and its plain call (a Denoiser's) is the call with the null label, the unconditional
/// posterior learnt by label dropout (discrete/training.hpp).
///
/// **Softmax.** Per position, z is shifted by its maximum m before the exponentials, so the
/// largest term is exp(0) = 1, nothing overflows and the sum is ≥ 1; all in the scalar type.
///
/// **Evaluation.** operator() evaluates the body with the calling thread's workspace
/// (Mlp::operator()), so concurrent const calls from several threads are safe; training records
/// the pass instead (Mlp::forward on encode()'s input, then Mlp::backward; discrete/training.hpp).
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/nn/activation.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/time_embedding.hpp"

namespace flowmatch {

/// The shape of an MlpDenoiser: the token layout and the Mlp body between input and logits.
struct MlpDenoiserConfig {
  Index vocabulary = 2;                      ///< K >= 1, the number of data tokens.
  Index length = 1;                          ///< L >= 1, the number of positions.
  bool masked = false;                       ///< whether x_t may hold the mask token K.
  std::vector<Index> hidden;                 ///< widths of the body's hidden layers.
  Activation activation = Activation::silu;  ///< the body's activation.
  TimeEmbedding time_embedding{};            ///< how t enters the body.
  /// C, the number of class labels; 0 for an unconditional denoiser. A conditional one reads
  /// labels in [0, C], C being the null label.
  Index labels = 0;

  /// The body's MlpConfig: dim = K·L (input and logits); cond_dim = C + 1 (the one-hot label)
  /// for a conditional denoiser, 0 otherwise.
  /// @throws std::invalid_argument if K < 1, L < 1 or C < 0.
  [[nodiscard]] MlpConfig body() const {
    detail::require_count("MlpDenoiserConfig: vocabulary", vocabulary, Index(1));
    detail::require_count("MlpDenoiserConfig: length", length, Index(1));
    detail::require_count("MlpDenoiserConfig: labels", labels, Index(0));
    return MlpConfig{vocabulary * length, labels > 0 ? labels + 1 : 0, hidden, activation,
                     time_embedding};
  }
};

namespace detail {

/// Replaces the logits z of one position (a vector expression) by softmax(z) and returns
/// log Σ_j exp(z_j) = m + log Σ_j exp(z_j − m), m = max_j z_j (see the file comment).
template <class Segment>
auto softmax_in_place(Segment&& values) {
  using Scalar = typename std::decay_t<Segment>::Scalar;
  const Scalar largest = values.maxCoeff();
  values = (values.array() - largest).exp().matrix();
  const Scalar total = values.sum();
  values /= total;
  return largest + std::log(total);
}

}  // namespace detail

/// A Denoiser (discrete/denoiser.hpp) made of a one-hot encoder, an Mlp body and a softmax per
/// position (see the file comment).
template <class Scalar = double>
class MlpDenoiser {
 public:
  using scalar_type = Scalar;

  /// A denoiser of shape @p config whose body has every weight and bias zero: every posterior
  /// is uniform over the K tokens.
  /// @throws std::invalid_argument for an invalid shape.
  explicit MlpDenoiser(const MlpDenoiserConfig& config)
      : MlpDenoiser(config.vocabulary, config.masked, Mlp<Scalar>(config.body())) {}

  /// A denoiser of shape @p config whose body is initialised as PyTorch's nn.Linear from
  /// @p generator (Mlp's initialising constructor).
  /// @throws std::invalid_argument for an invalid shape.
  template <std::uniform_random_bit_generator Generator>
  MlpDenoiser(const MlpDenoiserConfig& config, Generator& generator)
      : MlpDenoiser(config.vocabulary, config.masked, Mlp<Scalar>(config.body(), generator)) {}

  /// A denoiser over @p vocabulary = K data tokens around an existing @p body (for instance one
  /// read from a file): its dim must be K·L for some L >= 1, its cond_dim 0 (unconditional) or
  /// C + 1 >= 2 (C labels and the null label) and its parameters finite.
  /// @throws std::invalid_argument otherwise.
  MlpDenoiser(Index vocabulary, bool masked, Mlp<Scalar> body)
      : vocabulary_(vocabulary), masked_(masked), network_(std::move(body)) {
    detail::require_count("MlpDenoiser: vocabulary", vocabulary, Index(1));
    if (network_.dim() % vocabulary != 0) {
      detail::reject_argument("MlpDenoiser: body dim", detail::is_value(network_.dim()),
                              "a multiple of the vocabulary " + detail::to_text(vocabulary) +
                                  " (K·L: one block of K logits per position)");
    }
    if (network_.cond_dim() == 1) {
      detail::reject_argument("MlpDenoiser: body cond_dim", detail::is_value(network_.cond_dim()),
                              "0 (unconditional) or C + 1 >= 2 (the one-hot code of C >= 1 "
                              "labels and the null label)");
    }
    detail::require_finite("MlpDenoiser: body parameters", network_.parameters());
    length_ = network_.dim() / vocabulary;
  }

  /// K, the number of data tokens.
  [[nodiscard]] Index vocabulary() const { return vocabulary_; }
  /// L, the number of positions of a sequence.
  [[nodiscard]] Index length() const { return length_; }
  /// Whether x_t may hold the mask token K.
  [[nodiscard]] bool masked() const { return masked_; }
  /// C, the number of class labels (0 for an unconditional denoiser).
  [[nodiscard]] Index labels() const {
    return network_.cond_dim() > 0 ? network_.cond_dim() - 1 : 0;
  }
  /// The null label C of a conditional denoiser: its posterior is the unconditional one.
  [[nodiscard]] Index null_label() const { return labels(); }
  /// Whether the denoiser reads class labels (C >= 1).
  [[nodiscard]] bool conditional() const { return network_.cond_dim() > 0; }
  /// The states of a token of x_t: K + 1 if masked, K otherwise.
  [[nodiscard]] Index states() const { return masked_ ? vocabulary_ + 1 : vocabulary_; }

  /// The body: input one_hot(x_t), output the logits.
  [[nodiscard]] const Mlp<Scalar>& network() const { return network_; }
  /// The body, writable (its parameters() are what an optimiser updates in place).
  [[nodiscard]] Mlp<Scalar>& network() { return network_; }

  /// Writes the body's input for the L×N tokens @p x_t into @p input ((K·L)×N): e_j in the
  /// block of a data token j, zeros in the block of the mask token (see the file comment).
  /// @throws std::invalid_argument for tokens outside [0, states()), a length other than L or
  ///         an input of another shape.
  void encode(const ConstTokenRef& x_t, MatrixRef<Scalar> input) const {
    detail::require_tokens("MlpDenoiser::encode: x_t", x_t, vocabulary_, masked_, length_);
    detail::require_shape("MlpDenoiser::encode: input", input, vocabulary_ * length_, x_t.cols());
    write_one_hot(x_t, input);
  }

  /// Writes the body's condition input for the N @p labels (in [0, C]) into @p condition
  /// ((C + 1)×N): the unit vector e_y in column n for label y = labels(n).
  /// @throws std::invalid_argument if the denoiser is unconditional, for a label outside
  ///         [0, C] or a condition of another shape.
  void encode_labels(const ConstLabelRef& labels, MatrixRef<Scalar> condition) const {
    require_conditional("MlpDenoiser::encode_labels");
    detail::require_labels("MlpDenoiser::encode_labels: labels", labels, labels.size(),
                           this->labels(), true);
    detail::require_shape("MlpDenoiser::encode_labels: condition", condition, network_.cond_dim(),
                          labels.size());
    condition.setZero();
    for (Index sequence = 0; sequence < labels.size(); ++sequence) {
      condition(labels(sequence), sequence) = Scalar(1);
    }
  }

  /// Writes p(x₁ | x_t) at the per-sequence times @p t (N, in [0, 1]) for the L×N tokens
  /// @p x_t into @p posterior ((K·L)×N, the layout of discrete/tokens.hpp).
  /// For a conditional denoiser this is the posterior of the null label, p(x₁ | x_t).
  /// @throws std::invalid_argument for bad tokens or shapes; std::domain_error for a time
  ///         outside [0, 1]; flowmatch::numerical_error if a logit is not finite.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  MatrixRef<Scalar> posterior) const {
    if (conditional()) {
      (*this)(t, x_t, LabelVector::Constant(x_t.cols(), null_label()), posterior);
      return;
    }
    check_call("MlpDenoiser", t, x_t, posterior);
    // The input, the logits and the posterior share the posterior's storage: the Mlp reads its
    // input before writing its output.
    write_one_hot(x_t, posterior);
    network_(t, posterior, posterior);
    normalise(t, posterior);
  }

  /// Writes p(x₁ | x_t, y) of a conditional denoiser for the N labels @p labels (y in [0, C],
  /// the null label C giving p(x₁ | x_t)); otherwise as the plain call.
  /// @throws std::invalid_argument if the denoiser is unconditional, for labels outside [0, C]
  ///         or not one per sequence; otherwise as the plain call.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  const ConstLabelRef& labels, MatrixRef<Scalar> posterior) const {
    require_conditional("MlpDenoiser (with labels)");
    check_call("MlpDenoiser", t, x_t, posterior);
    detail::require_labels("MlpDenoiser: labels", labels, x_t.cols(), this->labels(), true);
    Matrix<Scalar> condition(network_.cond_dim(), x_t.cols());
    encode_labels(labels, condition);
    write_one_hot(x_t, posterior);
    network_(t, posterior, condition, posterior);
    normalise(t, posterior);
  }

 private:
  void require_conditional(std::string_view function) const {
    if (!conditional()) {
      detail::reject_argument(std::string(function) + ": denoiser", "is unconditional (C = 0)",
                              "a denoiser with class labels (MlpDenoiserConfig::labels >= 1)");
    }
  }

  void check_call(std::string_view function, const ConstVectorRef<Scalar>& t,
                  const ConstTokenRef& x_t, const MatrixRef<Scalar>& posterior) const {
    detail::require_tokens(std::string(function) + ": x_t", x_t, vocabulary_, masked_, length_);
    detail::require_sequence_times(function, t, x_t.cols());
    detail::require_shape(std::string(function) + ": posterior", posterior, vocabulary_ * length_,
                          x_t.cols());
  }

  // Replaces the logits in @p posterior by a softmax per position; throws on a non-finite one.
  void normalise(const ConstVectorRef<Scalar>& t, MatrixRef<Scalar> posterior) const {
    for (Index sequence = 0; sequence < posterior.cols(); ++sequence) {
      if (!posterior.col(sequence).allFinite()) {
        throw numerical_error("MlpDenoiser: the logits of column " + detail::to_text(sequence) +
                                  " at t = " + detail::to_text(t(sequence)) + " are not finite",
                              static_cast<double>(t(sequence)), sequence);
      }
      for (Index position = 0; position < length_; ++position) {
        detail::softmax_in_place(position_distribution(posterior, vocabulary_, position, sequence));
      }
    }
  }

  void write_one_hot(const ConstTokenRef& x_t, MatrixRef<Scalar> input) const {
    input.setZero();
    for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
      for (Index position = 0; position < length_; ++position) {
        const Token token = x_t(position, sequence);
        if (token < vocabulary_) input(position * vocabulary_ + token, sequence) = Scalar(1);
      }
    }
  }

  Index vocabulary_;
  Index length_ = 0;
  bool masked_;
  Mlp<Scalar> network_;
};

}  // namespace flowmatch
