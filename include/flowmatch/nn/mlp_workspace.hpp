/// @file mlp_workspace.hpp
/// @brief The reusable buffers of an Mlp evaluation and the gradient of its parameters.
#pragma once

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

/// Gradients of a scalar loss with respect to the parameters of an Mlp: one entry per linear
/// layer, of the same shapes as Mlp::weight(layer) (out×in) and Mlp::bias(layer) (out).
template <class Scalar>
struct MlpGradient {
  std::vector<Matrix<Scalar>> weights;  ///< ∂L/∂W_ℓ, out×in.
  std::vector<Vector<Scalar>> biases;   ///< ∂L/∂b_ℓ, length out.
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

}  // namespace flowmatch
