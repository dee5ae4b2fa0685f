/// @file mlp_derivatives.hpp
/// @brief The exact derivatives of an Mlp: the backward pass (parameter and input gradients),
/// Jacobian–vector and vector–Jacobian products, the divergence and its gradient.
///
/// Every derivative starts from the network's one forward pass (Mlp::run_forward), recorded in
/// an MlpWorkspace with the slopes σ'(z_ℓ) of the hidden layers (and σ''(z_ℓ) for the
/// divergence gradient), and then runs
///
///   - forward-mode tangents ∂h_ℓ = σ'(z_ℓ) ⊙ (W_ℓ·∂h_{ℓ−1}) for jvp and divergence;
///   - the backward pass ∂L/∂z_ℓ = σ'(z_ℓ) ⊙ (W_{ℓ+1}ᵀ·∂L/∂z_{ℓ+1}) for vjp and the parameter
///     gradients;
///   - reverse mode through the forward-mode divergence for its gradient (recursions at
///     MlpDerivatives::divergence_gradient).
///
/// These are the implementations of Mlp's members backward, jvp, vjp, divergence,
/// velocity_divergence, divergence_gradient and velocity_vjp_divergence_gradient (documented in
/// nn/mlp.hpp); nn/mlp.hpp includes this header, so users include nn/mlp.hpp.
#pragma once

#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"

namespace flowmatch::detail {

/// The derivative kernels of Mlp<Scalar>, as static functions of the network.
template <class Scalar>
struct MlpDerivatives {
  using Network = Mlp<Scalar>;
  using Time = typename Network::SharedOrPerSampleTime;
  using Record = typename Network::ForwardRecord;

  /// Propagates G = ∂L/∂u back through the forward pass recorded in @p workspace: parameter
  /// gradients into *gradient (if not null), ∂L/∂x into workspace.output_ (if x_gradient).
  static void backward(const Network& network, MlpWorkspace<Scalar>& workspace,
                       const ConstMatrixRef<Scalar>& output_gradient, MlpGradient<Scalar>* gradient,
                       bool x_gradient) {
    if (workspace.network_ != &network || !workspace.has_slopes_) {
      reject_argument("Mlp::backward: workspace", "holds no forward pass of this network",
                      "a call to forward() with the same workspace first");
    }
    const Index batch = workspace.batch_size_;
    require_shape("Mlp::backward: output_gradient", output_gradient, network.dim(), batch);
    require_finite("Mlp::backward: output_gradient", output_gradient);
    const Index layers = network.layer_count();
    if (gradient != nullptr && !gradient->has_shape_of(network)) gradient->shape_like(network);
    workspace.layer_scratch_.resize(layers - 1);
    for (Index layer = layers - 1; layer >= 0; --layer) {
      // δ_ℓ = ∂L/∂z_ℓ: G for the last layer, computed below for the hidden ones.
      const ConstMatrixRef<Scalar> delta =
          layer == layers - 1 ? output_gradient
                              : ConstMatrixRef<Scalar>(workspace.layer_scratch_[layer]);
      if (gradient != nullptr) write_layer_gradient(network, workspace, layer, delta, *gradient);
      if (layer > 0) {
        Matrix<Scalar>& previous = workspace.layer_scratch_[layer - 1];
        previous.resize(network.layer_input_size(layer), batch);
        workspace.products_.multiply_transposed_lhs(network.layer_weight(layer), delta, previous);
        previous.array() *= workspace.slopes_[layer - 1].array();
      } else if (x_gradient) {
        workspace.output_.resize(network.dim(), batch);
        workspace.products_.multiply_transposed_lhs(network.x_weight(), delta, workspace.output_);
      }
    }
  }

