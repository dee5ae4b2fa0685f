// TorchScript models in the tool: `--model model.pt --shape 1,8,8`. A TorchScript file is
// recognised by its content (a zip archive); torchscript_model.cpp, the one file of the tool that
// includes LibTorch's headers, turns it into a field. That file is a loadable module of its own
// (flowmatch_torch_models.so, beside the executable), opened with dlopen on the first TorchScript
// model: linking LibTorch into the tool would cost every run about a second of start-up
// (loading and initialising LibTorch's libraries), TorchScript model or not. The module is built
// only when CMake finds LibTorch (target flowmatch::torch, which defines FLOWMATCH_CLI_WITH_TORCH
// and FLOWMATCH_CLI_TORCH_MODULE); otherwise such a model is a one-line error.
#pragma once

#include <dlfcn.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
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

/// The factory of torchscript_field for one scalar type (see below).
template <class Scalar>
using TorchScriptFieldFactory = flowmatch::AnyField<Scalar> (*)(
    const std::string& path, const std::vector<std::int64_t>& shape, TorchScriptConditions kind,
    const std::optional<flowmatch::Matrix<Scalar>>& conditions,
    const std::optional<flowmatch::Vector<Scalar>>& guidance_weights,
    std::optional<std::int64_t> null_label, int threads);

/// What the LibTorch module of the tool exports (its one C entry point returns a pointer to it).
struct TorchScriptFactories {
  TorchScriptFieldFactory<float> make_float;
  TorchScriptFieldFactory<double> make_double;
};

/// The name of the module's entry point: `const TorchScriptFactories* entry()`.
inline constexpr const char* torchscript_entry_point = "flowmatch_cli_torchscript_factories";

#ifdef FLOWMATCH_CLI_TORCH_MODULE
/// The factories of the LibTorch module beside the executable, loaded on the first call and kept
/// loaded (the fields they make run the module's code).
/// @throws std::runtime_error naming the module when it cannot be loaded.
inline const TorchScriptFactories& torchscript_factories() {
  static const TorchScriptFactories* const factories = [] {
    const std::filesystem::path module =
        std::filesystem::read_symlink("/proc/self/exe").parent_path() / FLOWMATCH_CLI_TORCH_MODULE;
    void* handle = dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      throw std::runtime_error("cannot load " + module.string() +
                               ", the LibTorch part of flowmatch: " + dlerror());
    }
    void* symbol = dlsym(handle, torchscript_entry_point);
    if (symbol == nullptr) {
      throw std::runtime_error(module.string() + " has no " + torchscript_entry_point);
    }
    const auto entry = reinterpret_cast<const TorchScriptFactories* (*)()>(symbol);
    return entry();
  }();
  return *factories;
}

/// The TorchScript module at @p path with sample shape @p shape as a field over Scalar: its
/// @p conditions bound (k×N, or 1×N labels), guided with @p guidance_weights if given, the null
/// condition being @p null_label for labels and zeros for vectors; LibTorch on @p threads
/// threads.
/// @throws std::invalid_argument (flowmatch::torch_model_error) for a module that does not fit;
///         std::runtime_error when the LibTorch module cannot be loaded.
template <class Scalar>
flowmatch::AnyField<Scalar> torchscript_field(
    const std::string& path, const std::vector<std::int64_t>& shape, TorchScriptConditions kind,
    const std::optional<flowmatch::Matrix<Scalar>>& conditions,
    const std::optional<flowmatch::Vector<Scalar>>& guidance_weights,
    std::optional<std::int64_t> null_label, int threads) {
  const TorchScriptFactories& factories = torchscript_factories();
  if constexpr (std::is_same_v<Scalar, float>) {
    return factories.make_float(path, shape, kind, conditions, guidance_weights, null_label,
                                threads);
  } else {
    return factories.make_double(path, shape, kind, conditions, guidance_weights, null_label,
                                 threads);
  }
}
#endif

}  // namespace flowmatch_cli
