// libFuzzer harness: parse_npy on arbitrary bytes. A format_error is the expected outcome for
// corrupt input; any other exception, a crash or a sanitizer report is a bug.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

#include "flowmatch/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const flowmatch::io::NpyArray array = flowmatch::io::parse_npy(std::span(data, size));
    // A parsed array must serialize and parse back to the same elements.
    const auto again = flowmatch::io::parse_npy(flowmatch::io::serialize_npy(array));
    // Compares bit patterns, so that NaN payloads count too.
    const bool same_values =
        std::equal(again.values.begin(), again.values.end(), array.values.begin(),
                   array.values.end(), [](double a, double b) {
                     return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b);
                   });
    if (again.shape != array.shape || again.integers != array.integers || !same_values) {
      __builtin_trap();
    }
  } catch (const flowmatch::io::format_error&) {
  }
  return 0;
}