  /// (∂u/∂x)·tangent into @p out.
  static void jvp(const Network& network, Scalar t, const ConstMatrixRef<Scalar>& x,
                  const ConstMatrixRef<Scalar>* cond, const ConstMatrixRef<Scalar>& tangent,
                  MatrixRef<Scalar> out) {
    MlpWorkspace<Scalar>& workspace = record_product_pass(network, t, x, cond, "Mlp::jvp: tangent",
                                                          tangent, "Mlp::jvp: out", out);
    const Index layers = network.layer_count();
    const Index batch = x.cols();
    workspace.layer_scratch_.resize(layers - 1);
    // ∂z₀ = W_x·tangent (t and c are held fixed), then ∂h_ℓ = σ'(z_ℓ) ⊙ ∂z_ℓ.
    Matrix<Scalar>& first = layers == 1 ? workspace.output_ : workspace.layer_scratch_[0];
    first.resize(network.layer_output_size(0), batch);
    workspace.products_.multiply(network.x_weight(), tangent, first);
    for (Index layer = 0; layer + 1 < layers; ++layer) {
      workspace.layer_scratch_[layer].array() *= workspace.slopes_[layer].array();
      Matrix<Scalar>& next =
          layer + 2 == layers ? workspace.output_ : workspace.layer_scratch_[layer + 1];
      next.resize(network.layer_output_size(layer + 1), batch);
      workspace.products_.multiply(network.layer_weight(layer + 1), workspace.layer_scratch_[layer],
                                   next);
    }
    out = workspace.output_;
  }

  /// (∂u/∂x)ᵀ·cotangent into @p out.
  static void vjp(const Network& network, Scalar t, const ConstMatrixRef<Scalar>& x,
                  const ConstMatrixRef<Scalar>* cond, const ConstMatrixRef<Scalar>& cotangent,
                  MatrixRef<Scalar> out) {
    MlpWorkspace<Scalar>& workspace = record_product_pass(
        network, t, x, cond, "Mlp::vjp: cotangent", cotangent, "Mlp::vjp: out", out);
    backward(network, workspace, cotangent, nullptr, true);
    out = workspace.output_;
  }

  /// ∇·u into @p out, and u into *velocity unless null (which must not alias x).
  static void divergence(const Network& network, Scalar t, const ConstMatrixRef<Scalar>& x,
                         const ConstMatrixRef<Scalar>* cond, VectorRef<Scalar> out,
                         MatrixRef<Scalar>* velocity = nullptr) {
    network.require_batch(x);
    require_shape("Mlp::divergence: out", out, x.cols(), 1);
    MlpWorkspace<Scalar>& workspace = thread_workspace<Scalar>(x.cols());
    network.run_forward(workspace, Time{t, nullptr}, x, cond, Record::slopes, velocity);
    const Index layers = network.layer_count();
    if (layers == 1) {
      out.setConstant(network.x_weight().trace());  // u = W_x·x + const
      return;
    }
    if (layers == 2) {
      // div = Σ_j σ'(z_j)·c_j with c_j = Σ_i W₁[i,j]·W₀[j,i].
      workspace.trace_weights_.noalias() =
          (network.layer_weight(1).transpose().array() * network.x_weight().array())
              .rowwise()
              .sum()
              .matrix();
      out.noalias() = workspace.slopes_[0].transpose() * workspace.trace_weights_;
      return;
    }
    propagate_directions(network, workspace, false);
    // div_n = Σ_i ∂u_i/∂x_i = Σ_i W_{L−1}[i, :]·∂h_{L−2} along e_i at sample n.
    const Index batch = x.cols();
    const Matrix<Scalar>& last_tangents = workspace.direction_tangents_[layers - 2];
    out.setZero();
    for (Index direction = 0; direction < network.dim(); ++direction) {
      out.transpose().noalias() += network.layer_weight(layers - 1).row(direction) *
                                   last_tangents.middleCols(direction * batch, batch);
    }
  }

