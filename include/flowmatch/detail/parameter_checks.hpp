/// @file parameter_checks.hpp
/// @brief Range checks of scalar parameters and sample counts (internal). A check that passes
/// does not allocate: the message is composed only when it fails.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>
#include <string_view>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch::detail {

/// Throws std::invalid_argument naming @p name unless @p value is finite and ≥ 0.
template <class Scalar>
void require_nonnegative(std::string_view name, Scalar value) {
  if (!(value >= Scalar(0)) || !std::isfinite(value)) {
    throw std::invalid_argument(std::string(name) + " is " + to_text(value) +
                                ", expected finite and >= 0");
  }
}

/// Throws std::invalid_argument naming @p name unless @p value is finite and > 0.
template <class Scalar>
void require_positive(std::string_view name, Scalar value) {
  if (!(value > Scalar(0)) || !std::isfinite(value)) {
    throw std::invalid_argument(std::string(name) + " is " + to_text(value) +
                                ", expected finite and > 0");
  }
}

/// Throws std::invalid_argument naming @p name unless lower ≤ value < upper.
template <class Scalar>
void require_in_range(std::string_view name, Scalar value, Scalar lower, Scalar upper) {
  if (!(value >= lower && value < upper)) {
    throw std::invalid_argument(std::string(name) + " is " + to_text(value) + ", expected in [" +
                                to_text(lower) + ", " + to_text(upper) + ")");
  }
}

/// Throws std::invalid_argument naming @p name unless the count @p value is ≥ @p minimum.
template <class Integer>
void require_count(std::string_view name, Integer value, Integer minimum) {
  if (value < minimum) {
    throw std::invalid_argument(std::string(name) + " is " + to_text(value) +
                                ", expected >= " + to_text(minimum));
  }
}

}  // namespace flowmatch::detail
