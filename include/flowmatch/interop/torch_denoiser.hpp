/// @file torch_denoiser.hpp
/// @brief A TorchScript module as a Denoiser of discrete flow matching: TorchScriptDenoiser
/// (the optional LibTorch component, CMake target flowmatch::torch).
///
/// **Convention.** A module saved with `torch.jit.script` or `torch.jit.trace` whose `forward`
/// takes (x, t) and returns logits:
///
///   - x: int64 tokens [N, L], each in [0, K) or, with a masked source, the mask token K;
///   - t: [N], the time of every sequence, of the denoiser's dtype;
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
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/mlp_denoiser.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/interop/torch.hpp"

namespace flowmatch {

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
      : path_(path), vocabulary_(vocabulary), length_(length) {
    detail::require_count<Index>(name("vocabulary"), vocabulary_, 1);
    detail::require_count<Index>(name("length"), length_, 1);
    module_ = detail::load_torchscript_module(path_);
    detail::require_forward_signature(owner, path_, module_, 2, "(x, t)");
    detail::require_module_dtype<Scalar>(owner, path_, module_);
    const TokenMatrix x = TokenMatrix::Zero(length_, 1);
    const Vector<Scalar> t = Vector<Scalar>::Zero(1);
    Matrix<Scalar> posterior(vocabulary_ * length_, 1);
    (*this)(t, x, posterior);
  }

  /// K, the number of data tokens.
  [[nodiscard]] Index vocabulary() const { return vocabulary_; }
  /// L, the number of positions of a sequence.
  [[nodiscard]] Index length() const { return length_; }
  /// The loaded module (a shared handle).
  [[nodiscard]] const torch::jit::Module& module() const { return module_; }

  /// The posterior p(x₁ | x_t) of every position ((K·L)×N, see discrete/tokens.hpp) into
  /// @p posterior: one forward pass under inference mode, then a softmax per position.
  /// @param t the N per-sequence times.
  /// @param x_t the L×N tokens (what the module's embedding accepts; K is the mask token).
  /// @throws std::invalid_argument for shapes that do not match; torch_model_error and
  ///         numerical_error as described in the file comment.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  MatrixRef<Scalar> posterior) const {
    if (x_t.rows() != length_) {
      detail::reject_argument(name("x_t"), "has " + detail::to_text(x_t.rows()) + " rows",
                              detail::to_text(length_) + " (the sequence length L)");
    }
    const Index sequences = x_t.cols();
    detail::require_shape(name("t"), t, sequences, 1);
    detail::require_shape(name("posterior"), posterior, vocabulary_ * length_, sequences);
    if (sequences == 0) return;
    c10::InferenceMode inference;
    // The module only reads its inputs; from_blob needs a non-const pointer nonetheless.
    std::vector<torch::IValue> inputs;
    inputs.reserve(2);
    inputs.emplace_back(torch::from_blob(const_cast<Token*>(x_t.data()), {sequences, length_},
                                         {x_t.outerStride(), 1},
                                         torch::TensorOptions().dtype(torch::kInt64)));
    inputs.emplace_back(
        torch::from_blob(const_cast<Scalar*>(t.data()), {sequences}, {t.innerStride()},
                         torch::TensorOptions().dtype(detail::torch_scalar_type<Scalar>())));
    const std::vector<std::int64_t> input_shape{sequences, length_};
    const torch::Tensor logits =
        detail::run_forward<Scalar>(owner, path_, module_, std::move(inputs),
                                    "x of shape " + detail::tensor_shape_text(input_shape));
    const std::vector<std::int64_t> expected{sequences, length_, vocabulary_};
    if (!logits.sizes().equals(expected)) {
      detail::reject_argument<torch_model_error>(
          name("output of module '" + path_ + "'"),
          "has shape " + detail::tensor_shape_text(logits.sizes()),
          detail::tensor_shape_text(expected) + " (logits [N, L, K])");
    }
    const torch::Tensor contiguous = logits.contiguous();
    posterior = Eigen::Map<const Matrix<Scalar>>(contiguous.data_ptr<Scalar>(),
                                                 vocabulary_ * length_, sequences);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      if (!posterior.col(sequence).allFinite()) {
        throw numerical_error(
            std::string(owner) + ": module '" + path_ + "' gave non-finite logits for sequence " +
                detail::to_text(sequence) + " at t = " + detail::to_text(t(sequence)),
            static_cast<double>(t(sequence)), sequence);
      }
      for (Index position = 0; position < length_; ++position) {
        detail::softmax_in_place(position_distribution(posterior, vocabulary_, position, sequence));
      }
    }
  }

 private:
  static constexpr const char* owner = "TorchScriptDenoiser";

  [[nodiscard]] static std::string name(std::string_view argument) {
    return detail::argument_name(owner, argument);
  }

  std::string path_;
  Index vocabulary_ = 0;
  Index length_ = 0;
  torch::jit::Module module_;
};

}  // namespace flowmatch