  /// ∇ₓ(∇·u) for each sample into @p out, t and c held fixed: reverse mode through the
  /// forward-mode divergence. With the pre-activation tangents a_ℓ^i = ∂z_ℓ/∂x_i
  ///
  ///     a₀^i = W_x[:, i],   a_ℓ^i = W_ℓ·(σ'(z_{ℓ−1}) ⊙ a_{ℓ−1}^i),
  ///
  /// and the rows of the Jacobian with respect to a hidden layer g_ℓ^i = ∂u_i/∂h_ℓ
  ///
  ///     g_{L−2}^i = W_{L−1}[i, :]ᵀ,   g_{ℓ−1}^i = W_ℓᵀ·(σ'(z_ℓ) ⊙ g_ℓ^i),
  ///
  /// the divergence Σ_i ⟨g_ℓ^i, σ'(z_ℓ) ⊙ a_ℓ^i⟩ is linear in each σ'(z_ℓ), so
  ///
  ///     ∇ₓ(∇·u) = W_xᵀ·δ₀,
  ///     δ_ℓ = σ''(z_ℓ) ⊙ Σ_i g_ℓ^i ⊙ a_ℓ^i + σ'(z_ℓ) ⊙ (W_{ℓ+1}ᵀ·δ_{ℓ+1}),   δ_{L−1} = 0,
  ///
  /// where δ_ℓ = d(∇·u)/dz_ℓ: the first term is the dependence through σ'(z_ℓ), the second
  /// through the later layers.
  static void divergence_gradient(const Network& network, Scalar t, const ConstMatrixRef<Scalar>& x,
                                  const ConstMatrixRef<Scalar>* cond, MatrixRef<Scalar> out) {
    network.require_batch(x);
    require_shape("Mlp::divergence_gradient: out", out, network.dim(), x.cols());
    MlpWorkspace<Scalar>& workspace = thread_workspace<Scalar>(x.cols());
    network.run_forward(workspace, Time{t, nullptr}, x, cond, Record::curvatures);
    recorded_divergence_gradient(network, workspace, out);
  }

  /// u into @p velocity, (∂u/∂x)ᵀ·cotangent into @p vjp and ∇ₓ(∇·u) into
  /// @p divergence_gradient from one forward pass: the backward pass of the vjp and the
  /// recursions of the divergence gradient both start from it. The outputs must not alias x
  /// or the cotangent.
  static void velocity_vjp_divergence_gradient(const Network& network, Scalar t,
                                               const ConstMatrixRef<Scalar>& x,
                                               const ConstMatrixRef<Scalar>* cond,
                                               const ConstMatrixRef<Scalar>& cotangent,
                                               MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                               MatrixRef<Scalar> divergence_gradient) {
    network.require_batch(x);
    require_shape("Mlp::velocity_vjp_divergence_gradient: cotangent", cotangent, network.dim(),
                  x.cols());
    require_shape("Mlp::velocity_vjp_divergence_gradient: velocity", velocity, network.dim(),
                  x.cols());
    require_shape("Mlp::velocity_vjp_divergence_gradient: vjp", vjp, network.dim(), x.cols());
    require_shape("Mlp::velocity_vjp_divergence_gradient: divergence_gradient", divergence_gradient,
                  network.dim(), x.cols());
    MlpWorkspace<Scalar>& workspace = thread_workspace<Scalar>(x.cols());
    network.run_forward(workspace, Time{t, nullptr}, x, cond, Record::curvatures, &velocity);
    backward(network, workspace, cotangent, nullptr, true);
    vjp = workspace.output_;
    recorded_divergence_gradient(network, workspace, divergence_gradient);
  }

