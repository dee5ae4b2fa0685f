/// @file shape.hpp
/// @brief Array shapes of the file formats (internal): printing and checked element counts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>

#include "flowmatch/detail/bytes.hpp"

namespace flowmatch::detail {

/// A shape as a Python tuple, the notation of numpy: (16, 2), (16,) or ().
inline std::string shape_text(std::span<const std::int64_t> shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  }
  return text + (shape.size() == 1 ? ",)" : ")");
}

/// The number of elements of @p shape; throws std::invalid_argument naming @p name unless every
/// extent is non-negative and the byte size of the elements (at most 8 bytes each) fits in
/// 64 bits.
inline std::uint64_t shape_element_count(const std::string& name,
                                         std::span<const std::int64_t> shape) {
  const bool negative = std::any_of(shape.begin(), shape.end(), [](auto n) { return n < 0; });
  const auto count = negative
                         ? std::nullopt
                         : checked_product(shape, std::numeric_limits<std::uint64_t>::max() / 8);
  if (!count) {
    throw std::invalid_argument(name + " has shape " + shape_text(shape) +
                                ", expected non-negative extents with a product that fits in "
                                "memory");
  }
  return *count;
}

}  // namespace flowmatch::detail
