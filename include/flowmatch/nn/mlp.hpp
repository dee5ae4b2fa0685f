/// @file mlp.hpp
/// @brief A multilayer perceptron velocity field u_θ(t, x[, c]) with exact derivatives.
///
/// The network is a chain of L = hidden.size() + 1 linear layers with the same layout as a
/// PyTorch `nn.Sequential(nn.Linear, activation, nn.Linear, ..., nn.Linear)`:
///
///     h₋₁ = [x, φ(t), c]                 (dim + time features + cond_dim inputs)
///     z_ℓ = W_ℓ·h_{ℓ−1} + b_ℓ,   W_ℓ out×in (nn.Linear's weight), b_ℓ length out
///     h_ℓ = σ(z_ℓ)                       for the hidden layers ℓ = 0, …, L − 2
///     u   = z_{L−1}                      (no activation after the last layer)
///
/// φ(t) are the time features of nn/time_embedding.hpp and c is present only for a conditional
/// network (cond_dim > 0). Batches are d×N matrices, one column per sample; the first layer is
/// evaluated as W_x·x + W_t·φ(t) + W_c·c + b₀ with the column blocks of W₀, never building the
/// concatenated input.
///
/// Derivatives are exact and written for the network: forward-mode tangents
/// ∂h_ℓ = σ'(z_ℓ) ⊙ (W_ℓ·∂h_{ℓ−1}) for jvp and divergence, and the backward pass
/// ∂L/∂z_ℓ = σ'(z_ℓ) ⊙ (W_{ℓ+1}ᵀ·∂L/∂z_{ℓ+1}) for vjp and the parameter gradients.
///
/// Workspaces: the forms that take an MlpWorkspace use only its buffers and do not allocate
/// once it is sized for the batch. The forms without one (operator(), jvp, divergence, vjp) use
/// thread_local workspaces of the calling thread, so concurrent const calls from several
/// threads are safe. Each thread keeps one workspace for each of the last four batch sizes it
/// evaluated, shared by every Mlp<Scalar> of the thread, so they reallocate only when the
/// network shape changes or a fifth batch size comes between calls. operator() evaluates a
/// batch in panels of 256 columns, so its workspace stays small and in cache whatever N; for
/// more columns than that its results may differ from forward() on the same batch by rounding.
///
/// Inputs: x must be dim×N, cond cond_dim×N and finite, a per-sample time a finite length-N
/// vector, a shared time finite; otherwise std::invalid_argument. Non-finite entries of x are
/// not rejected: they give non-finite velocities, which the solvers report as numerical_error.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/nn/activation.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"
#include "flowmatch/nn/time_embedding.hpp"

namespace flowmatch {

namespace detail {

// Eigen's packet types are SIMD vector types, whose alignment attributes GCC reports as
// ignored when they are template arguments; Eigen silences the same warning in its headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"

/// SiLU σ(z) = z·s(z) and σ'(z) of one packet of pre-activations, from e = e^(−|z|),
/// L = 1/(1 + e) = s(|z|) and S = e·L = s(−|z|), none of which overflows: s(z) = L for z ≥ 0
/// and S otherwise, and since s·(1 − s) = L·S, σ' = s·(1 + z·(1 − s)) = s + z·L·S.
template <class Packet>
EIGEN_ALWAYS_INLINE void silu_packet(const Packet& z, Packet& value, Packet& slope) {
  namespace packet = Eigen::internal;
  const Packet one = packet::pset1<Packet>(1);
  const Packet decay = packet::pexp(packet::pnegate(packet::pabs(z)));
  const Packet large = packet::pdiv(one, packet::padd(one, decay));
  const Packet small = packet::pmul(decay, large);
  const Packet sigmoid = packet::pselect(packet::pcmp_lt(z, packet::pzero(z)), small, large);
  value = packet::pmul(z, sigmoid);
  slope = packet::padd(sigmoid, packet::pmul(z, packet::pmul(large, small)));
}

/// values(:, n) ← σ(values(:, n) + bias) for SiLU, and σ' into *slopes unless null, in one
/// vectorised pass. A column's rows are processed in packets, the last partial packet through
/// a zero-padded copy, so every column is computed the same way wherever it is in the batch.
template <class Scalar>
void add_bias_and_apply_silu(Matrix<Scalar>& values, const Vector<Scalar>& bias,
                             Matrix<Scalar>* slopes) {
  namespace packet = Eigen::internal;
  using Packet = typename packet::packet_traits<Scalar>::type;
  constexpr Index width = packet::packet_traits<Scalar>::size;
  const Index rows = values.rows();
  const Index full_rows = rows - rows % width;
  if (slopes != nullptr) slopes->resize(rows, values.cols());
  const auto run = [&](auto with_slopes) {
    for (Index col = 0; col < values.cols(); ++col) {
      Scalar* column = values.data() + col * rows;
      Scalar* slope_column = with_slopes ? slopes->data() + col * rows : nullptr;
      Packet value;
      Packet slope;
      for (Index row = 0; row < full_rows; row += width) {
        silu_packet(packet::padd(packet::ploadu<Packet>(column + row),
                                 packet::ploadu<Packet>(bias.data() + row)),
                    value, slope);
        packet::pstoreu(column + row, value);
        if constexpr (with_slopes) packet::pstoreu(slope_column + row, slope);
      }
      if (full_rows == rows) continue;
      Scalar padded[width] = {};
      for (Index row = full_rows; row < rows; ++row) {
        padded[row - full_rows] = column[row] + bias(row);
      }
      silu_packet(packet::ploadu<Packet>(padded), value, slope);
      Scalar value_lanes[width];
      Scalar slope_lanes[width];
      packet::pstoreu(value_lanes, value);
      packet::pstoreu(slope_lanes, slope);
      for (Index row = full_rows; row < rows; ++row) {
        column[row] = value_lanes[row - full_rows];
        if constexpr (with_slopes) slope_column[row] = slope_lanes[row - full_rows];
      }
    }
  };
  if (slopes != nullptr) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
}

#pragma GCC diagnostic pop

}  // namespace detail

/// The shape of an Mlp.
struct MlpConfig {
  Index dim = 1;                             ///< d, the size of x and of the output.
  Index cond_dim = 0;                        ///< k, the size of a condition; 0 = unconditional.
  std::vector<Index> hidden;                 ///< widths of the hidden layers (may be empty).
  Activation activation = Activation::silu;  ///< between every two linear layers.
  TimeEmbedding time_embedding{};            ///< raw time by default.

