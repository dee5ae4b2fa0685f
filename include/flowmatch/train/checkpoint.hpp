/// @file checkpoint.hpp
/// @brief A training checkpoint (weights, Adam state, EMA weights, step count, generator state;
/// TrainingCheckpoint of training_checkpoint.hpp) as a safetensors file, restored bit for bit.
///
/// Requires nlohmann-json 3, as io/safetensors.hpp does.
///
/// Layout: the network's tensors and metadata exactly as io::mlp_to_safetensors writes them
/// (`0.weight`, `0.bias`, `2.weight`, …; a PyTorch state_dict filtered to those names loads in
/// an nn.Sequential), plus
///
/// | tensor / metadata key      | content                                                  |
/// |----------------------------|----------------------------------------------------------|
/// | `optimizer.first_moment`   | Adam's m, flat (train/parameters.hpp layout), 1-D        |
/// | `optimizer.second_moment`  | Adam's v, flat, 1-D                                      |
/// | `ema.average`              | the EMA of the parameters, flat, 1-D                     |
/// | `optimizer.step` (meta)    | Adam's step count t, decimal                             |
/// | `ema.updates` (meta)       | the EMA's update count, decimal                          |
/// | `step` (meta)              | the number of training steps taken, decimal              |
/// | `generator` (meta)         | the generator state as its operator<< writes it          |
///
/// Every tensor is stored in the precision of Scalar (F64 for double, F32 for float), so
/// writing and reading back gives the same values bit for bit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/io/io_error.hpp"
#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/safetensors.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/train/training_checkpoint.hpp"

namespace flowmatch {

namespace detail {

inline constexpr const char* kCheckpointPrefixes[] = {"optimizer.", "ema."};

inline std::int64_t checkpoint_count(const io::SafeTensors& file, const std::string& source,
                                     const std::string& key) {
  const std::optional<std::string> text = metadata_value(file, key);
  if (!text) throw io::format_error(source, "__metadata__ '" + key + "'", "missing");
  const std::optional<std::int64_t> value = parse_count(*text);
  if (!value) {
    throw io::format_error(source, "__metadata__ '" + key + "'",
                           "got '" + *text + "', expected a non-negative integer");
  }
  return *value;
}

template <class Scalar>
Vector<Scalar> checkpoint_vector(const io::SafeTensors& file, const std::string& source,
                                 const std::string& name) {
  const auto found = file.tensors.find(name);
  if (found == file.tensors.end()) {
    throw io::format_error(source, "tensor '" + name + "'", "missing");
  }
  return io::tensor_vector<Scalar>(found->second, name);
}

template <class Scalar>
TrainingCheckpoint<Scalar> checkpoint_from(const io::SafeTensors& file, const std::string& source) {
  io::SafeTensors network;
  network.metadata = file.metadata;
  for (const auto& [name, tensor] : file.tensors) {
    bool state = false;
    for (const char* prefix : kCheckpointPrefixes) state = state || name.starts_with(prefix);
    if (!state) network.tensors.emplace(name, tensor);
  }
  TrainingCheckpoint<Scalar> checkpoint{
      detail::load_mlp_from<Scalar>(network, {}, source), {}, {}, 0, {}};
  checkpoint.optimizer.first_moment =
      checkpoint_vector<Scalar>(file, source, "optimizer.first_moment");
  checkpoint.optimizer.second_moment =
      checkpoint_vector<Scalar>(file, source, "optimizer.second_moment");
  checkpoint.optimizer.step = checkpoint_count(file, source, "optimizer.step");
  checkpoint.ema.average = checkpoint_vector<Scalar>(file, source, "ema.average");
  checkpoint.ema.updates = checkpoint_count(file, source, "ema.updates");
  checkpoint.step = checkpoint_count(file, source, "step");
  const std::optional<std::string> generator = metadata_value(file, "generator");
  if (!generator) throw io::format_error(source, "__metadata__ 'generator'", "missing");
  checkpoint.generator_state = *generator;
  return checkpoint;
}

}  // namespace detail

/// @p checkpoint as safetensors content (see the file comment).
/// @throws std::invalid_argument if a weight or state entry is not finite or the step counts
///         are negative.
template <class Scalar>
[[nodiscard]] io::SafeTensors checkpoint_to_safetensors(
    const TrainingCheckpoint<Scalar>& checkpoint) {
  const io::DType dtype = sizeof(Scalar) >= sizeof(double) ? io::DType::F64 : io::DType::F32;
  detail::require_count<std::int64_t>("checkpoint_to_safetensors: step", checkpoint.step, 0);
  detail::require_count<std::int64_t>("checkpoint_to_safetensors: optimizer.step",
                                      checkpoint.optimizer.step, 0);
  detail::require_count<std::int64_t>("checkpoint_to_safetensors: ema.updates",
                                      checkpoint.ema.updates, 0);
  detail::require_finite("checkpoint_to_safetensors: optimizer.first_moment",
                         checkpoint.optimizer.first_moment);
  detail::require_finite("checkpoint_to_safetensors: optimizer.second_moment",
                         checkpoint.optimizer.second_moment);
  detail::require_finite("checkpoint_to_safetensors: ema.average", checkpoint.ema.average);
  io::SafeTensors file = io::mlp_to_safetensors(checkpoint.model, dtype);
  file.tensors["optimizer.first_moment"] =
      io::make_vector_tensor(checkpoint.optimizer.first_moment, dtype);
  file.tensors["optimizer.second_moment"] =
      io::make_vector_tensor(checkpoint.optimizer.second_moment, dtype);
  file.tensors["ema.average"] = io::make_vector_tensor(checkpoint.ema.average, dtype);
  file.metadata["optimizer.step"] = std::to_string(checkpoint.optimizer.step);
  file.metadata["ema.updates"] = std::to_string(checkpoint.ema.updates);
  file.metadata["step"] = std::to_string(checkpoint.step);
  file.metadata["generator"] = checkpoint.generator_state;
  return file;
}

/// The checkpoint held in @p file (see the file comment).
/// @throws io::format_error if a tensor or metadata entry is missing or malformed; as
///         io::load_mlp for the network.
template <class Scalar = double>
[[nodiscard]] TrainingCheckpoint<Scalar> checkpoint_from_safetensors(const io::SafeTensors& file) {
  return detail::checkpoint_from<Scalar>(file, "buffer");
}

/// Writes @p checkpoint to the safetensors file at @p path.
/// @throws as checkpoint_to_safetensors; io::io_error if the file cannot be written.
template <class Scalar>
void save_checkpoint(const std::string& path, const TrainingCheckpoint<Scalar>& checkpoint) {
  io::write_safetensors(path, checkpoint_to_safetensors(checkpoint));
}

/// Reads the checkpoint in the safetensors file at @p path.
/// @throws io::io_error if the file cannot be read; otherwise as checkpoint_from_safetensors.
template <class Scalar = double>
[[nodiscard]] TrainingCheckpoint<Scalar> load_checkpoint(const std::string& path) {
  return detail::checkpoint_from<Scalar>(io::read_safetensors(path), path);
}

}  // namespace flowmatch
