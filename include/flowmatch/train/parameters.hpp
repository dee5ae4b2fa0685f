/// @file parameters.hpp
/// @brief The flat parameter vector the optimisers work on, its mapping to the layers of a
/// network, and gradient clipping by global norm.
///
/// The optimisers, the moving average and the clipping act on one flat vector θ holding every
/// parameter. For a network of linear layers (weights W_ℓ, out×in, and biases b_ℓ) the layout
/// is, in this order,
///
///     θ = [vec(W₀), b₀, vec(W₁), b₁, …, vec(W_{L−1}), b_{L−1}],
///
/// with vec the column-major flattening: PyTorch's order of an nn.Sequential's parameters()
/// (whose weights are stored row-major, so their vec differs: transpose to compare entry by
/// entry). A gradient with the same layers flattens to the same layout. An Mlp keeps its
/// parameters in this layout in one vector (Mlp::parameters(), and MlpGradient::flat() for its
/// gradient), so the optimisers and the moving average work on it in place; gathering and
/// scattering serve other layered models.
#pragma once

#include <cmath>
#include <concepts>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A network of linear layers: layer_count(), and per layer a weight matrix and a bias vector,
/// readable from a const model and writable in place (as Mlp provides).
template <class Model>
concept LayeredModel = requires(const Model& model, Model& writable, Index layer) {
  typename Model::scalar_type;
  { model.layer_count() } -> std::convertible_to<Index>;
  { model.weight(layer).rows() } -> std::convertible_to<Index>;
  { model.bias(layer).size() } -> std::convertible_to<Index>;
  writable.weight(layer) = model.weight(layer);
  writable.bias(layer) = model.bias(layer);
};

namespace detail {

/// Calls visit(layer, weight, bias) for every layer of (weights, biases), after checking that
/// both lists have the same length.
template <class Weights, class Biases, class Visitor>
void for_each_layer(const char* function, Weights& weights, Biases& biases, Visitor&& visit) {
  if (weights.size() != biases.size()) {
    reject_argument(argument_name(function, "layers"),
                    "are " + to_text(weights.size()) + " weight matrices and " +
                        to_text(biases.size()) + " bias vectors",
                    "one of each per layer");
  }
  for (std::size_t layer = 0; layer < weights.size(); ++layer) {
    visit(layer, weights[layer], biases[layer]);
  }
}

/// Σ_ℓ (size(W_ℓ) + size(b_ℓ)) over the layers of (weights, biases).
template <class Weights, class Biases>
Index layer_parameter_count(const char* function, const Weights& weights, const Biases& biases) {
  Index count = 0;
  for_each_layer(function, weights, biases, [&](std::size_t, const auto& weight, const auto& bias) {
    count += weight.size() + bias.size();
  });
  return count;
}

/// Throws std::invalid_argument unless @p flat has exactly @p count entries.
template <class Scalar>
void require_flat_size(const char* function, const ConstVectorRef<Scalar>& flat, Index count) {
  if (flat.size() != count) {
    reject_argument(argument_name(function, "flat vector"),
                    "has " + to_text(flat.size()) + " entries",
                    to_text(count) + " (one per parameter)");
  }
}

/// Checks the arguments of an optimiser step: parameters and gradient of length @p count, the
/// gradient finite, the learning rate finite and ≥ 0.
template <class Scalar>
void require_step_arguments(const char* function, const ConstVectorRef<Scalar>& parameters,
                            const ConstVectorRef<Scalar>& gradient, Index count,
                            Scalar learning_rate) {
  if (parameters.size() != count) {
    require_shape(argument_name(function, "parameters"), parameters, count, 1);
  }
  if (gradient.size() != count) {
    require_shape(argument_name(function, "gradient"), gradient, count, 1);
  }
  if (!gradient.allFinite()) require_finite(argument_name(function, "gradient"), gradient);
  if (!(learning_rate >= Scalar(0)) || !std::isfinite(learning_rate)) {
    require_nonnegative(argument_name(function, "learning_rate"), learning_rate);
  }
}

}  // namespace detail

/// The scalar type of the matrices of a list of layers.
template <class LayerList>
using layer_scalar_t = typename LayerList::value_type::Scalar;

/// Writes the flat vector [vec(W₀), b₀, vec(W₁), b₁, …] of per-layer matrices and vectors (for
/// instance the weights and biases of a gradient; any lists of Eigen matrices or views) into
/// @p flat, without allocating.
/// @throws std::invalid_argument if the two lists differ in length or flat has another size.
template <class WeightList, class BiasList>
void flatten_layers(const WeightList& weights, const BiasList& biases,
                    VectorRef<layer_scalar_t<WeightList>> flat) {
  using Scalar = layer_scalar_t<WeightList>;
  detail::require_flat_size<Scalar>(
      "flatten_layers", flat, detail::layer_parameter_count("flatten_layers", weights, biases));
  Index offset = 0;
  detail::for_each_layer("flatten_layers", weights, biases,
                         [&](std::size_t, const auto& weight, const auto& bias) {
                           flat.segment(offset, weight.size()) = weight.reshaped();
                           offset += weight.size();
                           flat.segment(offset, bias.size()) = bias;
                           offset += bias.size();
                         });
}