  /// The size of the concatenated input [x, φ(t), c].
  [[nodiscard]] Index input_size() const { return dim + time_embedding.feature_count() + cond_dim; }

  /// Throws std::invalid_argument unless dim ≥ 1, cond_dim ≥ 0, every hidden width ≥ 1, the
  /// activation is valid and the time embedding is valid.
  void validate() const {
    if (dim < 1) {
      throw std::invalid_argument("MlpConfig: dim is " + detail::to_text(dim) +
                                  ", expected at least 1");
    }
    if (cond_dim < 0) {
      throw std::invalid_argument("MlpConfig: cond_dim is " + detail::to_text(cond_dim) +
                                  ", expected at least 0");
    }
    for (std::size_t layer = 0; layer < hidden.size(); ++layer) {
      if (hidden[layer] < 1) {
        throw std::invalid_argument("MlpConfig: hidden[" + detail::to_text(layer) + "] is " +
                                    detail::to_text(hidden[layer]) + ", expected at least 1");
      }
    }
    static_cast<void>(activation_name(activation));  // throws for a value outside the enum
    time_embedding.validate();
  }

  friend bool operator==(const MlpConfig&, const MlpConfig&) = default;
};

/// A multilayer perceptron velocity field (see the file comment for the exact layout).
/// A VelocityField with HasJvp, HasVjp, HasDivergence and HasDivergenceGradient.
template <class Scalar = double>
class Mlp {
 public:
  using scalar_type = Scalar;

  /// A network of shape @p config with every weight and bias zero.
  /// Throws std::invalid_argument for an invalid config (MlpConfig::validate).
  explicit Mlp(MlpConfig config) : config_(std::move(config)) {
    config_.validate();
    const Index layers = layer_count();
    weights_.reserve(layers);
    biases_.reserve(layers);
    for (Index layer = 0; layer < layers; ++layer) {
      weights_.push_back(Matrix<Scalar>::Zero(layer_output_size(layer), layer_input_size(layer)));
      biases_.push_back(Vector<Scalar>::Zero(layer_output_size(layer)));
    }
  }

