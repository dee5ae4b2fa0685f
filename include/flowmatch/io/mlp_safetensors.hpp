/// @file mlp_safetensors.hpp
/// @brief Loading and saving an Mlp as the state_dict of a PyTorch nn.Sequential.
///
/// Requires nlohmann-json 3, as io/safetensors.hpp does.
///
/// Tensor layout: the Linear layers of an `nn.Sequential` with activations between them,
/// named by their index in the Sequential: `0.weight` [out, in], `0.bias` [out], `2.weight`,
/// `2.bias`, … (the activations, which hold no tensors, take the odd indices). Any distinct
/// non-negative indices are accepted and taken in increasing order, so a Sequential with
/// dropout or other parameter-free modules between the layers loads too. The shapes must
/// chain: each layer's `in` is the previous layer's `out`, and the last `out` is dim.
///
/// `__metadata__` keys (all optional, all strings; other keys are ignored):
///
/// | key                | value                                                          |
/// |--------------------|----------------------------------------------------------------|
/// | `activation`       | an activation name of nn/activation.hpp, e.g. "silu"          |
/// | `input_order`      | the order of the first layer's inputs: "x,t" or "x,t,c", or   |
/// |                    | any other order of the tokens x, t and (conditional only) c   |
/// | `time_embedding`   | "raw" (one input t, the default) or "sinusoidal"               |
/// | `time_frequencies` | F for "sinusoidal": 2F inputs (nn/time_embedding.hpp)          |
/// | `dim`              | d, checked against the last layer's out                        |
/// | `cond_dim`         | k, checked against the first layer's in − d − time features    |
///
/// Options given by the caller (MlpLoadOptions) override the metadata. Without either, the
/// input order is x, t, then c if the first layer has more inputs than d + time features;
/// the activation has no default and must come from one of the two.
///
/// A network saved by save_mlp loads in PyTorch with, for d = 2, hidden (64, 64), SiLU:
///
///     net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
///                         nn.Linear(64, 2))
///     net.load_state_dict(safetensors.torch.load_file(path))
///     velocity = net(torch.cat([x, t[:, None]], dim=1))
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/io/io_error.hpp"
#include "flowmatch/io/safetensors.hpp"
#include "flowmatch/nn/activation.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/time_embedding.hpp"

namespace flowmatch::io {

/// What to assume where the file's metadata is silent, or to use instead of it.
struct MlpLoadOptions {
  /// The activation; overrides the metadata key `activation`.
  std::optional<Activation> activation;
  /// The first layer's input order, e.g. "x,t,c"; overrides the metadata key `input_order`.
  std::optional<std::string> input_order;
  /// The time embedding; overrides the metadata keys `time_embedding` and `time_frequencies`.
  std::optional<TimeEmbedding> time_embedding;
  /// A prefix of the layer tensors' names, e.g. "net." for `net.0.weight` when the Sequential
  /// is an attribute of a larger module. With a non-empty prefix, tensors whose names do not
  /// start with it are ignored; with the empty prefix every tensor must be a layer tensor.
  std::string prefix;
};

}  // namespace flowmatch::io

namespace flowmatch::detail {

// The tensors of one Linear layer.
struct LinearTensors {
  const io::Tensor* weight = nullptr;
  const io::Tensor* bias = nullptr;
};

inline std::optional<std::string> metadata_value(const io::SafeTensors& file,
                                                 const std::string& key) {
  const auto found = file.metadata.find(key);
  if (found == file.metadata.end()) return std::nullopt;
  return found->second;
}

// A non-negative decimal integer with nothing around it, or nullopt.
inline std::optional<std::int64_t> parse_count(std::string_view text) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || stop != end || value < 0) return std::nullopt;
  return value;
}

inline Index metadata_count(const io::SafeTensors& file, const std::string& source,
                            const std::string& key) {
  const std::string text = *metadata_value(file, key);
  const std::optional<std::int64_t> value = parse_count(text);
  if (!value) {
    throw io::format_error(source, "__metadata__ '" + key + "'",
                           "got '" + text + "', expected a non-negative integer");
  }
  return static_cast<Index>(*value);
}