 private:
  // ∇ₓ(∇·u) into @p out from the forward pass with curvatures recorded in @p workspace (the
  // recursions of divergence_gradient).
  static void recorded_divergence_gradient(const Network& network, MlpWorkspace<Scalar>& workspace,
                                           MatrixRef<Scalar> out) {
    const Index hidden_layers = network.layer_count() - 1;
    const Index batch = workspace.batch_size_;
    if (hidden_layers == 0) {
      out.setZero();  // u = W_x·x + const
      return;
    }
    propagate_directions(network, workspace, true);
    const Index directions = network.dim() * batch;
    const auto block = [batch](auto& matrix, Index direction) {
      return matrix.middleCols(direction * batch, batch);
    };
    workspace.row_gradients_.resize(hidden_layers);
    workspace.divergence_adjoints_.resize(hidden_layers);
    workspace.propagated_adjoints_.resize(hidden_layers);
    // Backward from the last hidden layer: g_ℓ^i, then δ_ℓ.
    for (Index layer = hidden_layers - 1; layer >= 0; --layer) {
      Matrix<Scalar>& rows = workspace.row_gradients_[layer];
      rows.resize(network.layer_output_size(layer), directions);
      if (layer + 1 == hidden_layers) {
        for (Index direction = 0; direction < network.dim(); ++direction) {
          block(rows, direction).colwise() =
              network.layer_weight(layer + 1).row(direction).transpose();
        }
      } else {
        // row_gradients_[ℓ + 1] already holds σ'(z_{ℓ+1}) ⊙ g_{ℓ+1}^i.
        workspace.products_.multiply_transposed_lhs(network.layer_weight(layer + 1),
                                                    workspace.row_gradients_[layer + 1], rows);
      }
      Matrix<Scalar>& adjoint = workspace.divergence_adjoints_[layer];
      adjoint.setZero(network.layer_output_size(layer), batch);
      for (Index direction = 0; direction < network.dim(); ++direction) {
        adjoint.array() += block(rows, direction).array() *
                           block(workspace.preactivation_tangents_[layer], direction).array();
      }
      adjoint.array() *= workspace.curvatures_[layer].array();
      if (layer + 1 < hidden_layers) {
        Matrix<Scalar>& propagated = workspace.propagated_adjoints_[layer];
        propagated.resize(network.layer_output_size(layer), batch);
        workspace.products_.multiply_transposed_lhs(
            network.layer_weight(layer + 1), workspace.divergence_adjoints_[layer + 1], propagated);
        adjoint.array() += workspace.slopes_[layer].array() * propagated.array();
      }
      if (layer == 0) break;
      for (Index direction = 0; direction < network.dim(); ++direction) {  // for the layer below
        block(rows, direction).array() *= workspace.slopes_[layer].array();
      }
    }
    workspace.products_.multiply_transposed_lhs(network.x_weight(),
                                                workspace.divergence_adjoints_[0], out);
  }

  // The start of jvp and vjp: checks the direction and out (named by @p direction_name and
  // @p out_name) against x, and records the forward pass with slopes in the calling thread's
  // workspace, which it returns.
  static MlpWorkspace<Scalar>& record_product_pass(
      const Network& network, Scalar t, const ConstMatrixRef<Scalar>& x,
      const ConstMatrixRef<Scalar>* cond, const char* direction_name,
      const ConstMatrixRef<Scalar>& direction, const char* out_name, const MatrixRef<Scalar>& out) {
    network.require_batch(x);
    require_shape(direction_name, direction, network.dim(), x.cols());
    require_shape(out_name, out, network.dim(), x.cols());
    MlpWorkspace<Scalar>& workspace = thread_workspace<Scalar>(x.cols());
    network.run_forward(workspace, Time{t, nullptr}, x, cond, Record::slopes);
    return workspace;
  }

