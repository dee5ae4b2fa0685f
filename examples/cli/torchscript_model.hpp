// TorchScript models in the tool: `--model model.pt --shape 1,8,8`. A TorchScript file is
// recognised by its content (a zip archive); torchscript_model.cpp, the one file of the tool that
// includes LibTorch's headers, turns it into a field. It is compiled only when CMake finds
// LibTorch (target flowmatch::torch, which defines FLOWMATCH_CLI_WITH_TORCH); otherwise such a
// model is a one-line error.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/field/any_field.hpp"

namespace flowmatch_cli {

/// Whether the file at @p path is a TorchScript archive: a zip file, "PK\x03\x04" first.
inline bool is_torchscript_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  char magic[4] = {};
  file.read(magic, 4);
  return file.gcount() == 4 && std::string_view(magic, 4) == std::string_view("PK\x03\x04", 4);
}

/// The conditions of a TorchScript model, as the module receives them.
enum class TorchScriptConditions {
  none,     ///< forward(x, t)
  labels,   ///< forward(x, t, c), c int64 labels [N] (the condition matrix is 1×N)
  vectors,  ///< forward(x, t, c), c float [N, k]
};

/// The TorchScript module at @p path with sample shape @p shape as a field over Scalar: its
/// @p conditions bound (k×N, or 1×N labels), guided with @p guidance_weights if given, the null
/// condition being @p null_label for labels and zeros for vectors; LibTorch on @p threads
/// threads.
/// @throws std::invalid_argument (flowmatch::torch_model_error) for a module that does not fit,
///         or when the tool was built without LibTorch.
template <class Scalar>
flowmatch::AnyField<Scalar> torchscript_field(
    const std::string& path, const std::vector<std::int64_t>& shape, TorchScriptConditions kind,
    const std::optional<flowmatch::Matrix<Scalar>>& conditions,
    const std::optional<flowmatch::Vector<Scalar>>& guidance_weights,
    std::optional<std::int64_t> null_label, int threads);

}  // namespace flowmatch_cli
