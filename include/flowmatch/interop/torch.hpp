/// @file torch.hpp
/// @brief TorchScript models as velocity fields: TorchScriptField and
/// ConditionalTorchScriptField (the optional LibTorch component, CMake target flowmatch::torch).
///
/// **Convention.** A module saved with `torch.jit.script` or `torch.jit.trace` whose `forward`
/// takes (x, t) or (x, t, c) and returns the velocity in the shape of x:
///
///   - x: [N, *sample_shape], the batch (sample_shape given by the user, e.g. {1, 8, 8});
///   - t: [N], the time of every sample, from noise (t = 0) to data (t = 1);
///   - c: int64 labels [N] (TorchCondition::labels()) or float conditions [N, k]
///     (TorchCondition::vectors(k));
///   - dtype: the module's floating-point parameters and buffers, and its output, are the
///     field's Scalar (float32 for TorchScriptField<float>, float64 for <double>); a mismatch
///     throws torch_model_error, nothing is converted silently.
///
/// The matching PyTorch side:
///
///     class Velocity(torch.nn.Module):
///         def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
///             ...                            # x: [N, 1, 8, 8], t: [N]
///             return v                       # [N, 1, 8, 8]
///
///     torch.jit.script(Velocity().eval()).save("model.pt")   # or torch.jit.trace(model, (x, t))
///
/// and in C++ `flowmatch::TorchScriptField<float> field("model.pt", {1, 8, 8});`, a VelocityField
/// for every algorithm of the library (sampling, encoding, log-likelihoods, scores).
///
/// **Batches.** A flowmatch batch is d×N column-major with d = ∏ sample_shape: column n is sample
/// n flattened in PyTorch's row-major order, so the batch's memory is an [N, d] row-major tensor.
/// The module receives it without a copy (torch::from_blob on the Eigen data, viewed as
/// [N, *sample_shape]); its result is copied once into the caller's output.
///
/// **Derivatives** come from LibTorch's reverse-mode autograd; the module must treat the rows of
/// its batch independently (a network in eval mode does; the field calls `eval()` on load):
///
///   - vjp: (∂u/∂x)ᵀ·w, one forward and one backward pass;
///   - jvp: (∂u/∂x)·v by the double-vjp identity J v = ∇_w ⟨Jᵀ w, v⟩ (the vjp at any w, here 0,
///     is linear in w; differentiating it again gives J v): one forward, one backward and one
///     double-backward pass. LibTorch 1.13's forward-mode AD is a beta interface without
///     formulas for every operator a scripted module may call, so it is not used;
///   - exact divergence ∇·u = Σ_i e_iᵀ (∂u/∂x) e_i: the batch is repeated k times, and one
///     backward pass with the cotangents e_i, …, e_{i+k−1} on the k copies gives rows e_iᵀ J
///     of every sample; the diagonal entries summed are the trace. The copies take one forward
///     pass, and the d directions go through its graph in ⌈d/k⌉ backward passes of k·N rows,
///     with k·N at most TorchScriptOptions::max_pass_rows (k ≥ 1): in all, the work of k
///     forward and about d backward passes over the batch, so at most d + 1 vector-Jacobian
///     products. velocity_divergence takes the velocity from the same forward pass;
///   - gradient of the divergence ∇_x(∇·u): the divergence pass above with the autograd graph
///     kept, then one more backward pass (double backward);
///   - velocity_vjp_divergence_gradient: one extra copy of the batch with the cotangent w in the
///     same pass.
///
/// Every member of the field protocol (field/capabilities.hpp) is offered: the plain ones by
/// TorchScriptField, the conditional ones (c after x) by ConditionalTorchScriptField, which
/// classifier-free guidance (guidance/classifier_free.hpp) turns into a plain field. With
/// labels, a condition matrix is 1×N and holds the label of every sample as a whole number; the
/// null condition of guidance is then a dedicated label index K, the label the model was trained
/// with for "no condition": GuidanceOptions::null_condition = Vector<Scalar>::Constant(1, K).
///
/// **Modes and threads.** The velocity runs under torch::InferenceMode; the derivatives enable
/// autograd for their own passes only. LibTorch computes with its own intra-op thread pool
/// (default: one thread per core), independent of the library's ThreadPool: set it with
/// set_torch_threads(n) (at::set_num_threads; the command-line tool's `--threads` does so for
/// a TorchScript model).
///
/// **Errors.** A file that cannot be read throws io::io_error; one that is not a TorchScript
/// archive io::format_error. A module whose forward signature, parameter dtype, output type,
/// output dtype or output shape does not match the convention throws torch_model_error (also
/// for any error LibTorch raises inside the module), checked on load with a probe batch and
/// on every call. A non-finite velocity or derivative throws numerical_error with the time and
/// the first bad sample.
///
/// **Concurrency.** A field may be called from several threads at once only if the module may;
/// the field keeps no buffers of its own.
///
/// The denoisers of discrete flow matching (TorchScriptDenoiser, logits [N, L, K] from int64
/// tokens) are in interop/torch_denoiser.hpp and share the loading and the checks above.
#pragma once

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/io/io_error.hpp"