// The Linear layers by Sequential index, in increasing order.
inline std::map<std::int64_t, LinearTensors> linear_layers(const io::SafeTensors& file,
                                                           const std::string& source,
                                                           const std::string& prefix) {
  std::map<std::int64_t, LinearTensors> layers;
  for (const auto& [name, tensor] : file.tensors) {
    if (!name.starts_with(prefix)) continue;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    const std::size_t dot = rest.find('.');
    const std::optional<std::int64_t> index =
        dot == std::string_view::npos ? std::nullopt : parse_count(rest.substr(0, dot));
    const std::string_view field = dot == std::string_view::npos ? "" : rest.substr(dot + 1);
    if (!index || (field != "weight" && field != "bias")) {
      throw io::format_error(source, "tensor '" + name + "'",
                             "expected a name '" + prefix + "<index>.weight' or '" + prefix +
                                 "<index>.bias' of an nn.Sequential of nn.Linear layers");
    }
    (field == "weight" ? layers[*index].weight : layers[*index].bias) = &tensor;
  }
  if (layers.empty()) {
    throw io::format_error(source, "tensors", "no '" + prefix + "<index>.weight' tensor found");
  }
  for (const auto& [index, layer] : layers) {
    if (layer.weight == nullptr || layer.bias == nullptr) {
      throw io::format_error(
          source, "layer " + std::to_string(index),
          std::string("missing its ") + (layer.weight == nullptr ? "weight" : "bias"));
    }
  }
  return layers;
}

