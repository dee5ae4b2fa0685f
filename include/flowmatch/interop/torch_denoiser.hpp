/// @file torch_denoiser.hpp
/// @brief TorchScript modules as denoisers of discrete flow matching: TorchScriptDenoiser and
/// ConditionalTorchScriptDenoiser (the optional LibTorch component, CMake target
/// flowmatch::torch).
///
/// **Convention.** A module saved with `torch.jit.script` or `torch.jit.trace` whose `forward`
/// takes (x, t) and returns logits:
///
///   - x: int64 tokens [N, L], each in [0, K) or, with a masked source, the mask token K;
///   - t: [N], the time of every sequence, of the denoiser's dtype;
///   - c (ConditionalTorchScriptDenoiser only, forward(x, t, c)): int64 labels [N] in [0, C],
///     the null label C asking for the unconditional posterior;
///   - output: logits [N, L, K] of the denoiser's dtype (float32 for TorchScriptDenoiser<float>,
///     float64 for <double>); the posterior p(x₁ | x_t) at each position is their softmax over
///     the last axis, taken in C++ in Scalar with the largest logit subtracted first.
///
/// Logits rather than probabilities: a network's last layer gives them, a softmax in the module
/// would round twice, and the training loss of PyTorch (cross entropy) takes them too. The
/// matching PyTorch side:
///
///     class Denoiser(torch.nn.Module):
///         def __init__(self, K: int, L: int, width: int = 64):
///             super().__init__()
///             self.embedding = torch.nn.Embedding(K + 1, width)    # K + 1: the mask token
///             self.head = torch.nn.Linear(width + 1, K)
///
///         def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
///             h = self.embedding(x)                                 # [N, L, width]
///             time = t.view(-1, 1, 1).expand(-1, x.shape[1], 1)
///             return self.head(torch.cat([h, time], dim=2))        # [N, L, K] logits
///
///     torch.jit.script(Denoiser(K, L).eval()).save("denoiser.pt")
///
/// and in C++ `flowmatch::TorchScriptDenoiser<float> denoiser("denoiser.pt", K, L);`, a
/// Denoiser for sample_discrete, discrete_elbo and the other discrete algorithms.
///
/// **Batches.** An L×N token batch is the memory of an int64 [N, L] row-major tensor, and the
/// module receives it without a copy (torch::from_blob); the [N, L, K] logits are the memory of
/// the (K·L)×N posterior, into which they are copied once and normalised in place.
///
/// **Errors.** As TorchScriptField (interop/torch.hpp): io::io_error and io::format_error for
/// the file; torch_model_error for a forward that is not (x, t), a floating-point parameter or
/// buffer of another dtype, an output that is not a tensor of dtype Scalar and shape [N, L, K]
/// (checked on load with a probe batch of one sequence of token 0 at t = 0, and on every call),
/// and any error LibTorch raises inside the module (e.g. a token beyond its embedding);
/// numerical_error, with the time and the sequence, for non-finite logits.
///
/// **Modes and threads.** Every call runs under torch::InferenceMode; LibTorch's own thread pool
/// is set with set_torch_threads. The denoiser keeps no buffers: it may be called from several
/// threads at once if the module may.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/mlp_denoiser.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/interop/torch.hpp"

namespace flowmatch {

namespace detail {

/// The loaded module and the convention around it: the common part of TorchScriptDenoiser and
/// ConditionalTorchScriptDenoiser (@p classes >= 0 for the latter: forward(x, t, c) with int64
/// labels c in [0, classes], classes being the null label).
template <class Scalar>
class TorchDenoiserModel {
 public:
  TorchDenoiserModel(const char* owner, const std::string& path, Index vocabulary, Index length,
                     Index classes)
      : owner_(owner), path_(path), vocabulary_(vocabulary), length_(length), classes_(classes) {
    require_count<Index>(name("vocabulary"), vocabulary_, 1);
    require_count<Index>(name("length"), length_, 1);
    if (classes_ >= 0) require_count<Index>(name("labels"), classes_, 1);
    module_ = load_torchscript_module(path_);
    require_forward_signature(owner_, path_, module_, classes_ >= 0 ? 3 : 2,
                              classes_ >= 0 ? "(x, t, c)" : "(x, t)");
    require_module_dtype<Scalar>(owner_, path_, module_);
    const TokenMatrix x = TokenMatrix::Zero(length_, 1);
    const Vector<Scalar> t = Vector<Scalar>::Zero(1);
    const LabelVector labels = LabelVector::Zero(1);
    Matrix<Scalar> posterior(vocabulary_ * length_, 1);
    evaluate(t, x, classes_ >= 0 ? &labels : nullptr, posterior);
  }

