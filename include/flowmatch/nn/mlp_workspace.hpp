/// @file mlp_workspace.hpp
/// @brief The reusable buffers of an Mlp evaluation, the calling thread's cache of them, and
/// the gradient of its parameters.
#pragma once

#include <cstdint>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/matrix_product.hpp"

namespace flowmatch {

template <class Scalar>
class Mlp;

namespace detail {
template <class Scalar>
struct MlpDerivatives;
}  // namespace detail

/// Gradients of a scalar loss with respect to the parameters of an Mlp, in one contiguous
/// vector flat() = [vec(∂L/∂W₀), ∂L/∂b₀, vec(∂L/∂W₁), …] of the layout of Mlp::parameters(),
/// with one view per layer: weights[ℓ] of the shape of Mlp::weight(ℓ) (out×in) and biases[ℓ]
/// of the shape of Mlp::bias(ℓ). A gradient is shaped by Mlp::zero_gradient() or by the first
/// Mlp::backward() into it; copies view their own vector.
template <class Scalar>
class MlpGradient {
 public:
  std::vector<Eigen::Map<Matrix<Scalar>>> weights;  ///< ∂L/∂W_ℓ, out×in, views into flat().
  std::vector<Eigen::Map<Vector<Scalar>>> biases;  ///< ∂L/∂b_ℓ, length out, views into flat().

  MlpGradient() = default;
  MlpGradient(const MlpGradient& other) : flat_(other.flat_) { view_layers_like(other); }
  MlpGradient(MlpGradient&& other) noexcept = default;  // the vector's storage moves with it
  MlpGradient& operator=(const MlpGradient& other) {
    if (this != &other) {
      flat_ = other.flat_;
      view_layers_like(other);
    }
    return *this;
  }
  MlpGradient& operator=(MlpGradient&& other) noexcept = default;
  ~MlpGradient() = default;

  /// Every entry, in the layout of Mlp::parameters(); its length must not change.
  [[nodiscard]] Vector<Scalar>& flat() { return flat_; }
  /// Every entry, in the layout of Mlp::parameters().
  [[nodiscard]] const Vector<Scalar>& flat() const { return flat_; }

  /// Whether the layers have the shapes of the parameters of @p network.
  template <class Network>
  [[nodiscard]] bool has_shape_of(const Network& network) const {
    if (static_cast<Index>(weights.size()) != network.layer_count()) return false;
    for (Index layer = 0; layer < network.layer_count(); ++layer) {
      if (weights[layer].rows() != network.layer_output_size(layer) ||
          weights[layer].cols() != network.layer_input_size(layer)) {
        return false;
      }
    }
    return true;
  }

  /// Gives the gradient the shapes of the parameters of @p network, all entries zero.
  template <class Network>
  void shape_like(const Network& network) {
    flat_ = Vector<Scalar>::Zero(network.parameters().size());
    weights.clear();
    biases.clear();
    Index offset = 0;
    for (Index layer = 0; layer < network.layer_count(); ++layer) {
      view_layer(offset, network.layer_output_size(layer), network.layer_input_size(layer));
      offset += network.layer_output_size(layer) * (network.layer_input_size(layer) + 1);
    }
  }

 private:
  // Appends the views of a layer whose out×in weight starts at @p offset of flat_.
  void view_layer(Index offset, Index outputs, Index inputs) {
    weights.emplace_back(flat_.data() + offset, outputs, inputs);
    biases.emplace_back(flat_.data() + offset + outputs * inputs, outputs);
  }
  // Views of flat_ with the layer shapes of @p other.
  void view_layers_like(const MlpGradient& other) {
    weights.clear();
    biases.clear();
    for (std::size_t layer = 0; layer < other.weights.size(); ++layer) {
      view_layer(other.weights[layer].data() - other.flat_.data(), other.weights[layer].rows(),
                 other.weights[layer].cols());
    }
  }

  Vector<Scalar> flat_;
};

/// Buffers of one evaluation of an Mlp and of its derivatives: the inputs, every hidden
/// activation with its slope σ'(z) (and σ''(z) for the divergence gradient), scratch space for
/// tangents and adjoints, and the packing buffers of the matrix products. Every evaluation and
/// every derivative of the network uses this one type. A workspace sizes itself on first use and
/// then evaluates batches of the same size without allocating, whatever the layer widths. After
/// Mlp::forward it holds everything Mlp::backward needs. One workspace must not be used by two
/// threads at once.
template <class Scalar>
class MlpWorkspace {
 public:
  MlpWorkspace() = default;

