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
/// This header holds the network itself: its shape, its parameters and its evaluation (one
/// forward pass, which every derivative reuses). The exact derivatives (backward pass, jvp, vjp,
/// divergence and its gradient) are implemented in nn/mlp_derivatives.hpp, which this header
/// includes at its end; the buffers they share are in nn/mlp_workspace.hpp.
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
template <class Scalar>
struct MlpDerivatives;
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
    detail::require_count("MlpConfig: dim", dim, Index(1));
    detail::require_count("MlpConfig: cond_dim", cond_dim, Index(0));
    for (std::size_t layer = 0; layer < hidden.size(); ++layer) {
      if (hidden[layer] < 1) {
        detail::require_count(
            detail::argument_name("MlpConfig", "hidden[" + detail::to_text(layer) + "]"),
            hidden[layer], Index(1));
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
    Index offset = 0;
    for (Index layer = 0; layer < layer_count(); ++layer) {
      const LayerShape shape{offset, layer_output_size(layer), layer_input_size(layer)};
      layer_shapes_.push_back(shape);
      offset += shape.outputs * (shape.inputs + 1);
    }
    parameters_ = Vector<Scalar>::Zero(offset);
  }

  /// A network of shape @p config initialised as PyTorch's nn.Linear: every weight and bias of
  /// a layer with `in` inputs drawn from U(−1/√in, 1/√in) using @p generator, in the order of
  /// parameters().
  template <std::uniform_random_bit_generator Generator>
  Mlp(MlpConfig config, Generator& generator) : Mlp(std::move(config)) {
    for (const LayerShape& shape : layer_shapes_) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(shape.inputs));
      std::uniform_real_distribution<double> uniform(-bound, bound);
      for (Scalar& value : parameters_.segment(shape.offset, shape.outputs * (shape.inputs + 1))) {
        value = Scalar(uniform(generator));
      }
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

  /// Every parameter in one contiguous vector θ = [vec(W₀), b₀, vec(W₁), b₁, …] (vec the
  /// column-major flattening; the layout of train/parameters.hpp). weight() and bias() are views
  /// into it, so an optimiser or a moving average works on θ in place.
  [[nodiscard]] const Vector<Scalar>& parameters() const { return parameters_; }
  /// θ, writable in place (its length cannot change).
  [[nodiscard]] VectorRef<Scalar> parameters() { return parameters_; }

  /// W_ℓ, out×in, as nn.Linear's weight: a view into parameters().
  [[nodiscard]] Eigen::Map<const Matrix<Scalar>> weight(Index layer) const {
    check_layer(layer);
    return layer_weight(layer);
  }
  /// b_ℓ, length out: a view into parameters().
  [[nodiscard]] Eigen::Map<const Vector<Scalar>> bias(Index layer) const {
    check_layer(layer);
    return layer_bias(layer);
  }
  /// W_ℓ, writable in place (for an optimiser step); its shape cannot change.
  [[nodiscard]] MatrixRef<Scalar> weight(Index layer) {
    check_layer(layer);
    const LayerShape& shape = layer_shapes_[layer];
    return Eigen::Map<Matrix<Scalar>>(parameters_.data() + shape.offset, shape.outputs,
                                      shape.inputs);
  }
  /// b_ℓ, writable in place; its length cannot change.
  [[nodiscard]] VectorRef<Scalar> bias(Index layer) {
    check_layer(layer);
    const LayerShape& shape = layer_shapes_[layer];
    return parameters_.segment(shape.offset + shape.outputs * shape.inputs, shape.outputs);
  }
  /// Replaces W_ℓ. Throws std::invalid_argument unless @p weight is out×in and finite.
  void set_weight(Index layer, const ConstMatrixRef<Scalar>& weight) {
    check_layer(layer);
    detail::require_shape("Mlp::set_weight: weight", weight, layer_output_size(layer),
                          layer_input_size(layer));
    detail::require_finite("Mlp::set_weight: weight", weight);
    this->weight(layer) = weight;
  }
  /// Replaces b_ℓ. Throws std::invalid_argument unless @p bias has length out and is finite.
  void set_bias(Index layer, const ConstVectorRef<Scalar>& bias) {
    check_layer(layer);
    detail::require_shape("Mlp::set_bias: bias", bias, layer_output_size(layer), 1);
    detail::require_finite("Mlp::set_bias: bias", bias);
    this->bias(layer) = bias;
  }

  /// The same network with its parameters converted to scalar type @p Other.
  template <class Other>
  [[nodiscard]] Mlp<Other> cast() const {
    Mlp<Other> converted(config_);
    converted.parameters() = parameters_.template cast<Other>();
    return converted;
  }

  /// A gradient of the shapes of the parameters, all zero.
  [[nodiscard]] MlpGradient<Scalar> zero_gradient() const {
    MlpGradient<Scalar> gradient;
    gradient.shape_like(*this);
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
    evaluate(workspace, SharedOrPerSampleTime{t, nullptr}, x, nullptr, out);
  }
  void forward(MlpWorkspace<Scalar>& workspace, Scalar t, const ConstMatrixRef<Scalar>& x,
               const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{t, nullptr}, x, &cond, out);
  }
  void forward(MlpWorkspace<Scalar>& workspace, const ConstVectorRef<Scalar>& t,
               const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{Scalar(0), &t}, x, nullptr, out);
  }
  void forward(MlpWorkspace<Scalar>& workspace, const ConstVectorRef<Scalar>& t,
               const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
               MatrixRef<Scalar> out) const {
    evaluate(workspace, SharedOrPerSampleTime{Scalar(0), &t}, x, &cond, out);
  }
  ///@}

  /// Backward pass of the last forward() recorded in @p workspace by this network: given
  /// G = ∂L/∂u (dim×N), overwrites @p gradient with ∂L/∂W_ℓ and ∂L/∂b_ℓ (resizing it on first
  /// use). Throws std::invalid_argument if @p workspace holds no forward pass of this network or
  /// G is not dim×N and finite. The parameters must not change between forward and backward.
  void backward(MlpWorkspace<Scalar>& workspace, const ConstMatrixRef<Scalar>& output_gradient,
                MlpGradient<Scalar>& gradient) const {
    detail::MlpDerivatives<Scalar>::backward(*this, workspace, output_gradient, &gradient, false);
  }

  /// As backward(), and also writes ∂L/∂x (dim×N) into @p x_gradient.
  void backward(MlpWorkspace<Scalar>& workspace, const ConstMatrixRef<Scalar>& output_gradient,
                MlpGradient<Scalar>& gradient, MatrixRef<Scalar> x_gradient) const {
    detail::require_shape("Mlp::backward: x_gradient", x_gradient, dim(), workspace.batch_size());
    detail::MlpDerivatives<Scalar>::backward(*this, workspace, output_gradient, &gradient, true);
    x_gradient = workspace.output_;
  }

  /// @name Jacobian-vector product
  /// (∂u/∂x)·tangent for each sample into @p out (tangent and out dim×N).
  ///@{
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::jvp(*this, t, x, nullptr, tangent, out);
  }
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
           const ConstMatrixRef<Scalar>& tangent, MatrixRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::jvp(*this, t, x, &cond, tangent, out);
  }
  ///@}

  /// @name Vector-Jacobian product
  /// (∂u/∂x)ᵀ·cotangent for each sample, the x-gradient of ⟨cotangent, u⟩, into @p out.
  ///@{
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::vjp(*this, t, x, nullptr, cotangent, out);
  }
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
           const ConstMatrixRef<Scalar>& cotangent, MatrixRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::vjp(*this, t, x, &cond, cotangent, out);
  }
  ///@}

  /// @name Exact divergence
  /// ∇ₓ·u = trace(∂u/∂x) for each sample into @p out (length N). With one hidden layer,
  /// div = Σ_j σ'(z_j)·Σ_i W₁[i,j]·W₀[j,i]; with more, the d tangent directions e_1..e_d are
  /// propagated together as one width×(d·N) block per layer (cost of about d forward passes).
  ///@{
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::divergence(*this, t, x, nullptr, out);
  }
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cond,
                  VectorRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::divergence(*this, t, x, &cond, out);
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
    detail::MlpDerivatives<Scalar>::divergence(*this, t, x, nullptr, divergence, &velocity);
  }
  void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> velocity,
                           VectorRef<Scalar> divergence) const {
    require_batch(x);
    detail::require_shape("Mlp::velocity_divergence: velocity", velocity, dim(), x.cols());
    detail::MlpDerivatives<Scalar>::divergence(*this, t, x, &cond, divergence, &velocity);
  }
  ///@}

  /// @name Exact gradient of the divergence
  /// ∇ₓ(∇·u) for each sample into @p out (dim×N), t and c held fixed: reverse mode through the
  /// forward-mode divergence (the recursions are in nn/mlp_derivatives.hpp). One hidden layer
  /// gives W_xᵀ(σ''(z₀) ⊙ c), c_j = Σ_i W₁[i,j]·W₀[j,i]; no hidden layer gives 0. Cost: about
  /// 2·d forward passes. σ'' takes the one-sided value at a kink (nn/activation.hpp), so the
  /// gradient is zero for relu and leaky_relu networks. The workspace is the calling thread's,
  /// as for operator().
  /// Throws std::invalid_argument as divergence() does, or if @p out is not dim×N.
  ///@{
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::divergence_gradient(*this, t, x, nullptr, out);
  }
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                           const ConstMatrixRef<Scalar>& cond, MatrixRef<Scalar> out) const {
    detail::MlpDerivatives<Scalar>::divergence_gradient(*this, t, x, &cond, out);
  }
  ///@}

  /// @name Velocity, vector-Jacobian product and divergence gradient in one pass
  /// u(t, x) into @p velocity, (∂u/∂x)ᵀ·cotangent into @p vjp and ∇ₓ(∇·u) into
  /// @p divergence_gradient (each dim×N) from one forward pass, which the backward pass of the
  /// vjp and the recursions of the divergence gradient share: the right-hand side of the exact
  /// score (score/exact_score.hpp) at the cost of divergence_gradient() alone. Same values as
  /// the separate members up to rounding. The outputs must not alias x or the cotangent.
  /// Throws std::invalid_argument as vjp() and divergence_gradient() do.
  ///@{
  void velocity_vjp_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                                        const ConstMatrixRef<Scalar>& cotangent,
                                        MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                        MatrixRef<Scalar> divergence_gradient) const {
    detail::MlpDerivatives<Scalar>::velocity_vjp_divergence_gradient(
        *this, t, x, nullptr, cotangent, velocity, vjp, divergence_gradient);
  }
  void velocity_vjp_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                                        const ConstMatrixRef<Scalar>& cond,
                                        const ConstMatrixRef<Scalar>& cotangent,
                                        MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                        MatrixRef<Scalar> divergence_gradient) const {
    detail::MlpDerivatives<Scalar>::velocity_vjp_divergence_gradient(
        *this, t, x, &cond, cotangent, velocity, vjp, divergence_gradient);
  }
  ///@}

 private:
  friend struct detail::MlpDerivatives<Scalar>;

  // The time argument: one shared time, or per_sample pointing to a length-N vector.
  struct SharedOrPerSampleTime {
    Scalar shared;
    const ConstVectorRef<Scalar>* per_sample;
  };

  void check_layer(Index layer) const {
    if (layer < 0 || layer >= layer_count()) {
      detail::reject_argument("Mlp: layer", detail::is_value(layer),
                              "0 to " + detail::to_text(layer_count() - 1));
    }
  }

  // Where layer ℓ's parameters are in θ: W_ℓ (outputs×inputs) from offset, then b_ℓ.
  struct LayerShape {
    Index offset;
    Index outputs;
    Index inputs;
  };

  // W_ℓ and b_ℓ as views of θ, without the range check of weight() and bias().
  [[nodiscard]] Eigen::Map<const Matrix<Scalar>> layer_weight(Index layer) const {
    return weight_columns(layer, 0, layer_shapes_[layer].inputs);
  }
  [[nodiscard]] Eigen::Map<const Vector<Scalar>> layer_bias(Index layer) const {
    const LayerShape& shape = layer_shapes_[layer];
    return {parameters_.data() + shape.offset + shape.outputs * shape.inputs, shape.outputs};
  }
  // Columns [first, first + count) of W_ℓ, contiguous in the column-major θ.
  [[nodiscard]] Eigen::Map<const Matrix<Scalar>> weight_columns(Index layer, Index first,
                                                                Index count) const {
    const LayerShape& shape = layer_shapes_[layer];
    return {parameters_.data() + shape.offset + first * shape.outputs, shape.outputs, count};
  }
  // Column blocks of W₀ acting on x, on the time features and on the condition.
  [[nodiscard]] auto x_weight() const { return weight_columns(0, 0, dim()); }
  [[nodiscard]] auto time_weight() const {
    return weight_columns(0, dim(), config_.time_embedding.feature_count());
  }
  [[nodiscard]] auto cond_weight() const {
    return weight_columns(0, config_.input_size() - cond_dim(), cond_dim());
  }

  // What a forward pass keeps in its workspace besides the hidden activations h_ℓ: nothing
  // more (plain evaluation); σ'(z_ℓ) and the inputs (what every derivative needs); or σ''(z_ℓ)
  // as well (what the divergence gradient needs).
  enum class ForwardRecord { activations, slopes, curvatures };

  // forward(): a recorded evaluation into out.
  void evaluate(MlpWorkspace<Scalar>& workspace, SharedOrPerSampleTime time,
                const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
                MatrixRef<Scalar> out) const {
    require_batch(x);
    detail::require_shape("Mlp: out", out, dim(), x.cols());
    run_forward(workspace, time, x, cond, ForwardRecord::slopes, &out);
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
        MlpWorkspace<Scalar>& workspace = detail::thread_workspace<Scalar>(columns);
        if (cond == nullptr) {
          run_forward(workspace, panel_time, x.middleCols(begin, columns), nullptr,
                      ForwardRecord::activations, &out_panel);
          return;
        }
        const ConstMatrixRef<Scalar> cond_panel = cond->middleCols(begin, columns);
        run_forward(workspace, panel_time, x.middleCols(begin, columns), &cond_panel,
                    ForwardRecord::activations, &out_panel);
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

  // Throws naming x unless it is a dim×N batch. Checked before the other arguments, whose
  // expected shapes follow from x: a transposed x (N×dim) is blamed on x, not on out.
  void require_batch(const ConstMatrixRef<Scalar>& x) const {
    if (x.rows() == dim()) return;
    detail::reject_argument(
        "Mlp: x", "has shape " + detail::to_text(x.rows()) + "x" + detail::to_text(x.cols()),
        detail::to_text(dim()) + " rows (dim×N, one column per sample)" +
            (x.cols() == dim() ? "; x may be transposed: an N×dim batch is passed as x.transpose()"
                               : ""));
  }

  void validate_inputs(SharedOrPerSampleTime time, const ConstMatrixRef<Scalar>& x,
                       const ConstMatrixRef<Scalar>* cond) const {
    require_batch(x);
    if (time.per_sample != nullptr) {
      const ConstVectorRef<Scalar>& times = *time.per_sample;
      detail::require_shape("Mlp: t", times, x.cols(), 1);
      detail::require_finite("Mlp: t", times);
    } else {
      detail::require_finite_value("Mlp: t", time.shared);
    }
    if (cond_dim() > 0 && cond == nullptr) {
      detail::reject_argument("Mlp: cond", "is missing",
                              "a condition matrix: the network is conditional (cond_dim = " +
                                  detail::to_text(cond_dim()) + ")");
    }
    if (cond_dim() == 0 && cond != nullptr) {
      detail::reject_argument("Mlp: cond", "is given",
                              "none: the network is unconditional (cond_dim = 0)");
    }
    if (cond != nullptr) {
      detail::require_shape("Mlp: cond", *cond, cond_dim(), x.cols());
      detail::require_finite("Mlp: cond", *cond);
    }
  }

  // The forward pass, the only one: evaluates the network into *output (workspace.output_ if
  // null) and keeps in the workspace what @p record asks for (see ForwardRecord). Every
  // evaluation and every derivative runs through it. Reads x and cond only before writing
  // *output, which may alias them.
  void run_forward(MlpWorkspace<Scalar>& workspace, SharedOrPerSampleTime time,
                   const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>* cond,
                   ForwardRecord record, MatrixRef<Scalar>* output = nullptr) const {
    validate_inputs(time, x, cond);
    const Index batch = x.cols();
    const Index layers = layer_count();
    const bool with_slopes = record != ForwardRecord::activations;
    const bool with_curvatures = record == ForwardRecord::curvatures;
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
    if (with_curvatures) workspace.curvatures_.resize(layers - 1);

    // z₀ = W_x·x + W_t·φ(t) + W_c·c + b₀.
    // The bias of a hidden layer is added by the activation pass, of the output layer here.
    Matrix<Scalar>& first = layers == 1 ? workspace.output_ : workspace.hidden_[0];
    first.resize(layer_output_size(0), batch);
    detail::ProductBuffers<Scalar>& products = workspace.products_;
    products.multiply(x_weight(), x, first);
    if (workspace.time_shared_) {
      workspace.first_bias_.noalias() = time_weight() * workspace.shared_time_features_;
      workspace.first_bias_ += layer_bias(0);
    } else {
      products.multiply(time_weight(), workspace.time_features_, first, true);
      workspace.first_bias_ = layer_bias(0);
    }
    if (cond != nullptr) products.multiply(cond_weight(), *cond, first, true);
    if (layers == 1) {
      first.colwise() += workspace.first_bias_;
      if (output != nullptr) *output = first;
    }

    for (Index layer = 0; layer + 1 < layers; ++layer) {
      detail::add_bias_and_activate(config_.activation, workspace.hidden_[layer],
                                    layer == 0 ? ConstVectorRef<Scalar>(workspace.first_bias_)
                                               : ConstVectorRef<Scalar>(layer_bias(layer)),
                                    with_slopes ? &workspace.slopes_[layer] : nullptr,
                                    with_curvatures ? &workspace.curvatures_[layer] : nullptr);
      const Matrix<Scalar>& hidden = workspace.hidden_[layer];
      if (layer + 2 == layers) {
        MatrixRef<Scalar> last = output != nullptr ? *output : prepare_output(workspace, batch);
        products.multiply(layer_weight(layer + 1), hidden, last);
        last.colwise() += layer_bias(layer + 1);
        break;
      }
      Matrix<Scalar>& next = workspace.hidden_[layer + 1];
      next.resize(layer_output_size(layer + 1), batch);
      products.multiply(layer_weight(layer + 1), hidden, next);
    }
    workspace.network_ = this;
    workspace.has_slopes_ = with_slopes;
    workspace.batch_size_ = batch;
  }

  MlpConfig config_;
  std::vector<LayerShape> layer_shapes_;
  Vector<Scalar> parameters_;  // θ = [vec(W₀), b₀, vec(W₁), b₁, …]
};

}  // namespace flowmatch

// The derivatives are members of Mlp whose implementation needs the complete class.
#include "flowmatch/nn/mlp_derivatives.hpp"
