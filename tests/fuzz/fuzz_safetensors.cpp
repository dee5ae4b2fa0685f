// libFuzzer harness: parse_safetensors on arbitrary bytes. A format_error is the expected
// outcome for corrupt input; any other exception, a crash or a sanitizer report is a bug.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

#include "flowmatch/io/safetensors.hpp"

namespace {

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](double x, double y) {
    return std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace io = flowmatch::io;
  try {
    const io::SafeTensors file = io::parse_safetensors(std::span(data, size));
    bool writable = true;
    for (const auto& [name, tensor] : file.tensors) {
      const std::uint64_t count =
          flowmatch::detail::shape_element_count("tensor '" + name + "'", tensor.shape);
      if (count != tensor.values.size()) __builtin_trap();
      writable = writable && (tensor.dtype == io::DType::F32 || tensor.dtype == io::DType::F64);
    }
    if (!writable) return 0;
    // A file of F32 and F64 tensors must serialize and parse back to the same content.
    const io::SafeTensors again = io::parse_safetensors(io::serialize_safetensors(file));
    if (again.metadata != file.metadata || again.tensors.size() != file.tensors.size()) {
      __builtin_trap();
    }
    for (const auto& [name, tensor] : file.tensors) {
      const io::Tensor& copy = again.tensors.at(name);
      if (copy.dtype != tensor.dtype || copy.shape != tensor.shape ||
          !same_bits(copy.values, tensor.values)) {
        __builtin_trap();
      }
    }
  } catch (const io::format_error&) {
  }
  return 0;
}