// The tokens of an input order such as "x,t,c": each of x, t (and c if conditional) once.
inline std::vector<std::string> parse_input_order(const std::string& order,
                                                  const std::string& source) {
  std::vector<std::string> tokens;
  std::size_t begin = 0;
  while (true) {
    const std::size_t comma = order.find(',', begin);
    tokens.push_back(order.substr(begin, comma == std::string::npos ? comma : comma - begin));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  const auto count = [&](const char* token) {
    return std::count(tokens.begin(), tokens.end(), token);
  };
  const bool valid =
      count("x") == 1 && count("t") == 1 && count("c") <= 1 &&
      static_cast<std::size_t>(count("x") + count("t") + count("c")) == tokens.size();
  if (!valid) {
    throw io::format_error(source, "input_order",
                           "got '" + order +
                               "', expected the tokens x, t and optionally c, each once, "
                               "separated by commas (e.g. 'x,t' or 'x,t,c')");
  }
  return tokens;
}

inline TimeEmbedding time_embedding_from_metadata(const io::SafeTensors& file,
                                                  const std::string& source) {
  const std::optional<std::string> kind = metadata_value(file, "time_embedding");
  if (!kind || *kind == "raw") return TimeEmbedding{0};
  if (*kind != "sinusoidal") {
    throw io::format_error(source, "__metadata__ 'time_embedding'",
                           "got '" + *kind + "', expected 'raw' or 'sinusoidal'");
  }
  if (!metadata_value(file, "time_frequencies")) {
    throw io::format_error(
        source, "__metadata__ 'time_frequencies'",
        "missing, expected the number of frequencies of the sinusoidal embedding");
  }
  const TimeEmbedding embedding{metadata_count(file, source, "time_frequencies")};
  if (embedding.frequencies < 1 || embedding.frequencies > TimeEmbedding::max_frequencies) {
    throw io::format_error(source, "__metadata__ 'time_frequencies'",
                           "got " + std::to_string(embedding.frequencies) + ", expected 1 to " +
                               std::to_string(TimeEmbedding::max_frequencies));
  }
  return embedding;
}

// Checks an optional integer metadata entry against the value the shapes imply.
inline void check_metadata_count(const io::SafeTensors& file, const std::string& source,
                                 const std::string& key, Index expected) {
  if (!metadata_value(file, key)) return;
  const Index stated = metadata_count(file, source, key);
  if (stated != expected) {
    throw io::format_error(source, "__metadata__ '" + key + "'",
                           "states " + std::to_string(stated) + " but the layer shapes give " +
                               std::to_string(expected));
  }
}

// The weights and biases of the Linear layers, their shapes checked to chain.
template <class Scalar>
struct LinearWeights {
  std::vector<Matrix<Scalar>> weights;
  std::vector<Vector<Scalar>> biases;
};

template <class Scalar>
LinearWeights<Scalar> read_linear_weights(const io::SafeTensors& file, const std::string& source,
                                          const std::string& prefix) {
  LinearWeights<Scalar> linear;
  for (const auto& [index, layer] : linear_layers(file, source, prefix)) {
    const std::string name = prefix + std::to_string(index);
    Matrix<Scalar> weight;
    Vector<Scalar> bias;
    try {
      weight = io::tensor_matrix<Scalar>(*layer.weight, name + ".weight");
      bias = io::tensor_vector<Scalar>(*layer.bias, name + ".bias");
    } catch (const io::format_error&) {
      throw;
    } catch (const std::invalid_argument& error) {
      throw io::format_error(source, "layer " + name, error.what());
    }
    if (bias.size() != weight.rows()) {
      throw io::format_error(source, "tensor '" + name + ".bias'",
                             "has " + std::to_string(bias.size()) + " entries, expected " +
                                 std::to_string(weight.rows()) + " (the rows of " + name +
                                 ".weight)");
    }
    if (!linear.weights.empty() && weight.cols() != linear.weights.back().rows()) {
      throw io::format_error(source, "tensor '" + name + ".weight'",
                             "has " + std::to_string(weight.cols()) +
                                 " inputs, expected the previous layer's " +
                                 std::to_string(linear.weights.back().rows()) + " outputs");
    }
    linear.weights.push_back(std::move(weight));
    linear.biases.push_back(std::move(bias));
  }
  return linear;
}

inline Activation resolve_activation(const io::SafeTensors& file, const io::MlpLoadOptions& options,
                                     const std::string& source) {
  if (options.activation) return *options.activation;
  const std::optional<std::string> name = metadata_value(file, "activation");
  if (!name) {
    reject_argument(source + ": activation",
                    "is neither in __metadata__ 'activation' nor in the options",
                    "one of the two to name it");
  }
  try {
    return activation_from_name(*name);
  } catch (const std::invalid_argument& error) {
    throw io::format_error(source, "__metadata__ 'activation'", error.what());
  }
}

// The first layer's weight with its column blocks moved from the file's input order to x, t, c.
template <class Scalar>
Matrix<Scalar> reorder_to_x_t_c(const Matrix<Scalar>& weight, const std::vector<std::string>& order,
                                const MlpConfig& config) {
  const Index time_features = config.time_embedding.feature_count();
  const auto block_size = [&](const std::string& token) {
    return token == "x" ? config.dim : token == "t" ? time_features : config.cond_dim;
  };
  const auto block_start = [&](const std::string& token) {
    return token == "x" ? Index(0) : token == "t" ? config.dim : config.dim + time_features;
  };
  Matrix<Scalar> reordered(weight.rows(), weight.cols());
  Index file_column = 0;
  for (const std::string& token : order) {
    reordered.middleCols(block_start(token), block_size(token)) =
        weight.middleCols(file_column, block_size(token));
    file_column += block_size(token);
  }
  return reordered;
}

template <class Scalar>
Mlp<Scalar> load_mlp_from(const io::SafeTensors& file, const io::MlpLoadOptions& options,
                          const std::string& source) {
  LinearWeights<Scalar> linear = read_linear_weights<Scalar>(file, source, options.prefix);
  MlpConfig config;
  config.dim = linear.weights.back().rows();
  config.time_embedding =
      options.time_embedding ? *options.time_embedding : time_embedding_from_metadata(file, source);
  config.time_embedding.validate();
  const Index inputs = linear.weights.front().cols();
  const Index time_features = config.time_embedding.feature_count();
  config.cond_dim = inputs - config.dim - time_features;
  const std::optional<std::string> stated_order =
      options.input_order ? options.input_order : metadata_value(file, "input_order");
  const std::vector<std::string> order =
      parse_input_order(stated_order.value_or(config.cond_dim > 0 ? "x,t,c" : "x,t"), source);
  const bool conditional = std::count(order.begin(), order.end(), "c") == 1;
  if (config.cond_dim < 0 || (config.cond_dim > 0) != conditional) {
    throw io::format_error(
        source, "first layer",
        "has " + std::to_string(inputs) + " inputs, which does not fit dim " +
            std::to_string(config.dim) + " + " + std::to_string(time_features) + " time features" +
            (conditional ? " + a condition of at least one entry" : " without a condition"));
  }
  check_metadata_count(file, source, "dim", config.dim);
  check_metadata_count(file, source, "cond_dim", config.cond_dim);
  config.activation = resolve_activation(file, options, source);
  for (std::size_t layer = 0; layer + 1 < linear.weights.size(); ++layer) {
    config.hidden.push_back(linear.weights[layer].rows());
  }
  linear.weights.front() = reorder_to_x_t_c(linear.weights.front(), order, config);

  Mlp<Scalar> mlp(config);
  for (Index layer = 0; layer < mlp.layer_count(); ++layer) {
    mlp.set_weight(layer, linear.weights[layer]);
    mlp.set_bias(layer, linear.biases[layer]);
  }
  return mlp;
}

}  // namespace flowmatch::detail

