/// @file named_values.hpp
/// @brief Lookups in a table of (value, name) pairs, for enumerations and named settings.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "flowmatch/detail/validate.hpp"

namespace flowmatch::detail {

/// The name paired with @p value in @p table; throws std::invalid_argument naming @p what.
template <class Table, class Value>
std::string_view name_in(const Table& table, const Value& value, std::string_view what) {
  for (const auto& [candidate, name] : table) {
    if (candidate == value) return name;
  }
  reject_argument(what, is_value(static_cast<long long>(value)), "one of its enumerators");
}

/// The value paired with @p name in @p table; an unknown name throws std::invalid_argument
/// listing the valid names.
template <class Table>
auto value_named(const Table& table, std::string_view name, std::string_view what) {
  std::string valid;
  for (const auto& [value, candidate] : table) {
    if (candidate == name) return value;
    valid += (valid.empty() ? "" : ", ") + std::string(candidate);
  }
  reject_argument(what, "is '" + std::string(name) + "'", "one of: " + valid);
}

}  // namespace flowmatch::detail