  // ∂L/∂W_ℓ = δ_ℓ·h_{ℓ−1}ᵀ and ∂L/∂b_ℓ = Σ_n δ_ℓ[:, n]; for the first layer by column blocks.
  static void write_layer_gradient(const Network& network, MlpWorkspace<Scalar>& workspace,
                                   Index layer, const ConstMatrixRef<Scalar>& delta,
                                   MlpGradient<Scalar>& gradient) {
    auto& weight_gradient = gradient.weights[layer];
    auto& bias_gradient = gradient.biases[layer];
    bias_gradient.noalias() = delta.rowwise().sum();
    ProductBuffers<Scalar>& products = workspace.products_;
    if (layer > 0) {
      products.multiply_transposed_rhs(delta, workspace.hidden_[layer - 1], weight_gradient);
      return;
    }
    const Index dim = network.dim();
    const Index features = network.config().time_embedding.feature_count();
    products.multiply_transposed_rhs(delta, workspace.x_, weight_gradient.leftCols(dim));
    // A shared time enters every column with the same features: Σ_n δ[:, n]·φᵀ.
    if (workspace.time_shared_) {
      weight_gradient.middleCols(dim, features).noalias() =
          bias_gradient * workspace.shared_time_features_.transpose();
    } else {
      products.multiply_transposed_rhs(delta, workspace.time_features_,
                                       weight_gradient.middleCols(dim, features));
    }
    if (network.cond_dim() > 0) {
      products.multiply_transposed_rhs(delta, workspace.cond_,
                                       weight_gradient.rightCols(network.cond_dim()));
    }
  }

  // For every hidden layer of the recorded forward pass, direction_tangents_[ℓ] (column block
  // i = ∂h_ℓ along e_i for every sample) and, if @p keep_preactivations, also
  // preactivation_tangents_[ℓ] (column block i = a_ℓ^i = ∂z_ℓ/∂x_i).
  static void propagate_directions(const Network& network, MlpWorkspace<Scalar>& workspace,
                                   bool keep_preactivations) {
    const Index batch = workspace.batch_size_;
    const Index dim = network.dim();
    const Index hidden_layers = network.layer_count() - 1;
    workspace.direction_tangents_.resize(hidden_layers);
    if (keep_preactivations) workspace.preactivation_tangents_.resize(hidden_layers);
    for (Index layer = 0; layer < hidden_layers; ++layer) {
      Matrix<Scalar>& tangents = workspace.direction_tangents_[layer];
      tangents.resize(network.layer_output_size(layer), dim * batch);
      if (keep_preactivations) {
        workspace.preactivation_tangents_[layer].resize(tangents.rows(), tangents.cols());
      }
      // One direction block at a time, so that the block is still in cache when it is scaled.
      for (Index direction = 0; direction < dim; ++direction) {
        auto scaled = tangents.middleCols(direction * batch, batch);
        if (layer == 0) {
          // a₀^i = W_x[:, i], ∂h₀ along e_i = σ'(z₀) ⊙ W_x[:, i].
          const auto column = network.x_weight().col(direction);
          scaled.array() = workspace.slopes_[0].array().colwise() * column.array();
          if (keep_preactivations) {
            workspace.preactivation_tangents_[0].middleCols(direction * batch, batch).colwise() =
                column;
          }
          continue;
        }
        const auto previous =
            workspace.direction_tangents_[layer - 1].middleCols(direction * batch, batch);
        // Each block of the product is scaled by σ' as soon as it is complete. The product
        // before this one, if any, was the previous direction's, with the same weights.
        const Matrix<Scalar>& slopes = workspace.slopes_[layer];
        const bool same_weights = direction > 0;
        if (keep_preactivations) {
          auto preactivation =
              workspace.preactivation_tangents_[layer].middleCols(direction * batch, batch);
          workspace.products_.multiply_and_finish(
              network.layer_weight(layer), previous, preactivation,
              [&](Index row, Index col, Index rows, Index cols) {
                scaled.block(row, col, rows, cols).array() =
                    preactivation.block(row, col, rows, cols).array() *
                    slopes.block(row, col, rows, cols).array();
              },
              same_weights);
        } else {
          workspace.products_.multiply_and_finish(
              network.layer_weight(layer), previous, scaled,
              [&](Index row, Index col, Index rows, Index cols) {
                scaled.block(row, col, rows, cols).array() *=
                    slopes.block(row, col, rows, cols).array();
              },
              same_weights);
        }
      }
    }
  }
};

}  // namespace flowmatch::detail