/// The flat vector [vec(W₀), b₀, vec(W₁), b₁, …] of per-layer matrices and vectors.
/// @throws std::invalid_argument if the two lists differ in length.
template <class WeightList, class BiasList>
[[nodiscard]] Vector<layer_scalar_t<WeightList>> flatten_layers(const WeightList& weights,
                                                                const BiasList& biases) {
  Vector<layer_scalar_t<WeightList>> flat(
      detail::layer_parameter_count("flatten_layers", weights, biases));
  flatten_layers(weights, biases, flat);
  return flat;
}

/// Writes @p flat back into per-layer matrices and vectors whose shapes are already set: the
/// inverse of flatten_layers.
/// @throws std::invalid_argument if the lists differ in length or the flat size does not match.
template <class Scalar>
void unflatten_layers(const ConstVectorRef<Scalar>& flat, std::vector<Matrix<Scalar>>& weights,
                      std::vector<Vector<Scalar>>& biases) {
  detail::require_flat_size<Scalar>(
      "unflatten_layers", flat, detail::layer_parameter_count("unflatten_layers", weights, biases));
  Index offset = 0;
  detail::for_each_layer("unflatten_layers", weights, biases,
                         [&](std::size_t, auto& weight, auto& bias) {
                           weight.reshaped() = flat.segment(offset, weight.size());
                           offset += weight.size();
                           bias = flat.segment(offset, bias.size());
                           offset += bias.size();
                         });
}

/// The number of parameters of @p model, Σ_ℓ (size(W_ℓ) + size(b_ℓ)).
template <LayeredModel Model>
[[nodiscard]] Index parameter_count(const Model& model) {
  Index count = 0;
  for (Index layer = 0; layer < model.layer_count(); ++layer) {
    count += model.weight(layer).size() + model.bias(layer).size();
  }
  return count;
}

/// Writes the parameters of @p model into the flat vector @p flat (layout in the file comment),
/// without allocating.
/// @throws std::invalid_argument unless flat has parameter_count(model) entries.
template <LayeredModel Model>
void gather_parameters(const Model& model, VectorRef<typename Model::scalar_type> flat) {
  detail::require_flat_size<typename Model::scalar_type>("gather_parameters", flat,
                                                         parameter_count(model));
  Index offset = 0;
  for (Index layer = 0; layer < model.layer_count(); ++layer) {
    const auto& weight = model.weight(layer);
    flat.segment(offset, weight.size()) = weight.reshaped();
    offset += weight.size();
    const auto& bias = model.bias(layer);
    flat.segment(offset, bias.size()) = bias;
    offset += bias.size();
  }
}

/// The parameters of @p model as one flat vector (layout in the file comment).
template <LayeredModel Model>
[[nodiscard]] Vector<typename Model::scalar_type> gather_parameters(const Model& model) {
  Vector<typename Model::scalar_type> flat(parameter_count(model));
  gather_parameters(model, flat);
  return flat;
}

/// Writes the flat vector @p flat into the layers of @p model: the inverse of gather_parameters.
/// @throws std::invalid_argument unless flat has parameter_count(model) entries, all finite.
template <LayeredModel Model>
void scatter_parameters(const ConstVectorRef<typename Model::scalar_type>& flat, Model& model) {
  using Scalar = typename Model::scalar_type;
  detail::require_flat_size<Scalar>("scatter_parameters", flat, parameter_count(model));
  detail::require_finite("scatter_parameters: flat", flat);
  Index offset = 0;
  for (Index layer = 0; layer < model.layer_count(); ++layer) {
    const Index rows = model.weight(layer).rows();
    const Index cols = model.weight(layer).cols();
    model.weight(layer) = flat.segment(offset, rows * cols).reshaped(rows, cols);
    offset += rows * cols;
    const Index size = model.bias(layer).size();
    model.bias(layer) = flat.segment(offset, size);
    offset += size;
  }
}

/// Clips a flat gradient by its global (Euclidean) norm: if ‖g‖ > max_norm, g ← g·max_norm/‖g‖
/// (so that ‖g‖ = max_norm up to rounding); otherwise g is left unchanged. Returns ‖g‖ before
/// clipping.
/// @throws std::invalid_argument if max_norm is not finite and > 0 or g has a non-finite entry.
template <class Scalar>
Scalar clip_by_global_norm(Vector<Scalar>& gradient, Scalar max_norm) {
  detail::require_positive("clip_by_global_norm: max_norm", max_norm);
  detail::require_finite("clip_by_global_norm: gradient", gradient);
  // stableNorm avoids overflow of Σg² for large entries.
  const Scalar norm = gradient.stableNorm();
  if (norm > max_norm) gradient *= max_norm / norm;
  return norm;
}

}  // namespace flowmatch