  [[nodiscard]] Index vocabulary() const { return vocabulary_; }
  [[nodiscard]] Index length() const { return length_; }
  [[nodiscard]] Index classes() const { return classes_; }
  [[nodiscard]] const torch::jit::Module& module() const { return module_; }

  /// forward(x_t, t[, labels]) under inference mode, checked, and a softmax per position into
  /// @p posterior.
  void evaluate(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                const LabelVector* labels, MatrixRef<Scalar> posterior) const {
    if (x_t.rows() != length_) {
      reject_argument(name("x_t"), "has " + to_text(x_t.rows()) + " rows",
                      to_text(length_) + " (the sequence length L)");
    }
    const Index sequences = x_t.cols();
    require_shape(name("t"), t, sequences, 1);
    require_shape(name("posterior"), posterior, vocabulary_ * length_, sequences);
    if (labels) require_labels(name("labels"), *labels, sequences, classes_, true);
    if (sequences == 0) return;
    c10::InferenceMode inference;
    // The module only reads its inputs; from_blob needs a non-const pointer nonetheless.
    std::vector<torch::IValue> inputs;
    inputs.reserve(3);
    inputs.emplace_back(torch::from_blob(const_cast<Token*>(x_t.data()), {sequences, length_},
                                         {x_t.outerStride(), 1},
                                         torch::TensorOptions().dtype(torch::kInt64)));
    inputs.emplace_back(
        torch::from_blob(const_cast<Scalar*>(t.data()), {sequences}, {t.innerStride()},
                         torch::TensorOptions().dtype(torch_scalar_type<Scalar>())));
    if (labels) {
      inputs.emplace_back(torch::from_blob(const_cast<Token*>(labels->data()), {sequences},
                                           torch::TensorOptions().dtype(torch::kInt64)));
    }
    const std::vector<std::int64_t> input_shape{sequences, length_};
    const torch::Tensor logits = run_forward<Scalar>(
        owner_, path_, module_, std::move(inputs), "x of shape " + tensor_shape_text(input_shape));
    const std::vector<std::int64_t> expected{sequences, length_, vocabulary_};
    if (!logits.sizes().equals(expected)) {
      reject_argument<torch_model_error>(name("output of module '" + path_ + "'"),
                                         "has shape " + tensor_shape_text(logits.sizes()),
                                         tensor_shape_text(expected) + " (logits [N, L, K])");
    }
    const torch::Tensor contiguous = logits.contiguous();
    posterior = Eigen::Map<const Matrix<Scalar>>(contiguous.data_ptr<Scalar>(),
                                                 vocabulary_ * length_, sequences);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      if (!posterior.col(sequence).allFinite()) {
        throw numerical_error(owner_ + ": module '" + path_ +
                                  "' gave non-finite logits for sequence " + to_text(sequence) +
                                  " at t = " + to_text(t(sequence)),
                              static_cast<double>(t(sequence)), sequence);
      }
      for (Index position = 0; position < length_; ++position) {
        softmax_in_place(position_distribution(posterior, vocabulary_, position, sequence));
      }
    }
  }

 private:
  [[nodiscard]] std::string name(std::string_view argument) const {
    return argument_name(owner_, argument);
  }

  std::string owner_;
  std::string path_;
  Index vocabulary_ = 0;
  Index length_ = 0;
  Index classes_ = -1;
  torch::jit::Module module_;
};

}  // namespace detail