  /// The number of samples of the last forward evaluation (0 before the first).
  [[nodiscard]] Index batch_size() const { return batch_size_; }

 private:
  friend class Mlp<Scalar>;
  friend struct detail::MlpDerivatives<Scalar>;

  const void* network_ = nullptr;  // the Mlp whose forward pass is recorded, if any
  bool has_slopes_ = false;        // whether slopes_ belong to that forward pass
  Index batch_size_ = 0;

  Matrix<Scalar> x_;                     // dim×N copy of the input points
  Matrix<Scalar> cond_;                  // cond_dim×N copy of the conditions
  bool time_shared_ = true;              // which of the two time feature buffers is current
  Vector<Scalar> shared_time_features_;  // φ(t) of a time shared by the batch
  Matrix<Scalar> time_features_;         // features×N, φ(t_n) of per-sample times
  Vector<Scalar> first_bias_;            // b₀ + W_t·φ(t) for a shared time

  std::vector<Matrix<Scalar>> hidden_;         // h_ℓ = σ(z_ℓ), width_ℓ×N
  std::vector<Matrix<Scalar>> slopes_;         // σ'(z_ℓ), width_ℓ×N
  std::vector<Matrix<Scalar>> curvatures_;     // σ''(z_ℓ), width_ℓ×N (divergence gradient)
  std::vector<Matrix<Scalar>> layer_scratch_;  // tangents ∂h_ℓ (jvp) or adjoints ∂L/∂z_ℓ
  // Direction blocks, width_ℓ×(dim·N) with column block i = direction e_i for every sample:
  std::vector<Matrix<Scalar>> direction_tangents_;      // ∂h_ℓ = σ'(z_ℓ) ⊙ a_ℓ^i
  std::vector<Matrix<Scalar>> preactivation_tangents_;  // a_ℓ^i = ∂z_ℓ/∂x_i
  std::vector<Matrix<Scalar>> row_gradients_;           // g_ℓ^i = ∂u_i/∂h_ℓ
  // Adjoints of the divergence gradient, width_ℓ×N:
  std::vector<Matrix<Scalar>> divergence_adjoints_;  // δ_ℓ = d(∇·u)/dz_ℓ
  std::vector<Matrix<Scalar>> propagated_adjoints_;  // W_{ℓ+1}ᵀ·δ_{ℓ+1}
  Vector<Scalar> trace_weights_;  // Σ_i W₁[i,j]·W₀[j,i], for one hidden layer
  Matrix<Scalar> output_;         // dim×N staging of the output, tangent or input gradient
  detail::ProductBuffers<Scalar> products_;  // packing buffers of the matrix products
};

namespace detail {

/// The calling thread's MlpWorkspace for a batch of @p batch columns, for the evaluations and
/// derivatives that take no workspace. Each thread keeps a few, for the batch sizes it
/// evaluated last, shared by every Mlp<Scalar> of the thread, so that alternating sizes (the
/// full chunks and the shorter last chunk of ParallelField) do not reallocate at every call. A
/// size not among them takes the workspace used least recently.
template <class Scalar>
MlpWorkspace<Scalar>& thread_workspace(Index batch) {
  constexpr int slots = 4;
  thread_local MlpWorkspace<Scalar> workspaces[slots];
  thread_local Index batch_sizes[slots] = {};
  thread_local std::uint64_t last_use[slots] = {};
  thread_local std::uint64_t calls = 0;
  int chosen = 0;
  for (int slot = 1; slot < slots; ++slot) {
    if (last_use[slot] < last_use[chosen]) chosen = slot;
  }
  for (int slot = 0; slot < slots; ++slot) {
    if (last_use[slot] != 0 && batch_sizes[slot] == batch) chosen = slot;
  }
  batch_sizes[chosen] = batch;
  last_use[chosen] = ++calls;
  return workspaces[chosen];
}

}  // namespace detail

}  // namespace flowmatch
