/// @file time_grid.hpp
/// @brief Checks of time grids and the split of a grid interval into fixed steps (internal;
/// shared by the ODE, SDE and discrete samplers).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>

#include "flowmatch/detail/validate.hpp"

namespace flowmatch::detail {

/// A grid written as a braced list, as the span the integrators take (valid for the call
/// whose argument the list is).
template <class Scalar>
std::span<const Scalar> grid_span(std::initializer_list<Scalar> times) {
  return {times.begin(), times.size()};
}

/// Throws std::invalid_argument unless @p times runs strictly monotonically from @p first to
/// @p last (@p function names the caller).
template <class Scalar>
void require_end_to_end_grid(const char* function, std::span<const Scalar> times, Scalar first,
                             Scalar last) {
  bool valid = times.size() >= 2 && times.front() == first && times.back() == last;
  for (std::size_t k = 1; valid && k < times.size(); ++k) {
    valid = first < last ? times[k - 1] < times[k] : times[k - 1] > times[k];
  }
  if (!valid) {
    reject_argument(
        argument_name(function, "times"),
        "has " + to_text(times.size()) + " entries" +
            (times.empty() ? std::string()
                           : " from " + to_text(times.front()) + " to " + to_text(times.back())),
        std::string("times running strictly ") + (first < last ? "increasing" : "decreasing") +
            " from " + to_text(first) + " to " + to_text(last));
  }
}

/// Throws unless @p times has at least two entries, all in [0, 1] (std::domain_error),
/// strictly monotone (std::invalid_argument); @p function names the caller.
template <class Scalar>
void validate_grid(const char* function, std::span<const Scalar> times) {
  if (times.size() < 2) {
    reject_argument(argument_name(function, "times"), "has " + to_text(times.size()) + " entries",
                    "at least 2 grid times");
  }
  for (std::size_t k = 0; k < times.size(); ++k) {
    if (!(times[k] >= Scalar(0) && times[k] <= Scalar(1))) {
      reject_argument<std::domain_error>(argument_name(function, "times[" + to_text(k) + "]"),
                                         is_value(times[k]), "in [0, 1]");
    }
  }
  const bool increasing = times[1] > times[0];
  for (std::size_t k = 1; k < times.size(); ++k) {
    if (increasing ? !(times[k] > times[k - 1]) : !(times[k] < times[k - 1])) {
      reject_argument(
          argument_name(function, "times[" + to_text(k) + "]"),
          is_value(times[k]) + " after times[" + to_text(k - 1) + "] = " + to_text(times[k - 1]),
          std::string("strictly ") + (increasing ? "increasing" : "decreasing") +
              " times (as the first two)");
    }
  }
}

/// Number of equal steps of size at most @p step into which an interval of length @p length
/// is split: ceil(length/step), not counting a ratio within a few rounding errors above an
/// integer as an extra step.
template <class Scalar>
std::size_t fixed_step_count(Scalar length, Scalar step) {
  const Scalar ratio = std::abs(length) / step;
  const Scalar slack = Scalar(4) * std::numeric_limits<Scalar>::epsilon() * ratio;
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(ratio - slack)));
}

}  // namespace flowmatch::detail