/// A TorchScript module `forward(x, t)` returning logits [N, L, K] as a Denoiser over Scalar
/// (float or double): the posterior is their softmax per position (see the file comment).
///
///     flowmatch::TorchScriptDenoiser<float> denoiser("denoiser.pt", 4, 3);   // K = 4, L = 3
///     auto result = flowmatch::sample_discrete(denoiser, path, source, x0, options, generator);
template <class Scalar>
class TorchScriptDenoiser {
 public:
  /// Loads the module saved at @p path and checks it on one probe sequence.
  /// @param vocabulary K, the number of data tokens (the last extent of the logits, >= 1).
  /// @param length L, the number of positions of a sequence (>= 1).
  /// @throws io::io_error if the file cannot be read; io::format_error if it is not a
  ///         TorchScript archive; torch_model_error if forward is not (x, t), a floating-point
  ///         parameter or buffer is not of dtype Scalar, or the probe's output is not a tensor
  ///         of dtype Scalar and shape [1, L, K]; std::invalid_argument for K or L < 1.
  TorchScriptDenoiser(const std::string& path, Index vocabulary, Index length)
      : model_("TorchScriptDenoiser", path, vocabulary, length, -1) {}

  /// K, the number of data tokens.
  [[nodiscard]] Index vocabulary() const { return model_.vocabulary(); }
  /// L, the number of positions of a sequence.
  [[nodiscard]] Index length() const { return model_.length(); }
  /// The loaded module (a shared handle).
  [[nodiscard]] const torch::jit::Module& module() const { return model_.module(); }

  /// The posterior p(x₁ | x_t) of every position ((K·L)×N, see discrete/tokens.hpp) into
  /// @p posterior: one forward pass under inference mode, then a softmax per position.
  /// @param t the N per-sequence times.
  /// @param x_t the L×N tokens (what the module's embedding accepts; K is the mask token).
  /// @throws std::invalid_argument for shapes that do not match; torch_model_error and
  ///         numerical_error as described in the file comment.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  MatrixRef<Scalar> posterior) const {
    model_.evaluate(t, x_t, nullptr, posterior);
  }

 private:
  detail::TorchDenoiserModel<Scalar> model_;
};

/// A TorchScript module `forward(x, t, c)` with int64 labels c [N] in [0, C] (C the null
/// label) returning logits [N, L, K] as a ConditionalDenoiser (discrete/conditional_denoiser.hpp)
/// over Scalar; the plain call is the null label's posterior.
///
///     flowmatch::ConditionalTorchScriptDenoiser<float> denoiser("cond.pt", 4, 3, 10);  // C = 10
template <class Scalar>
class ConditionalTorchScriptDenoiser {
 public:
  /// Loads the module saved at @p path and checks it on one probe sequence with label 0.
  /// @param vocabulary K, the number of data tokens (>= 1).
  /// @param length L, the number of positions of a sequence (>= 1).
  /// @param labels C, the number of class labels (>= 1); the module takes labels in [0, C].
  /// @throws as TorchScriptDenoiser, with forward expected to be (x, t, c).
  ConditionalTorchScriptDenoiser(const std::string& path, Index vocabulary, Index length,
                                 Index labels)
      : model_("ConditionalTorchScriptDenoiser", path, vocabulary, length, labels) {}

  /// K, the number of data tokens.
  [[nodiscard]] Index vocabulary() const { return model_.vocabulary(); }
  /// L, the number of positions of a sequence.
  [[nodiscard]] Index length() const { return model_.length(); }
  /// C, the number of class labels.
  [[nodiscard]] Index labels() const { return model_.classes(); }
  /// The null label C.
  [[nodiscard]] Index null_label() const { return model_.classes(); }
  /// The loaded module (a shared handle).
  [[nodiscard]] const torch::jit::Module& module() const { return model_.module(); }

  /// p(x₁ | x_t, y) into @p posterior for the label y = @p labels(n) of each sequence (the
  /// null label C for p(x₁ | x_t)).
  /// @throws std::invalid_argument for shapes that do not match or a label outside [0, C];
  ///         torch_model_error and numerical_error as TorchScriptDenoiser.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  const ConstLabelRef& labels, MatrixRef<Scalar> posterior) const {
    const LabelVector copy = labels;  // contiguous for the module
    model_.evaluate(t, x_t, &copy, posterior);
  }

  /// The unconditional posterior p(x₁ | x_t): the null label for every sequence.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  MatrixRef<Scalar> posterior) const {
    const LabelVector null = LabelVector::Constant(x_t.cols(), model_.classes());
    model_.evaluate(t, x_t, &null, posterior);
  }

 private:
  detail::TorchDenoiserModel<Scalar> model_;
};

}  // namespace flowmatch