namespace flowmatch::io {

/// The Mlp stored in @p file as an nn.Sequential state_dict (see the file comment).
/// @throws format_error if the tensors or metadata do not describe such a network (including
///   a weight too large for Scalar); std::invalid_argument if the activation is given by
///   neither metadata nor options, or a weight is not finite.
template <class Scalar = double>
Mlp<Scalar> load_mlp(const SafeTensors& file, const MlpLoadOptions& options = {}) {
  return detail::load_mlp_from<Scalar>(file, options, "buffer");
}

/// The Mlp stored in the safetensors file at @p path.
/// @throws io_error if the file cannot be read; otherwise as load_mlp(const SafeTensors&, ...).
template <class Scalar = double>
Mlp<Scalar> load_mlp(const std::string& path, const MlpLoadOptions& options = {}) {
  return detail::load_mlp_from<Scalar>(read_safetensors(path), options, path);
}

/// @p mlp as an nn.Sequential state_dict: tensors `2ℓ.weight`, `2ℓ.bias` for layer ℓ in
/// @p dtype (F32, the PyTorch default, or F64 to keep double weights exact), and the metadata
/// activation, input_order ("x,t" or "x,t,c"), time_embedding, time_frequencies (sinusoidal
/// only), dim and cond_dim.
/// @throws std::invalid_argument if @p dtype is not F32/F64 or a weight is too large for F32.
template <class Scalar>
SafeTensors mlp_to_safetensors(const Mlp<Scalar>& mlp, DType dtype) {
  const MlpConfig& config = mlp.config();
  SafeTensors file;
  file.metadata["activation"] = std::string(activation_name(config.activation));
  file.metadata["input_order"] = config.cond_dim > 0 ? "x,t,c" : "x,t";
  file.metadata["dim"] = std::to_string(config.dim);
  file.metadata["cond_dim"] = std::to_string(config.cond_dim);
  const Index frequencies = config.time_embedding.frequencies;
  file.metadata["time_embedding"] = frequencies == 0 ? "raw" : "sinusoidal";
  if (frequencies > 0) file.metadata["time_frequencies"] = std::to_string(frequencies);
  for (Index layer = 0; layer < mlp.layer_count(); ++layer) {
    const std::string name = std::to_string(2 * layer);
    file.tensors[name + ".weight"] = make_tensor(mlp.weight(layer), dtype);
    file.tensors[name + ".bias"] = make_vector_tensor(mlp.bias(layer), dtype);
  }
  return file;
}

/// Writes @p mlp to the safetensors file at @p path (see mlp_to_safetensors); the default
/// dtype keeps the network's precision (F64 for double, F32 for float).
/// @throws as mlp_to_safetensors; io_error if the file cannot be written.
template <class Scalar>
void save_mlp(const std::string& path, const Mlp<Scalar>& mlp,
              DType dtype = sizeof(Scalar) >= sizeof(double) ? DType::F64 : DType::F32) {
  write_safetensors(path, mlp_to_safetensors(mlp, dtype));
}

}  // namespace flowmatch::io