  /// A network of shape @p config initialised as PyTorch's nn.Linear: every weight and bias of
  /// a layer with `in` inputs drawn from U(−1/√in, 1/√in) using @p generator.
  template <std::uniform_random_bit_generator Generator>
  Mlp(MlpConfig config, Generator& generator) : Mlp(std::move(config)) {
    for (Index layer = 0; layer < layer_count(); ++layer) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(layer_input_size(layer)));
      std::uniform_real_distribution<double> uniform(-bound, bound);
      for (Scalar& value : weights_[layer].reshaped()) value = Scalar(uniform(generator));
      for (Scalar& value : biases_[layer]) value = Scalar(uniform(generator));
    }
  }

  /// The shape of the network.
  [[nodiscard]] const MlpConfig& config() const { return config_; }
  /// d, the size of x and of the velocity.
  [[nodiscard]] Index dim() const { return config_.dim; }
  /// k, the size of a condition (0 for an unconditional network).
  [[nodiscard]] Index cond_dim() const { return config_.cond_dim; }
  /// The number of linear layers, hidden.size() + 1.
  [[nodiscard]] Index layer_count() const { return static_cast<Index>(config_.hidden.size()) + 1; }
  /// The number of inputs of linear layer @p layer (the first takes [x, φ(t), c]).
  [[nodiscard]] Index layer_input_size(Index layer) const {
    check_layer(layer);
    return layer == 0 ? config_.input_size() : config_.hidden[layer - 1];
  }
  /// The number of outputs of linear layer @p layer (the last gives dim).
  [[nodiscard]] Index layer_output_size(Index layer) const {
    check_layer(layer);
    return layer == layer_count() - 1 ? config_.dim : config_.hidden[layer];
  }

  /// W_ℓ, out×in, as nn.Linear's weight.
  [[nodiscard]] const Matrix<Scalar>& weight(Index layer) const {
    check_layer(layer);
    return weights_[layer];
  }
  /// b_ℓ, length out.
  [[nodiscard]] const Vector<Scalar>& bias(Index layer) const {
    check_layer(layer);
    return biases_[layer];
  }
  /// W_ℓ, writable in place (for an optimiser step); its shape cannot change.
  [[nodiscard]] MatrixRef<Scalar> weight(Index layer) {
    check_layer(layer);
    return weights_[layer];
  }
  /// b_ℓ, writable in place; its length cannot change.
  [[nodiscard]] VectorRef<Scalar> bias(Index layer) {
    check_layer(layer);
    return biases_[layer];
  }
  /// Replaces W_ℓ. Throws std::invalid_argument unless @p weight is out×in and finite.
  void set_weight(Index layer, const ConstMatrixRef<Scalar>& weight) {
    check_layer(layer);
    detail::require_shape("Mlp::set_weight: weight", weight, layer_output_size(layer),
                          layer_input_size(layer));
    detail::require_finite("Mlp::set_weight: weight", weight);
    weights_[layer] = weight;
  }
  /// Replaces b_ℓ. Throws std::invalid_argument unless @p bias has length out and is finite.
  void set_bias(Index layer, const ConstVectorRef<Scalar>& bias) {
    check_layer(layer);
    detail::require_shape("Mlp::set_bias: bias", bias, layer_output_size(layer), 1);
    detail::require_finite("Mlp::set_bias: bias", bias);
    biases_[layer] = bias;
  }

  /// The same network with its parameters converted to scalar type @p Other.
  template <class Other>
  [[nodiscard]] Mlp<Other> cast() const {
    Mlp<Other> converted(config_);
    for (Index layer = 0; layer < layer_count(); ++layer) {
      converted.set_weight(layer, weights_[layer].template cast<Other>());
      converted.set_bias(layer, biases_[layer].template cast<Other>());
    }
    return converted;
  }

  /// A gradient of the shapes of the parameters, all zero.
  [[nodiscard]] MlpGradient<Scalar> zero_gradient() const {
    MlpGradient<Scalar> gradient;
    for (Index layer = 0; layer < layer_count(); ++layer) {
      gradient.weights.push_back(
          Matrix<Scalar>::Zero(weights_[layer].rows(), weights_[layer].cols()));
      gradient.biases.push_back(Vector<Scalar>::Zero(biases_[layer].size()));
    }
    return gradient;
  }

  /// @name Evaluation with the calling thread's workspace
  /// u(t, x) into @p out (dim×N), one time for the whole batch, [optionally one condition per
  /// column of @p cond], or one time per sample (@p t of length N, as in training).
  ///@{
  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    evaluate_in_panels(SharedOrPerSampleTime{t, nullptr}, x, nullptr, out);
  }
  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
                  MatrixRef<Scalar> out) const {
    evaluate_in_panels(SharedOrPerSampleTime{t, nullptr}, x, &cond, out);
  }
  void operator()(const ConstVectorRef<Scalar>& t, const ConstMatrixRef<Scalar>& x,
                  MatrixRef<Scalar> out) const {
    evaluate_in_panels(SharedOrPerSampleTime{Scalar(0), &t}, x, nullptr, out);
  }
  void operator()(const ConstVectorRef<Scalar>& t, const ConstMatrixRef<Scalar>& x,
                  const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> out) const {
    evaluate_in_panels(SharedOrPerSampleTime{Scalar(0), &t}, x, &cond, out);
  }
  ///@}

  /// @name Recorded evaluation in a caller-owned workspace
  /// As operator(), and @p workspace keeps what backward() needs.
  ///@{
  void forward(MlpWorkspace<Scalar>& workspace, Scalar t, const ConstMatrixRef<Scalar>& x,
               MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{t, nullptr}, x, nullptr, out, true);
  }
  void forward(MlpWorkspace<Scalar>& workspace, Scalar t, const ConstMatrixRef<Scalar>& x,
               const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{t, nullptr}, x, &cond, out, true);
  }
  void forward(MlpWorkspace<Scalar>& workspace, const ConstVectorRef<Scalar>& t,
               const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{Scalar(0), &t}, x, nullptr, out, true);
  }
  void forward(MlpWorkspace<Scalar>& workspace, const ConstVectorRef<Scalar>& t,
               const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
               MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{Scalar(0), &t}, x, &cond, out, true);
  }
  ///@}

  /// Backward pass of the last forward() recorded in @p workspace by this network: given
  /// G = ∂L/∂u (dim×N), overwrites @p gradient with ∂L/∂W_ℓ and ∂L/∂b_ℓ (resizing it on first
  /// use). Throws std::invalid_argument if @p workspace holds no forward pass of this network or
  /// G is not dim×N and finite. The parameters must not change between forward and backward.
  void backward(MlpWorkspace<Scalar>& workspace, const ConstMatrixRef<Scalar>& output_gradient,
                MlpGradient<Scalar>& gradient) const {
    run_backward(workspace, output_gradient, &gradient, false);
  }

  /// As backward(), and also writes ∂L/∂x (dim×N) into @p x_gradient.
  void backward(MlpWorkspace<Scalar>& workspace, const ConstMatrixRef<Scalar>& output_gradient,
                MlpGradient<Scalar>& gradient, MatrixRef<Scalar> x_gradient) const {
    detail::require_shape("Mlp::backward: x_gradient", x_gradient, dim(), workspace.batch_size());
    run_backward(workspace, output_gradient, &gradient, true);
    x_gradient = workspace.output_;
  }

  /// @name Jacobian-vector product
  /// (∂u/∂x)·tangent for each sample into @p out (tangent and out dim×N).
  ///@{
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const {
    run_jvp(t, x, nullptr, tangent, out);
  }
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
           const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) const {
    run_jvp(t, x, &cond, tangent, out);
  }
  ///@}

  /// @name Vector-Jacobian product
  /// (∂u/∂x)ᵀ·cotangent for each sample, the x-gradient of ⟨cotangent, u⟩, into @p out.
  ///@{
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const {
    run_vjp(t, x, nullptr, cotangent, out);
  }
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
           const ConstMatrixRef<Scalar>& cotangent, MatrixRef<Scalar> out) const {
    run_vjp(t, x, &cond, cotangent, out);
  }
  ///@}

  /// @name Exact divergence
  /// ∇ₓ·u = trace(∂u/∂x) for each sample into @p out (length N). With one hidden layer,
  /// div = Σ_j σ'(z_j)·Σ_i W₁[i,j]·W₀[j,i]; with more, the d tangent directions e_1..e_d are
  /// propagated together as one width×(d·N) block per layer (cost of about d forward passes).
  ///@{
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const {
    run_divergence(t, x, nullptr, out);
  }
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
                  VectorRef<Scalar> out) const {
    run_divergence(t, x, &cond, out);
  }
  ///@}

  /// @name Velocity with exact divergence
  /// u(t, x) into @p velocity (dim×N) and ∇ₓ·u into @p divergence (length N) from one forward
  /// pass: the velocity is the primal of the divergence's pass, so this costs what divergence()
  /// costs. Same values as operator() and divergence() up to rounding (the whole batch is one
  /// product here, operator() works in panels).
  ///@{
  void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> velocity,
                           VectorRef<Scalar> divergence) const {
    require_batch(x);
    detail::require_shape("Mlp::velocity_divergence: velocity", velocity, dim(), x.cols());
    run_divergence(t, x, nullptr, divergence, &velocity);
  }
  void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> velocity,
                           VectorRef<Scalar> divergence) const {
    require_batch(x);
    detail::require_shape("Mlp::velocity_divergence: velocity", velocity, dim(), x.cols());
    run_divergence(t, x, &cond, divergence, &velocity);
  }
  ///@}

  /// @name Exact gradient of the divergence
  /// ∇ₓ(∇·u) for each sample into @p out (dim×N), t and c held fixed: reverse mode through the
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
  /// through the later layers. One hidden layer gives W_xᵀ(σ''(z₀) ⊙ c), c_j = Σ_i W₁[i,j]·W₀[j,i];
  /// no hidden layer gives 0. Cost: about 2·d forward passes. σ'' takes the one-sided value at a
  /// kink (nn/activation.hpp), so the gradient is zero for relu and leaky_relu networks. The
  /// buffers are thread_local, as for operator().
  /// Throws std::invalid_argument as divergence() does, or if @p out is not dim×N.
  ///@{
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    run_divergence_gradient(t, x, nullptr, out);
  }
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> out) const {
    run_divergence_gradient(t, x, &cond, out);
  }
  ///@}

 private:
  // The time argument: one shared time, or per_sample pointing to a length-N vector.
  struct SharedOrPerSampleTime {
    Scalar shared;
    const ConstVectorRef<Scalar>* per_sample;
  };

  void check_layer(Index layer) const {
    if (layer < 0 || layer >= layer_count()) {
      throw std::invalid_argument("Mlp: layer is " + detail::to_text(layer) + ", expected 0 to " +
                                  detail::to_text(layer_count() - 1));
    }
  }

  // The calling thread's Workspace (MlpWorkspace, or CurvatureWorkspace for the divergence
  // gradient) for a batch of @p batch columns. Each thread keeps a few of each type, for the
  // batch sizes it evaluated last, so that alternating sizes (the full chunks and the shorter
  // last chunks of ParallelField) do not reallocate at every call. A size not among them takes
  // the workspace used least recently.
  template <class Workspace = MlpWorkspace<Scalar>>
  static Workspace& thread_workspace(Index batch) {
    constexpr int slots = 4;
    thread_local Workspace workspaces[slots];
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

  // Column blocks of W₀ acting on x, on the time features and on the condition.
  [[nodiscard]] auto x_weight() const { return weights_[0].leftCols(dim()); }
  [[nodiscard]] auto time_weight() const {
    return weights_[0].middleCols(dim(), config_.time_embedding.feature_count());
  }
  [[nodiscard]] auto cond_weight() const { return weights_[0].rightCols(cond_dim()); }

  void evaluate(MlpWorkspace<Scalar>& workspace, SharedOrPerSampleTime time,
                const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
                MatrixRef<Scalar> out, bool with_slopes) const {
    require_batch(x);
    detail::require_shape("Mlp: out", out, dim(), x.cols());
    run_forward(workspace, time, x, cond, with_slopes, &out);
  }

  // Evaluation without recording, over panels of at most panel_columns columns, each with
  // the calling thread's workspace for its size: the hidden activations of a panel stay in
  // cache, and the workspace holds panel_columns columns whatever N (memory O(N·d) for the
  // batch and O(panel_columns·h) for the network). Panels are disjoint, so out may alias x.
  static constexpr Index panel_columns = 256;

  void evaluate_in_panels(SharedOrPerSampleTime time, const ConstMatrixRef<Scalar>& x,
                          const ConstMatrixRef<Scalar>* cond, MatrixRef<Scalar> out) const {
    validate_inputs(time, x, cond);
    detail::require_shape("Mlp: out", out, dim(), x.cols());
    const Index batch = x.cols();
    for (Index begin = 0; begin == 0 || begin < batch; begin += panel_columns) {
      const Index columns = std::min(panel_columns, batch - begin);
      const auto run_panel = [&](SharedOrPerSampleTime panel_time) {
        MatrixRef<Scalar> out_panel = out.middleCols(begin, columns);
        MlpWorkspace<Scalar>& workspace = thread_workspace(columns);
        if (cond == nullptr) {
          run_forward(workspace, panel_time, x.middleCols(begin, columns), nullptr, false,
                      &out_panel);
          return;
        }
        const ConstMatrixRef<Scalar> cond_panel = cond->middleCols(begin, columns);
        run_forward(workspace, panel_time, x.middleCols(begin, columns), &cond_panel, false,
                    &out_panel);
      };
      if (time.per_sample == nullptr) {
        run_panel(time);
      } else {
        const ConstVectorRef<Scalar> panel_times = time.per_sample->segment(begin, columns);
        run_panel(SharedOrPerSampleTime{time.shared, &panel_times});
      }
    }
  }

  MatrixRef<Scalar> prepare_output(MlpWorkspace<Scalar>& workspace, Index batch) const {
    workspace.output_.resize(dim(), batch);
    return workspace.output_;
  }

  // h = σ(z + bias) in place for the pre-activations z = @p values without bias (width×N),
  // and σ'(z + bias) into *slopes unless null. SiLU, the default activation, takes a vectorised
  // pass (detail::add_bias_and_apply_silu); the others add the bias, then apply the activation.
  void activate(Matrix<Scalar>& values, const Vector<Scalar>& bias, Matrix<Scalar>* slopes) const {
    if constexpr (std::is_floating_point_v<Scalar>) {
      if (config_.activation == Activation::silu) {
        detail::add_bias_and_apply_silu(values, bias, slopes);
        return;
      }
    }
    values.colwise() += bias;
    detail::apply_activation(config_.activation, values, slopes);
  }

  // Throws naming x unless it is a dim×N batch. Checked before the other arguments, whose
  // expected shapes follow from x: a transposed x (N×dim) is blamed on x, not on out.
  void require_batch(const ConstMatrixRef<Scalar>& x) const {
    if (x.rows() == dim()) return;
    throw std::invalid_argument(
        "Mlp: x has shape " + detail::to_text(x.rows()) + "x" + detail::to_text(x.cols()) +
        ", expected " + detail::to_text(dim()) + " rows (dim×N, one column per sample)" +
        (x.cols() == dim() ? "; x may be transposed: an N×dim batch is passed as x.transpose()"
                           : ""));
  }

  void validate_inputs(SharedOrPerSampleTime time, const ConstMatrixRef<Scalar>& x,
                       const ConstMatrixRef<Scalar>* cond) const {
    require_batch(x);
    if (time.per_sample != nullptr) {
      const ConstVectorRef<Scalar>& times = *time.per_sample;
      detail::require_shape("Mlp: t", times, x.cols(), 1);
      for (Index sample = 0; sample < times.size(); ++sample) {
        if (!std::isfinite(times(sample))) {
          throw std::invalid_argument("Mlp: t must be finite, got " +
                                      detail::to_text(times(sample)) + " at sample " +
                                      detail::to_text(sample));
        }
      }
    } else {
      detail::require_finite_value("Mlp: t", time.shared);
    }
    if (cond_dim() > 0 && cond == nullptr) {
      throw std::invalid_argument("Mlp: the network is conditional (cond_dim = " +
                                  detail::to_text(cond_dim()) + "), expected a condition matrix");
    }
    if (cond_dim() == 0 && cond != nullptr) {
      throw std::invalid_argument(
          "Mlp: the network is unconditional (cond_dim = 0), got a condition matrix");
    }
    if (cond != nullptr) {
      detail::require_shape("Mlp: cond", *cond, cond_dim(), x.cols());
      detail::require_finite("Mlp: cond", *cond);
    }
  }

  // Evaluates the network into *output (workspace.output_ if null), recording hidden
  // activations and, if with_slopes, σ'(z) of every hidden layer and the inputs (what
  // backward() needs). Reads x and cond only before writing *output, which may alias them.
  void run_forward(MlpWorkspace<Scalar>& workspace, SharedOrPerSampleTime time,
                   const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
                   bool with_slopes, MatrixRef<Scalar>* output = nullptr) const {
    validate_inputs(time, x, cond);
    const Index batch = x.cols();
    const Index layers = layer_count();
    workspace.network_ = nullptr;
    if (with_slopes) {
      workspace.x_ = x;
      if (cond != nullptr) workspace.cond_ = *cond;
    }
    const TimeEmbedding& embedding = config_.time_embedding;
    workspace.time_shared_ = time.per_sample == nullptr;
    if (workspace.time_shared_) {
      workspace.shared_time_features_.resize(embedding.feature_count());
      embedding.features(time.shared, workspace.shared_time_features_);
    } else {
      workspace.time_features_.resize(embedding.feature_count(), batch);
      for (Index sample = 0; sample < batch; ++sample) {
        embedding.features((*time.per_sample)(sample), workspace.time_features_.col(sample));
      }
    }
    workspace.hidden_.resize(layers - 1);
    workspace.slopes_.resize(layers - 1);

    // z₀ = W_x·x + W_t·φ(t) + W_c·c + b₀.
    // The bias of a hidden layer is added by the activation pass, of the output layer here.
    Matrix<Scalar>& first = layers == 1 ? workspace.output_ : workspace.hidden_[0];
    first.resize(layer_output_size(0), batch);
    detail::ProductBuffers<Scalar>& products = workspace.products_;
    products.multiply(x_weight(), x, first);
    if (workspace.time_shared_) {
      workspace.first_bias_.noalias() = time_weight() * workspace.shared_time_features_;
      workspace.first_bias_ += biases_[0];
    } else {
      products.multiply(time_weight(), workspace.time_features_, first, true);
      workspace.first_bias_ = biases_[0];
    }
    if (cond != nullptr) products.multiply(cond_weight(), *cond, first, true);
    if (layers == 1) {
      first.colwise() += workspace.first_bias_;
      if (output != nullptr) *output = first;
    }

    for (Index layer = 0; layer + 1 < layers; ++layer) {
      activate(workspace.hidden_[layer], layer == 0 ? workspace.first_bias_ : biases_[layer],
               with_slopes ? &workspace.slopes_[layer] : nullptr);
      const Matrix<Scalar>& hidden = workspace.hidden_[layer];
      if (layer + 2 == layers) {
        MatrixRef<Scalar> last = output != nullptr ? *output : prepare_output(workspace, batch);
        products.multiply(weights_[layer + 1], hidden, last);
        last.colwise() += biases_[layer + 1];
        break;
      }
      Matrix<Scalar>& next = workspace.hidden_[layer + 1];
      next.resize(layer_output_size(layer + 1), batch);
      products.multiply(weights_[layer + 1], hidden, next);
    }
    workspace.network_ = this;
    workspace.has_slopes_ = with_slopes;
    workspace.batch_size_ = batch;
  }

  // Propagates G = ∂L/∂u back through the recorded forward pass: parameter gradients into
  // *gradient (if not null), ∂L/∂x into workspace.output_ (if x_gradient).
  void run_backward(MlpWorkspace<Scalar>& workspace, const ConstMatrixRef<Scalar>& output_gradient,
                    MlpGradient<Scalar>* gradient, bool x_gradient) const {
    if (workspace.network_ != this || !workspace.has_slopes_) {
      throw std::invalid_argument(
          "Mlp::backward: the workspace holds no forward pass of this network, expected a call "
          "to forward() with the same workspace first");
    }
    const Index batch = workspace.batch_size_;
    detail::require_shape("Mlp::backward: output_gradient", output_gradient, dim(), batch);
    detail::require_finite("Mlp::backward: output_gradient", output_gradient);
    const Index layers = layer_count();
    if (gradient != nullptr) {
      gradient->weights.resize(layers);
      gradient->biases.resize(layers);
    }
    workspace.layer_scratch_.resize(layers - 1);
    for (Index layer = layers - 1; layer >= 0; --layer) {
      // δ_ℓ = ∂L/∂z_ℓ: G for the last layer, computed below for the hidden ones.
      const ConstMatrixRef<Scalar> delta =
          layer == layers - 1 ? output_gradient
                              : ConstMatrixRef<Scalar>(workspace.layer_scratch_[layer]);
      if (gradient != nullptr) {
        write_layer_gradient(workspace, layer, delta, *gradient);
      }
      if (layer > 0) {
        Matrix<Scalar>& previous = workspace.layer_scratch_[layer - 1];
        previous.resize(layer_input_size(layer), batch);
        workspace.products_.multiply_transposed_lhs(weights_[layer], delta, previous);
        previous.array() *= workspace.slopes_[layer - 1].array();
      } else if (x_gradient) {
        workspace.output_.resize(dim(), batch);
        workspace.products_.multiply_transposed_lhs(x_weight(), delta, workspace.output_);
      }
    }
  }

  // ∂L/∂W_ℓ = δ_ℓ·h_{ℓ−1}ᵀ and ∂L/∂b_ℓ = Σ_n δ_ℓ[:, n]; for the first layer by column blocks.
  void write_layer_gradient(MlpWorkspace<Scalar>& workspace, Index layer,
                            const ConstMatrixRef<Scalar>& delta,
                            MlpGradient<Scalar>& gradient) const {
    Matrix<Scalar>& weight_gradient = gradient.weights[layer];
    Vector<Scalar>& bias_gradient = gradient.biases[layer];
    weight_gradient.resize(weights_[layer].rows(), weights_[layer].cols());
    bias_gradient.noalias() = delta.rowwise().sum();
    detail::ProductBuffers<Scalar>& products = workspace.products_;
    if (layer > 0) {
      products.multiply_transposed_rhs(delta, workspace.hidden_[layer - 1], weight_gradient);
      return;
    }
    const Index features = config_.time_embedding.feature_count();
    products.multiply_transposed_rhs(delta, workspace.x_, weight_gradient.leftCols(dim()));
    // A shared time enters every column with the same features: Σ_n δ[:, n]·φᵀ.
    if (workspace.time_shared_) {
      weight_gradient.middleCols(dim(), features).noalias() =
          bias_gradient * workspace.shared_time_features_.transpose();
    } else {
      products.multiply_transposed_rhs(delta, workspace.time_features_,
                                       weight_gradient.middleCols(dim(), features));
    }
    if (cond_dim() > 0) {
      products.multiply_transposed_rhs(delta, workspace.cond_,
                                       weight_gradient.rightCols(cond_dim()));
    }
  }

  void run_jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
               const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) const {
    require_batch(x);
    detail::require_shape("Mlp::jvp: tangent", tangent, dim(), x.cols());
    detail::require_shape("Mlp::jvp: out", out, dim(), x.cols());
    MlpWorkspace<Scalar>& workspace = thread_workspace(x.cols());
    run_forward(workspace, SharedOrPerSampleTime{t, nullptr}, x, cond, true);
    const Index layers = layer_count();
    const Index batch = x.cols();
    workspace.layer_scratch_.resize(layers - 1);
    // ∂z₀ = W_x·tangent (t and c are held fixed), then ∂h_ℓ = σ'(z_ℓ) ⊙ ∂z_ℓ.
    Matrix<Scalar>& first = layers == 1 ? workspace.output_ : workspace.layer_scratch_[0];
    first.resize(layer_output_size(0), batch);
    workspace.products_.multiply(x_weight(), tangent, first);
    for (Index layer = 0; layer + 1 < layers; ++layer) {
      workspace.layer_scratch_[layer].array() *= workspace.slopes_[layer].array();
      Matrix<Scalar>& next =
          layer + 2 == layers ? workspace.output_ : workspace.layer_scratch_[layer + 1];
      next.resize(layer_output_size(layer + 1), batch);
      workspace.products_.multiply(weights_[layer + 1], workspace.layer_scratch_[layer], next);
    }
    out = workspace.output_;
  }

  void run_vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
               const ConstMatrixRef<Scalar>& cotangent, MatrixRef<Scalar> out) const {
    require_batch(x);
    detail::require_shape("Mlp::vjp: cotangent", cotangent, dim(), x.cols());
    detail::require_shape("Mlp::vjp: out", out, dim(), x.cols());
    MlpWorkspace<Scalar>& workspace = thread_workspace(x.cols());
    run_forward(workspace, SharedOrPerSampleTime{t, nullptr}, x, cond, true);
    run_backward(workspace, cotangent, nullptr, true);
    out = workspace.output_;
  }

  // ∇·u into out, and u into *velocity unless null (which must not alias x).
  void run_divergence(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
                      VectorRef<Scalar> out, MatrixRef<Scalar>* velocity = nullptr) const {
    require_batch(x);
    detail::require_shape("Mlp::divergence: out", out, x.cols(), 1);
    MlpWorkspace<Scalar>& workspace = thread_workspace(x.cols());
    run_forward(workspace, SharedOrPerSampleTime{t, nullptr}, x, cond, true, velocity);
    const Index layers = layer_count();
    if (layers == 1) {
      out.setConstant(x_weight().trace());  // u = W_x·x + const
      return;
    }
    if (layers == 2) {
      // div = Σ_j σ'(z_j)·c_j with c_j = Σ_i W₁[i,j]·W₀[j,i].
      workspace.trace_weights_.noalias() =
          (weights_[1].transpose().array() * x_weight().array()).rowwise().sum().matrix();
      out.noalias() = workspace.slopes_[0].transpose() * workspace.trace_weights_;
      return;
    }
    propagate_directions(workspace);
    // div_n = Σ_i ∂u_i/∂x_i = Σ_i W_{L−1}[i, :]·∂h_{L−2} along e_i at sample n.
    const Index batch = x.cols();
    const Matrix<Scalar>& last_tangents = workspace.direction_tangents_[layers - 2];
    out.setZero();
    for (Index direction = 0; direction < dim(); ++direction) {
      out.transpose().noalias() +=
          weights_[layers - 1].row(direction) * last_tangents.middleCols(direction * batch, batch);
    }
  }

  // Fills direction_tangents_[ℓ] (width_ℓ×(dim·N), column block i = ∂h_ℓ along e_i for every
  // sample) for every hidden layer of the recorded forward pass.
  void propagate_directions(MlpWorkspace<Scalar>& workspace) const {
    const Index batch = workspace.batch_size_;
    const Index hidden_layers = layer_count() - 1;
    workspace.direction_tangents_.resize(hidden_layers);
    for (Index layer = 0; layer < hidden_layers; ++layer) {
      Matrix<Scalar>& tangents = workspace.direction_tangents_[layer];
      tangents.resize(layer_output_size(layer), dim() * batch);
      if (layer == 0) {
        // ∂h₀ along e_i = σ'(z₀) ⊙ W_x[:, i].
        for (Index direction = 0; direction < dim(); ++direction) {
          tangents.middleCols(direction * batch, batch).array() =
              workspace.slopes_[0].array().colwise() * x_weight().col(direction).array();
        }
        continue;
      }
      // One direction block at a time, so that the block is still in cache when it is scaled.
      for (Index direction = 0; direction < dim(); ++direction) {
        auto block = tangents.middleCols(direction * batch, batch);
        workspace.products_.multiply(
            weights_[layer],
            workspace.direction_tangents_[layer - 1].middleCols(direction * batch, batch), block);
        block.array() *= workspace.slopes_[layer].array();
      }
    }
  }

  // Buffers of divergence_gradient, one entry per hidden layer ℓ; direction blocks are
  // width_ℓ×(dim·N) with column block i = direction e_i for every sample.
  struct CurvatureWorkspace {
    Vector<Scalar> time_features;                 // φ(t)
    Vector<Scalar> first_bias;                    // b₀ + W_t·φ(t)
    std::vector<Matrix<Scalar>> activations;      // z_ℓ, then h_ℓ = σ(z_ℓ), width_ℓ×N
    std::vector<Matrix<Scalar>> slopes;           // σ'(z_ℓ), width_ℓ×N
    std::vector<Matrix<Scalar>> curvatures;       // σ''(z_ℓ), width_ℓ×N
    std::vector<Matrix<Scalar>> tangents;         // a_ℓ^i = ∂z_ℓ/∂x_i, direction blocks
    std::vector<Matrix<Scalar>> scaled_tangents;  // σ'(z_ℓ) ⊙ a_ℓ^i, direction blocks
    std::vector<Matrix<Scalar>> row_gradients;    // g_ℓ^i = ∂u_i/∂h_ℓ, direction blocks
    std::vector<Matrix<Scalar>> adjoints;         // δ_ℓ = d(∇·u)/dz_ℓ, width_ℓ×N
    std::vector<Matrix<Scalar>> propagated;       // W_{ℓ+1}ᵀ·δ_{ℓ+1}, width_ℓ×N
    detail::ProductBuffers<Scalar> products;
  };

  // ∇ₓ(∇·u) by the recursions documented at divergence_gradient(). The forward pass is its
  // own: it keeps σ''(z_ℓ), which needs z_ℓ before the activation overwrites it.
  void run_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                               const ConstMatrixRef<Scalar>* cond, MatrixRef<Scalar> out) const {
    validate_inputs(SharedOrPerSampleTime{t, nullptr}, x, cond);
    detail::require_shape("Mlp::divergence_gradient: out", out, dim(), x.cols());
    const Index hidden_layers = layer_count() - 1;
    if (hidden_layers == 0) {
      out.setZero();  // u = W_x·x + const
      return;
    }
    const Index batch = x.cols();
    const Index directions = dim() * batch;
    CurvatureWorkspace& work = thread_workspace<CurvatureWorkspace>(batch);
    for (std::vector<Matrix<Scalar>>* buffers :
         {&work.activations, &work.slopes, &work.curvatures, &work.tangents, &work.scaled_tangents,
          &work.row_gradients, &work.adjoints, &work.propagated}) {
      buffers->resize(hidden_layers);
    }
    const auto block = [batch](auto& matrix, Index direction) {
      return matrix.middleCols(direction * batch, batch);
    };

    // Forward: z_ℓ with σ'(z_ℓ) and σ''(z_ℓ), and a_ℓ^i.
    work.time_features.resize(config_.time_embedding.feature_count());
    config_.time_embedding.features(t, work.time_features);
    work.first_bias.noalias() = time_weight() * work.time_features;
    work.first_bias += biases_[0];
    for (Index layer = 0; layer < hidden_layers; ++layer) {
      Matrix<Scalar>& activations = work.activations[layer];
      Matrix<Scalar>& tangents = work.tangents[layer];
      activations.resize(layer_output_size(layer), batch);
      tangents.resize(layer_output_size(layer), directions);
      if (layer == 0) {
        work.products.multiply(x_weight(), x, activations);
        activations.colwise() += work.first_bias;
        if (cond != nullptr) work.products.multiply(cond_weight(), *cond, activations, true);
        for (Index direction = 0; direction < dim(); ++direction) {
          block(tangents, direction).colwise() = x_weight().col(direction);
        }
      } else {
        work.products.multiply(weights_[layer], work.activations[layer - 1], activations);
        activations.colwise() += biases_[layer];
        work.products.multiply(weights_[layer], work.scaled_tangents[layer - 1], tangents);
      }
      detail::apply_activation_with_curvature(config_.activation, activations, work.slopes[layer],
                                              work.curvatures[layer]);
      if (layer + 1 < hidden_layers) {
        Matrix<Scalar>& scaled = work.scaled_tangents[layer];
        scaled.resize(tangents.rows(), directions);
        for (Index direction = 0; direction < dim(); ++direction) {
          block(scaled, direction).array() =
              block(tangents, direction).array() * work.slopes[layer].array();
        }
      }
    }

    // Backward from the last hidden layer: g_ℓ^i, then δ_ℓ.
    for (Index layer = hidden_layers - 1; layer >= 0; --layer) {
      Matrix<Scalar>& rows = work.row_gradients[layer];
      rows.resize(layer_output_size(layer), directions);
      if (layer + 1 == hidden_layers) {
        for (Index direction = 0; direction < dim(); ++direction) {
          block(rows, direction).colwise() = weights_[layer + 1].row(direction).transpose();
        }
      } else {
        // row_gradients[ℓ + 1] already holds σ'(z_{ℓ+1}) ⊙ g_{ℓ+1}^i.
        work.products.multiply_transposed_lhs(weights_[layer + 1], work.row_gradients[layer + 1],
                                              rows);
      }
      Matrix<Scalar>& adjoint = work.adjoints[layer];
      adjoint.setZero(layer_output_size(layer), batch);
      for (Index direction = 0; direction < dim(); ++direction) {
        adjoint.array() +=
            block(rows, direction).array() * block(work.tangents[layer], direction).array();
      }
      adjoint.array() *= work.curvatures[layer].array();
      if (layer + 1 < hidden_layers) {
        Matrix<Scalar>& propagated = work.propagated[layer];
        propagated.resize(layer_output_size(layer), batch);
        work.products.multiply_transposed_lhs(weights_[layer + 1], work.adjoints[layer + 1],
                                              propagated);
        adjoint.array() += work.slopes[layer].array() * propagated.array();
      }
      if (layer == 0) break;
      for (Index direction = 0; direction < dim(); ++direction) {  // for the layer below
        block(rows, direction).array() *= work.slopes[layer].array();
      }
    }
    work.products.multiply_transposed_lhs(x_weight(), work.adjoints[0], out);
  }

  MlpConfig config_;
  std::vector<Matrix<Scalar>> weights_;
  std::vector<Vector<Scalar>> biases_;
};

}  // namespace flowmatch