namespace flowmatch {

/// A TorchScript module does not follow the convention of TorchScriptField (signature, dtype,
/// output type or shape), or LibTorch raised an error inside it.
class torch_model_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// How a conditional module receives its conditions (the third argument of forward).
struct TorchCondition {
  /// The tensor type of c.
  enum class Kind {
    labels,   ///< int64 labels [N]; the condition matrix is 1×N, whole numbers.
    vectors,  ///< float conditions [N, k] of the field's dtype; the condition matrix is k×N.
  };
  Kind kind = Kind::labels;
  /// k, the rows of the condition matrix (1 for labels).
  Index dim = 1;

  /// Integer labels: c is an int64 tensor [N].
  static TorchCondition labels() { return {Kind::labels, 1}; }
  /// Float conditions of @p k entries: c is a tensor [N, k] of the field's dtype.
  static TorchCondition vectors(Index k) { return {Kind::vectors, k}; }
};

/// Settings of a TorchScript field.
struct TorchScriptOptions {
  /// The most rows (copies of the batch × samples) of one derivative pass: the exact divergence
  /// and its gradient split the d basis directions into chunks of max(1, max_pass_rows / N)
  /// directions, which bounds the memory of the autograd graph (> 0).
  ///
  /// The default keeps a pass's tensors small enough for the C library's heap: glibc maps a
  /// block above 32 MiB afresh at every allocation, and its pages are faulted in and zeroed at
  /// every pass. With 8192 rows, the activations of a convolutional network of 32 channels on
  /// 8×8 images are 64 MiB each, and the exact divergence of d = 64 at N = 256 cost about 140
  /// forward-and-backward passes of the batch; with 1024 rows (8 MiB), fewer than d + 1.
  Index max_pass_rows = 1024;
};

/// Sets the number of threads LibTorch uses inside an operator (at::set_num_threads; by
/// default one per core). It is LibTorch's own pool, separate from flowmatch's ThreadPool.
/// @throws std::invalid_argument if @p threads < 1.
inline void set_torch_threads(int threads) {
  detail::require_count<int>("set_torch_threads: threads", threads, 1);
  at::set_num_threads(threads);
}

/// The number of threads LibTorch uses inside an operator.
inline int torch_threads() {
  return at::get_num_threads();
}

/// Makes the C library's allocator keep freed memory for reuse rather than return it to the
/// system, for the whole process: with glibc, `mallopt(M_MMAP_THRESHOLD, 32 MiB)` (blocks up to
/// 32 MiB come from the heap, not from fresh mappings) and `mallopt(M_TRIM_THRESHOLD, 1 GiB)`
/// (up to 1 GiB of free memory stays with the heap). LibTorch on the CPU allocates every tensor
/// of a pass from malloc and frees them all at its end; by default glibc hands that memory back
/// and the next pass faults the pages in and zeroes them again, which costs an exact divergence
/// (d passes) about a third of its time. The same settings from the environment, before the
/// program starts:
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824`.
/// The price is a process that keeps its peak heap size.
/// @return true if the settings were applied; false with another C library (nothing changed).
inline bool retain_freed_memory() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
  return false;
#endif
}

namespace detail {

/// "[2, 1, 8, 8]".
inline std::string tensor_shape_text(c10::IntArrayRef shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

/// The gist of a LibTorch error message: the first line, or for an error raised inside the
/// TorchScript interpreter (a traceback first) the last line, e.g. "RuntimeError: index out of
/// range in self".
inline std::string error_summary(std::string_view message) {
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.remove_suffix(1);
  }
  if (message.starts_with("The following operation failed in the TorchScript interpreter")) {
    return std::string(message.substr(message.rfind('\n') + 1));
  }
  return std::string(message.substr(0, message.find('\n')));
}

/// The LibTorch dtype of @p Scalar (float or double).
template <class Scalar>
[[nodiscard]] constexpr c10::ScalarType torch_scalar_type() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "flowmatch/interop/torch.hpp: Scalar must be float or double");
  return std::is_same_v<Scalar, float> ? c10::ScalarType::Float : c10::ScalarType::Double;
}

/// Loads the TorchScript module saved at @p path in eval mode. Throws io::io_error if the file
/// cannot be read and io::format_error if it is not a TorchScript archive (a zip file).
inline torch::jit::Module load_torchscript_module(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw io::io_error(path, "cannot open for reading");
  char magic[4] = {};
  file.read(magic, 4);
  if (file.gcount() != 4 || std::string_view(magic, 4) != std::string_view("PK\x03\x04", 4)) {
    throw io::format_error(path,
                           "not a TorchScript archive (a zip file, saved by torch.jit.save or "
                           "ScriptModule.save)");
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(path);
  } catch (const c10::Error& error) {
    throw io::format_error(path, "cannot be loaded as a TorchScript module: " +
                                     error_summary(error.what_without_backtrace()));
  } catch (const std::exception& error) {
    throw io::format_error(
        path, "cannot be loaded as a TorchScript module: " + error_summary(error.what()));
  }
  module.eval();
  return module;
}

/// Throws torch_model_error, named after @p owner, unless the forward method of @p module
/// (loaded from @p path) takes @p tensors Tensor arguments; @p expected spells them, "(x, t)".
inline void require_forward_signature(std::string_view owner, const std::string& path,
                                      const torch::jit::Module& module, std::size_t tensors,
                                      std::string_view expected) {
  const auto method = module.find_method("forward");
  if (!method) {
    reject_argument<torch_model_error>(argument_name(owner, "module '" + path + "'"),
                                       "has no forward method", "forward" + std::string(expected));
  }
  const auto& arguments = method->function().getSchema().arguments();
  std::string found = "(";
  std::size_t tensor_arguments = 0;
  for (std::size_t i = 1; i < arguments.size(); ++i) {  // argument 0 is self
    if (i > 1) found += ", ";
    found += arguments[i].name() + ": " + arguments[i].type()->str();
    if (arguments[i].type()->kind() == c10::TypeKind::TensorType) ++tensor_arguments;
  }
  found += ")";
  if (arguments.size() != tensors + 1 || tensor_arguments != tensors) {
    reject_argument<torch_model_error>(argument_name(owner, "forward of module '" + path + "'"),
                                       "takes " + found, std::string(expected) + ", each a Tensor");
  }
}

/// Throws torch_model_error, named after @p owner, if a floating-point parameter or buffer of
/// @p module (loaded from @p path) is not of dtype Scalar.
template <class Scalar>
void require_module_dtype(std::string_view owner, const std::string& path,
                          const torch::jit::Module& module) {
  constexpr c10::ScalarType wanted = torch_scalar_type<Scalar>();
  const auto check = [&](const std::string& kind, const std::string& what,
                         const torch::Tensor& tensor) {
    if (tensor.is_floating_point() && tensor.scalar_type() != wanted) {
      reject_argument<torch_model_error>(
          argument_name(owner, kind + " '" + what + "' of module '" + path + "'"),
          std::string("has dtype ") + c10::toString(tensor.scalar_type()),
          std::string(c10::toString(wanted)) + " like the model (convert the module, " +
              (std::is_same_v<Scalar, float> ? "model.float()" : "model.double()") +
              ", or choose the Scalar to match)");
    }
  };
  for (const auto& parameter : module.named_parameters()) {
    check("parameter", parameter.name, parameter.value);
  }
  for (const auto& buffer : module.named_buffers()) check("buffer", buffer.name, buffer.value);
}

/// Runs forward(@p inputs) of @p module (loaded from @p path) and returns its output tensor,
/// checked to be a Tensor of dtype Scalar. Any error LibTorch raises inside the module throws
/// torch_model_error, named after @p owner, with @p input_text ("x of shape [1, 3]").
template <class Scalar>
torch::Tensor run_forward(std::string_view owner, const std::string& path,
                          const torch::jit::Module& module, std::vector<torch::IValue> inputs,
                          const std::string& input_text) {
  const auto reject_failure = [&](std::string_view message) {
    reject_argument<torch_model_error>(
        argument_name(owner, "module '" + path + "'"),
        "failed on " + input_text + " (" + error_summary(message) + ")",
        "to run on the convention of " + std::string(owner) + " (flowmatch/interop)");
  };
  torch::IValue result;
  try {
    result = module.get_method("forward")(std::move(inputs));
  } catch (const c10::Error& error) {
    reject_failure(error.what_without_backtrace());
  } catch (const std::exception& error) {  // torch::jit::JITException and others
    reject_failure(error.what());
  }
  const std::string output = argument_name(owner, "output of module '" + path + "'");
  if (!result.isTensor())
    reject_argument<torch_model_error>(output, "is a " + result.tagKind(), "a Tensor");
  torch::Tensor tensor = result.toTensor();
  if (tensor.scalar_type() != torch_scalar_type<Scalar>()) {
    reject_argument<torch_model_error>(
        output, std::string("has dtype ") + c10::toString(tensor.scalar_type()),
        c10::toString(torch_scalar_type<Scalar>()));
  }
  return tensor;
}

/// The loaded module and the convention around it: the common part of TorchScriptField and
/// ConditionalTorchScriptField. @p Scalar is float or double.
template <class Scalar>
class TorchScriptModel {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "TorchScriptField: Scalar must be float or double");

 public:
  TorchScriptModel(const char* owner, const std::string& path,
                   std::vector<std::int64_t> sample_shape, std::optional<TorchCondition> condition,
                   TorchScriptOptions options)
      : owner_(owner),
        path_(path),
        sample_shape_(std::move(sample_shape)),
        condition_(condition),
        options_(options) {
    if (sample_shape_.empty()) {
      reject_argument(name("sample_shape"), "is empty", "the shape of one sample, e.g. {1, 8, 8}");
    }
    dim_ = 1;
    for (const std::int64_t extent : sample_shape_) {
      if (extent < 1) {
        reject_argument(name("sample_shape"), "is " + tensor_shape_text(sample_shape_),
                        "positive extents");
      }
      dim_ *= extent;
    }
    if (condition_ && condition_->kind == TorchCondition::Kind::vectors) {
      require_count<Index>(name("condition.dim"), condition_->dim, 1);
    }
    if (condition_ && condition_->kind == TorchCondition::Kind::labels && condition_->dim != 1) {
      reject_argument(name("condition.dim"), is_value(condition_->dim), "1 for labels");
    }
    require_count<Index>(name("options.max_pass_rows"), options_.max_pass_rows, 1);
    load();
    check_signature();
    check_dtype();
    probe();
  }

  [[nodiscard]] Index dim() const { return dim_; }
  [[nodiscard]] const std::vector<std::int64_t>& sample_shape() const { return sample_shape_; }
  [[nodiscard]] const torch::jit::Module& module() const { return module_; }
  [[nodiscard]] Index condition_dim() const { return condition_ ? condition_->dim : 0; }

  /// The batch @p x (d×N) as an [N, d] tensor over the same memory (no copy); @p samples is
  /// the N that x must have (any when negative).
  [[nodiscard]] torch::Tensor batch_tensor(const char* argument, const ConstMatrixRef<Scalar>& x,
                                           Index samples = -1) const {
    if (x.rows() != dim_ || (samples >= 0 && x.cols() != samples)) {
      reject_argument(name(argument), "has shape " + to_text(x.rows()) + "x" + to_text(x.cols()),
                      to_text(dim_) + "x" + (samples >= 0 ? to_text(samples) : "N") +
                          " (sample_shape " + tensor_shape_text(sample_shape_) + ")");
    }
    // The module only reads its inputs; from_blob needs a non-const pointer nonetheless.
    return torch::from_blob(const_cast<Scalar*>(x.data()), {x.cols(), x.rows()},
                            {x.outerStride(), 1}, tensor_options());
  }

  /// The conditions @p condition (k×N) as the module's third argument: int64 labels [N] (a
  /// copy) or an [N, k] tensor over the same memory.
  [[nodiscard]] torch::Tensor condition_tensor(const ConstMatrixRef<Scalar>& condition,
                                               Index samples) const {
    require_shape(name("condition"), condition, condition_->dim, samples);
    if (condition_->kind == TorchCondition::Kind::vectors) {
      require_finite(name("condition"), condition);
      return torch::from_blob(const_cast<Scalar*>(condition.data()),
                              {condition.cols(), condition.rows()}, {condition.outerStride(), 1},
                              tensor_options());
    }
    torch::Tensor labels = torch::empty({samples}, torch::TensorOptions().dtype(torch::kInt64));
    auto* label = labels.data_ptr<std::int64_t>();
    for (Index n = 0; n < samples; ++n) {
      const Scalar value = condition(0, n);
      // 2^62 is exact in float and double and far beyond any number of classes.
      if (!(value >= Scalar(0) && value < Scalar(4611686018427387904.0)) ||
          value != std::floor(value)) {
        reject_argument(name("condition(0, " + to_text(n) + ")"), is_value(value),
                        "a label: a whole number >= 0");
      }
      label[n] = static_cast<std::int64_t>(value);
    }
    return labels;
  }

  /// forward(x, t[, c]) on @p x ([N, d]) at time @p t, checked; returns [N, d].
  [[nodiscard]] torch::Tensor forward(const torch::Tensor& x, Scalar t,
                                      const torch::Tensor& condition) const {
    const std::int64_t samples = x.size(0);
    std::vector<std::int64_t> input_shape{samples};
    input_shape.insert(input_shape.end(), sample_shape_.begin(), sample_shape_.end());
    std::vector<torch::IValue> inputs;
    inputs.reserve(3);
    inputs.emplace_back(x.reshape(input_shape));
    inputs.emplace_back(torch::full({samples}, t, tensor_options()));
    if (condition_) inputs.emplace_back(condition);
    torch::Tensor velocity = run_forward<Scalar>(owner_, path_, module_, std::move(inputs),
                                                 "x of shape " + tensor_shape_text(input_shape));
    if (!velocity.sizes().equals(input_shape)) {
      reject_argument<torch_model_error>(name("output of module '" + path_ + "'"),
                                         "has shape " + tensor_shape_text(velocity.sizes()),
                                         tensor_shape_text(input_shape) + " (the shape of x)");
    }
    return velocity.reshape({samples, dim_});
  }

  /// Copies @p values ([N, d]) into @p out (d×N) and throws numerical_error at the first
  /// non-finite sample, naming @p what.
  void copy_checked(const char* what, const torch::Tensor& values, Scalar t,
                    MatrixRef<Scalar> out) const {
    require_shape(name(std::string("output of the ") + what), out, dim_, values.size(0));
    const torch::Tensor contiguous = values.detach().contiguous();
    out = Eigen::Map<const Matrix<Scalar>>(contiguous.data_ptr<Scalar>(), out.rows(), out.cols());
    require_finite_result(what, out, t);
  }

  /// As copy_checked, for per-sample values ([N]) into @p out (length N).
  void copy_checked(const char* what, const torch::Tensor& values, Scalar t,
                    VectorRef<Scalar> out) const {
    require_shape(name(std::string("output of the ") + what), out, values.size(0), 1);
    const torch::Tensor contiguous = values.detach().contiguous();
    out = Eigen::Map<const Vector<Scalar>>(contiguous.data_ptr<Scalar>(), out.size());
    require_finite_result(what, out, t);
  }

  /// The velocity at (t, x[, c]) into @p out, under inference mode.
  void velocity(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* condition,
                MatrixRef<Scalar> out) const {
    if (x.cols() == 0) return;
    c10::InferenceMode inference;
    const torch::Tensor batch = batch_tensor("x", x);
    const torch::Tensor c = condition ? condition_tensor(*condition, x.cols()) : torch::Tensor();
    copy_checked("velocity", forward(batch, t, c), t, out);
  }

  /// (∂u/∂x)·tangent into @p out by the double-vjp identity (see the file comment).
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* condition,
           const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) const {
    if (x.cols() == 0) return;
    torch::AutoGradMode autograd(true);
    const torch::Tensor c = condition ? condition_tensor(*condition, x.cols()) : torch::Tensor();
    const torch::Tensor leaf = batch_tensor("x", x).detach().requires_grad_(true);
    const torch::Tensor velocity = forward(leaf, t, c);
    const torch::Tensor dual = torch::zeros_like(velocity).requires_grad_(true);
    const torch::Tensor pulled = gradient(velocity, leaf, dual, true, true);
    torch::Tensor product;
    if (pulled.requires_grad()) {
      product = gradient(pulled, dual, batch_tensor("tangent", tangent, x.cols()), false, false);
    } else {
      product = torch::zeros_like(velocity);  // the Jacobian does not depend on the cotangent
    }
    copy_checked("Jacobian-vector product", product, t, out);
  }

  /// The outputs one derivative pass may fill (null: not wanted).
  struct PassOutputs {
    MatrixRef<Scalar>* velocity = nullptr;
    VectorRef<Scalar>* divergence = nullptr;
    MatrixRef<Scalar>* vjp = nullptr;
    MatrixRef<Scalar>* divergence_gradient = nullptr;
  };

  /// Velocity, divergence, vjp with @p cotangent and gradient of the divergence, as requested by
  /// @p outputs, from the passes described in the file comment: the batch repeated once per
  /// basis direction of a chunk (and once more for the cotangent), one forward pass over the
  /// copies, one backward pass through it per chunk of directions, and one more backward pass
  /// per chunk for the gradient of the divergence.
  void derivative_pass(Scalar t, const ConstMatrixRef<Scalar>& x,
                       const ConstMatrixRef<Scalar>* condition,
                       const ConstMatrixRef<Scalar>* cotangent, PassOutputs outputs) const {
    const Index samples = x.cols();
    if (samples == 0) return;
    torch::AutoGradMode autograd(true);
    const bool wants_divergence = outputs.divergence || outputs.divergence_gradient;
    const bool second_order = outputs.divergence_gradient != nullptr;
    const torch::Tensor c = condition ? condition_tensor(*condition, samples) : torch::Tensor();
    const torch::Tensor leaf = batch_tensor("x", x).detach().requires_grad_(true);
    const torch::Tensor cotangent_rows =
        cotangent ? batch_tensor("cotangent", *cotangent, samples) : torch::Tensor();
    // The batch is repeated `chunk` times (and once more for the caller's cotangent, whose
    // product is read from the first backward pass): one forward pass over the copies, then
    // one backward pass through the same graph per chunk of directions, copy i of pass p
    // carrying the cotangent e_{p·chunk + i} (zero past the last direction).
    const auto ceil_div = [](Index a, Index b) { return (a + b - 1) / b; };
    const Index passes =
        wants_divergence ? ceil_div(dim_, std::max<Index>(1, options_.max_pass_rows / samples)) : 1;
    const Index chunk = wants_divergence ? ceil_div(dim_, passes) : 0;
    const Index extra = cotangent ? 1 : 0;
    const Index copies = std::max<Index>(chunk + extra, 1);
    const torch::Tensor repeated = leaf.repeat({copies, 1});
    const torch::Tensor c_repeated = !c.defined()   ? c
                                     : c.dim() == 1 ? c.repeat({copies})
                                                    : c.repeat({copies, 1});
    const torch::Tensor velocity = forward(repeated, t, c_repeated);
    if (outputs.velocity) {
      copy_checked("velocity", velocity.narrow(0, 0, samples), t, *outputs.velocity);
    }
    if (chunk + extra == 0) return;
    const torch::Tensor basis = torch::cat(
        {torch::eye(dim_, tensor_options()), torch::zeros({chunk, dim_}, tensor_options())}, 0);

    torch::Tensor divergence = torch::zeros({samples}, tensor_options());
    torch::Tensor divergence_gradient = torch::zeros({samples, dim_}, tensor_options());
    for (Index pass = 0; pass < passes; ++pass) {
      std::vector<torch::Tensor> cotangents;
      if (chunk > 0) {
        cotangents.push_back(basis.narrow(0, pass * chunk, chunk)
                                 .unsqueeze(1)
                                 .expand({chunk, samples, dim_})
                                 .reshape({chunk * samples, dim_}));
      }
      if (extra > 0) {
        cotangents.push_back(cotangent_rows);
      }
      const torch::Tensor weights = torch::cat(cotangents, 0);
      const torch::Tensor rows = gradient(velocity, repeated, weights, second_order, true);
      if (pass == 0 && extra > 0) {
        copy_checked("vector-Jacobian product", rows.narrow(0, chunk * samples, samples), t,
                     *outputs.vjp);
      }
      if (chunk > 0) {
        // Row i·N + n of `rows` is e_iᵀ J(x_n); its entry i is the diagonal entry J_ii(x_n).
        const torch::Tensor part =
            (rows.narrow(0, 0, chunk * samples) * weights.narrow(0, 0, chunk * samples))
                .sum(1)
                .view({chunk, samples})
                .sum(0);
        if (second_order && part.requires_grad()) {
          divergence_gradient += gradient(part.sum(), leaf, torch::Tensor(), false, true);
        }
        divergence += part.detach();
      }
    }
    if (outputs.divergence) copy_checked("divergence", divergence, t, *outputs.divergence);
    if (outputs.divergence_gradient) {
      copy_checked("gradient of the divergence", divergence_gradient, t,
                   *outputs.divergence_gradient);
    }
  }

 private:
  [[nodiscard]] std::string name(std::string_view argument) const {
    return argument_name(owner_, argument);
  }

  [[nodiscard]] static constexpr c10::ScalarType scalar_type() {
    return torch_scalar_type<Scalar>();
  }

  [[nodiscard]] static torch::TensorOptions tensor_options() {
    return torch::TensorOptions().dtype(scalar_type());
  }

  /// ∂⟨output, weights⟩/∂input (zeros where the output does not depend on the input); with
  /// @p create_graph the result can be differentiated again, and with @p retain_graph the graph
  /// of the output can be differentiated again.
  /// A module whose operators have no (double) backward formula throws torch_model_error.
  [[nodiscard]] torch::Tensor gradient(const torch::Tensor& output, const torch::Tensor& input,
                                       const torch::Tensor& weights, bool create_graph,
                                       bool retain_graph) const {
    if (!output.requires_grad()) return torch::zeros_like(input);
    std::vector<torch::Tensor> grad_outputs;
    if (weights.defined()) grad_outputs.push_back(weights);
    torch::Tensor result;
    try {
      result = torch::autograd::grad({output}, {input}, grad_outputs, retain_graph, create_graph,
                                     /*allow_unused=*/true)[0];
    } catch (const c10::Error& error) {
      reject_argument<torch_model_error>(
          name("module '" + path_ + "'"),
          "cannot be differentiated (" + error_summary(error.what_without_backtrace()) + ")",
          "operators with backward (and, for jvp and the divergence gradient, double backward) "
          "formulas");
    }
    return result.defined() ? result : torch::zeros_like(input);
  }

  template <class Derived>
  void require_finite_result(const char* what, const Eigen::DenseBase<Derived>& values,
                             Scalar t) const {
    const Index bad = first_nonfinite_index(values);
    if (bad >= 0) {
      throw numerical_error(owner_ + ": module '" + path_ + "' gave a non-finite " + what +
                                " for sample " + to_text(bad) + " at t = " + to_text(t),
                            static_cast<double>(t), bad);
    }
  }

  void load() { module_ = load_torchscript_module(path_); }

  void check_signature() const {
    require_forward_signature(owner_, path_, module_, condition_ ? 3 : 2,
                              condition_ ? "(x, t, c)" : "(x, t)");
  }

  void check_dtype() const { require_module_dtype<Scalar>(owner_, path_, module_); }

  /// One sample at t = 0 (zeros, label 0 or zero conditions) through forward: a wrong output
  /// type, dtype or shape is reported on load rather than at the first step.
  void probe() const {
    c10::InferenceMode inference;
    const Matrix<Scalar> x = Matrix<Scalar>::Zero(dim_, 1);
    torch::Tensor c;
    if (condition_) {
      const Matrix<Scalar> condition = Matrix<Scalar>::Zero(condition_->dim, 1);
      c = condition_tensor(condition, 1).clone();
    }
    static_cast<void>(forward(batch_tensor("x", x), Scalar(0), c));
  }

  std::string owner_;
  std::string path_;
  std::vector<std::int64_t> sample_shape_;
  std::optional<TorchCondition> condition_;
  TorchScriptOptions options_;
  Index dim_ = 0;
  torch::jit::Module module_;
};

}  // namespace detail

/// A TorchScript module `forward(x, t)` as a velocity field over Scalar (float or double), with
/// every capability of the field protocol through autograd (see the file comment).
///
///     flowmatch::TorchScriptField<float> field("model.pt", {1, 8, 8});
///     auto samples = flowmatch::sample(field, noise, options);   // noise: 64×N
template <class Scalar>
class TorchScriptField {
 public:
  /// Loads the module saved at @p path (torch.jit.save, from torch.jit.script or trace) and
  /// checks it on one probe sample.
  /// @param sample_shape the shape of one sample as the module sees it, e.g. {1, 8, 8}; the
  ///        field's dimension d is the product of the extents.
  /// @throws io::io_error if the file cannot be read; io::format_error if it is not a
  ///         TorchScript archive; torch_model_error if forward is not (x, t), a floating-point
  ///         parameter or buffer is not of dtype Scalar, or the probe's output is not a tensor of
  ///         dtype Scalar and shape [1, *sample_shape]; std::invalid_argument for a bad shape.
  TorchScriptField(const std::string& path, std::vector<std::int64_t> sample_shape,
                   TorchScriptOptions options = {})
      : model_("TorchScriptField", path, std::move(sample_shape), std::nullopt, options) {}

  /// Derivatives come from autograd: a vjp is one backward pass, a jvp two, so estimators that
  /// may use either (Hutchinson's) use the vjp (field/capabilities.hpp).
  static constexpr bool prefers_reverse_mode = true;

  /// d, the number of entries of a sample.
  [[nodiscard]] Index dim() const { return model_.dim(); }
  /// The shape of one sample as the module sees it.
  [[nodiscard]] const std::vector<std::int64_t>& sample_shape() const {
    return model_.sample_shape();
  }
  /// The loaded module (a shared handle).
  [[nodiscard]] const torch::jit::Module& module() const { return model_.module(); }

  /// The velocity u_t(x) (d×N) into @p out; one forward pass under inference mode.
  /// @throws torch_model_error, numerical_error as described in the file comment.
  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    model_.velocity(t, x, nullptr, out);
  }
  /// The exact divergence ∇·u_t(x) per sample into @p out (length N).
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const {
    model_.derivative_pass(t, x, nullptr, nullptr, {nullptr, &out, nullptr, nullptr});
  }
  /// (∂u_t/∂x)·tangent (d×N) into @p out, by the double-vjp identity.
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const {
    model_.jvp(t, x, nullptr, tangent, out);
  }
  /// (∂u_t/∂x)ᵀ·cotangent (d×N) into @p out: one backward pass.
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const {
    model_.derivative_pass(t, x, nullptr, &cotangent, {nullptr, nullptr, &out, nullptr});
  }
  /// ∇_x(∇·u_t) (d×N) into @p out: double backward.
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    model_.derivative_pass(t, x, nullptr, nullptr, {nullptr, nullptr, nullptr, &out});
  }
  /// u_t(x) and ∇·u_t(x), the velocity taken from the divergence's forward pass.
  void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> velocity,
                           VectorRef<Scalar> divergence) const {
    model_.derivative_pass(t, x, nullptr, nullptr, {&velocity, &divergence, nullptr, nullptr});
  }
  /// u_t(x), (∂u_t/∂x)ᵀ·cotangent and ∇_x(∇·u_t) from the same passes.
  void velocity_vjp_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                                        const ConstMatrixRef<Scalar>& cotangent,
                                        MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                        MatrixRef<Scalar> divergence_gradient) const {
    model_.derivative_pass(t, x, nullptr, &cotangent,
                           {&velocity, nullptr, &vjp, &divergence_gradient});
  }

 private:
  detail::TorchScriptModel<Scalar> model_;
};

/// A TorchScript module `forward(x, t, c)` as a conditional velocity field over Scalar (float or
/// double): every conditional member of the field protocol, with the condition matrix c (k×N)
/// after x (see the file comment). Guide it with classifier_free_guidance.
///
///     flowmatch::ConditionalTorchScriptField<float> field("model.pt", {1, 8, 8},
///                                                         flowmatch::TorchCondition::labels());
///     flowmatch::GuidanceOptions<float> options;
///     options.null_condition = flowmatch::Vector<float>::Constant(1, 10.0f);  // null label 10
///     auto guided = flowmatch::classifier_free_guidance(std::cref(field), labels, 2.0f, options);
template <class Scalar>
class ConditionalTorchScriptField {
 public:
  /// Loads the module saved at @p path and checks it on one probe sample (label 0, or a zero
  /// condition vector).
  /// @param sample_shape the shape of one sample as the module sees it.
  /// @param condition labels() for int64 labels [N], vectors(k) for float conditions [N, k].
  /// @throws as TorchScriptField, with forward expected to be (x, t, c).
  ConditionalTorchScriptField(const std::string& path, std::vector<std::int64_t> sample_shape,
                              TorchCondition condition, TorchScriptOptions options = {})
      : model_("ConditionalTorchScriptField", path, std::move(sample_shape), condition, options) {}

  /// Derivatives come from autograd: a vjp is one backward pass, a jvp two, so estimators that
  /// may use either (Hutchinson's) use the vjp (field/capabilities.hpp).
  static constexpr bool prefers_reverse_mode = true;

  /// d, the number of entries of a sample.
  [[nodiscard]] Index dim() const { return model_.dim(); }
  /// k, the number of rows of a condition matrix (1 for labels).
  [[nodiscard]] Index condition_dim() const { return model_.condition_dim(); }
  /// The shape of one sample as the module sees it.
  [[nodiscard]] const std::vector<std::int64_t>& sample_shape() const {
    return model_.sample_shape();
  }
  /// The loaded module (a shared handle).
  [[nodiscard]] const torch::jit::Module& module() const { return model_.module(); }

  /// u_t(x | c) into @p out.
  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& c,
                  MatrixRef<Scalar> out) const {
    model_.velocity(t, x, &c, out);
  }
  /// ∇·u_t(x | c) per sample into @p out.
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& c,
                  VectorRef<Scalar> out) const {
    model_.derivative_pass(t, x, &c, nullptr, {nullptr, &out, nullptr, nullptr});
  }
  /// (∂u_t/∂x)·tangent at conditions c into @p out.
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& c,
           const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) const {
    model_.jvp(t, x, &c, tangent, out);
  }
  /// (∂u_t/∂x)ᵀ·cotangent at conditions c into @p out.
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& c,
           const ConstMatrixRef<Scalar>& cotangent, MatrixRef<Scalar> out) const {
    model_.derivative_pass(t, x, &c, &cotangent, {nullptr, nullptr, &out, nullptr});
  }
  /// ∇_x(∇·u_t) at conditions c into @p out.
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& c, MatrixRef<Scalar> out) const {
    model_.derivative_pass(t, x, &c, nullptr, {nullptr, nullptr, nullptr, &out});
  }
  /// u_t(x | c) and its divergence from the same passes.
  void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& c, MatrixRef<Scalar> velocity,
                           VectorRef<Scalar> divergence) const {
    model_.derivative_pass(t, x, &c, nullptr, {&velocity, &divergence, nullptr, nullptr});
  }
  /// u_t(x | c), (∂u_t/∂x)ᵀ·cotangent and ∇_x(∇·u_t) from the same passes.
  void velocity_vjp_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                                        const ConstMatrixRef<Scalar>& c,
                                        const ConstMatrixRef<Scalar>& cotangent,
                                        MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                        MatrixRef<Scalar> divergence_gradient) const {
    model_.derivative_pass(t, x, &c, &cotangent, {&velocity, nullptr, &vjp, &divergence_gradient});
  }

 private:
  detail::TorchScriptModel<Scalar> model_;
};

}  // namespace flowmatch
