// Reading the tool's input files and checking them against the model: every mismatch is a
// one-line error naming the file.
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/nn/activation.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "options.hpp"

namespace flowmatch_cli {

/// The network in the safetensors file at @p path; @p activation overrides its metadata.
template <class Scalar>
std::shared_ptr<const flowmatch::Mlp<Scalar>> load_model(
    const std::string& path, const std::optional<std::string>& activation) {
  flowmatch::io::MlpLoadOptions load;
  if (activation) load.activation = flowmatch::activation_from_name(*activation);
  return std::make_shared<const flowmatch::Mlp<Scalar>>(
      flowmatch::io::load_mlp<Scalar>(path, load));
}

/// The dimensions of a model whose points and conditions the tool reads: `dim()` and
/// `cond_dim()` (0 for an unconditional model); flowmatch::Mlp is one.
template <class Model>
concept ModelDimensions = requires(const Model& model) {
  { model.dim() } -> std::convertible_to<flowmatch::Index>;
  { model.cond_dim() } -> std::convertible_to<flowmatch::Index>;
};

/// A nonempty [N, d] batch of points with the model's dimension d.
template <class Scalar, ModelDimensions Model>
flowmatch::Matrix<Scalar> load_points(const std::string& path, const std::string& option,
                                      const Model& model) {
  flowmatch::Matrix<Scalar> points = flowmatch::io::load_npy_batch<Scalar>(path);
  if (points.cols() == 0) throw std::invalid_argument(option + " " + path + " holds no points");
  if (points.rows() != model.dim()) {
    throw std::invalid_argument(option + " " + path + " holds points of dimension " +
                                std::to_string(points.rows()) + ", the model's dimension is " +
                                std::to_string(model.dim()));
  }
  return points;
}

/// The conditions of --cond or --labels (k×N, one column per sample), if given. Label ℓ becomes
/// the one-hot column e_ℓ of length --num-classes; label −1 the all-zeros null condition.
template <class Scalar>
std::optional<flowmatch::Matrix<Scalar>> read_conditions(const ConditionOptions& options,
                                                         flowmatch::Index samples) {
  const auto require_count = [samples](const std::string& what, flowmatch::Index count) {
    if (count != samples) {
      throw std::invalid_argument(what + " has " + std::to_string(count) + " entries, expected " +
                                  std::to_string(samples) + " (one per sample)");
    }
  };
  if (!options.cond.empty()) {
    flowmatch::Matrix<Scalar> conditions = flowmatch::io::load_npy_batch<Scalar>(options.cond);
    require_count("--cond " + options.cond, conditions.cols());
    return conditions;
  }
  if (options.labels.empty()) return std::nullopt;
  if (!options.num_classes) throw std::invalid_argument("--labels needs --num-classes");
  const std::vector<std::int64_t> labels = flowmatch::io::load_npy_labels(options.labels);
  require_count("--labels " + options.labels, static_cast<flowmatch::Index>(labels.size()));
  const std::int64_t classes = *options.num_classes;
  flowmatch::Matrix<Scalar> one_hot = flowmatch::Matrix<Scalar>::Zero(classes, samples);
  for (flowmatch::Index n = 0; n < samples; ++n) {
    const std::int64_t label = labels[static_cast<std::size_t>(n)];
    if (label < -1 || label >= classes) {
      throw std::invalid_argument("--labels " + options.labels + ": label " +
                                  std::to_string(label) + " of sample " + std::to_string(n) +
                                  " is outside [0, " + std::to_string(classes) +
                                  ") and is not -1 (null)");
    }
    if (label >= 0) one_hot(label, n) = Scalar(1);
  }
  return one_hot;
}

/// The conditions for @p samples samples of @p model: required and of its cond_dim rows for a
/// conditional model, forbidden for an unconditional one.
template <class Scalar>
std::optional<flowmatch::Matrix<Scalar>> load_conditions(const ConditionOptions& options,
                                                         flowmatch::Index samples,
                                                         const flowmatch::Mlp<Scalar>& model) {
  std::optional<flowmatch::Matrix<Scalar>> conditions = read_conditions<Scalar>(options, samples);
  if (model.cond_dim() == 0 && conditions) {
    throw std::invalid_argument(
        "the model is unconditional; --cond and --labels apply to conditional models");
  }
  if (model.cond_dim() > 0 && !conditions) {
    throw std::invalid_argument("the model is conditional (condition size " +
                                std::to_string(model.cond_dim()) +
                                "); give --cond or --labels with --num-classes");
  }
  if (conditions && conditions->rows() != model.cond_dim()) {
    throw std::invalid_argument(
        std::string("the conditions have ") + std::to_string(conditions->rows()) +
        " entries per sample, the model expects " + std::to_string(model.cond_dim()));
  }
  return conditions;
}

/// The guidance weights of --guidance or --guidance-file (one per sample), if given.
template <class Scalar, ModelDimensions Model>
std::optional<flowmatch::Vector<Scalar>> load_guidance(const GuidanceOptions& options,
                                                       flowmatch::Index samples,
                                                       const Model& model) {
  if (!options.weight && options.weight_file.empty()) return std::nullopt;
  if (model.cond_dim() == 0) {
    throw std::invalid_argument("guidance needs a conditional model; this model is unconditional");
  }
  if (options.weight) {
    return flowmatch::Vector<Scalar>::Constant(samples, static_cast<Scalar>(*options.weight));
  }
  flowmatch::Vector<Scalar> weights = flowmatch::io::load_npy_vector<Scalar>(options.weight_file);
  if (weights.size() != samples) {
    throw std::invalid_argument("--guidance-file " + options.weight_file + " has " +
                                std::to_string(weights.size()) + " weights, expected " +
                                std::to_string(samples) + " (one per sample)");
  }
  return weights;
}

}  // namespace flowmatch_cli
