/// @file arguments.hpp
/// @brief Command-line argument parsing shared by the examples.
#pragma once

#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>

namespace arguments {

/// The whole number ≥ 1 written in @p text. @throws std::invalid_argument naming @p what
/// otherwise.
inline std::int64_t positive_count(const std::string& text, const std::string& what) {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error != std::errc() || stop != end || value < 1) {
    throw std::invalid_argument(what + " must be a whole number >= 1, got '" + text + "'");
  }
  return value;
}

}  // namespace arguments
