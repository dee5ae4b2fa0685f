/// @file validate.hpp
/// @brief The argument checks of the public functions (internal): one vocabulary, one message
/// grammar.
///
/// Every check takes the name of what it checks as "<function>: <argument>" — the public
/// function, class or member where the check runs, then the argument, option or member as the
/// user writes it (`"log_likelihood: x"`, `"SolverOptions: tstops[2]"`) — and a failing check
/// throws with the message
///
///     <function>: <argument> <finding>, expected <expectation>
///
/// where the finding states what was given — `is <value>` for a scalar, `has shape <r>x<c>` for
/// a shape, `has a non-finite entry at index <i> (value <v>)` for a vector and
/// `has a non-finite entry in column <c> (row <r>, value <v>)` for a matrix (the column is the
/// sample) — and the expectation states what would have passed (`finite`, `> 0`, `in [0, 1]`,
/// `2x5`, ...). For example: "SolverOptions: rtol is -1, expected finite and > 0".
///
/// Exception types: std::invalid_argument for a bad argument, std::domain_error for a time
/// outside [0, 1] (require_unit_time). A check that passes does not allocate: the message is
/// composed only when it fails. Checks run once, where the argument enters the library; the
/// right-hand side of an integration does not repeat them (the integrator checks its state).
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "flowmatch/core/types.hpp"

namespace flowmatch::detail {

/// Formats a value for an error message with enough digits to be unambiguous.
template <class T>
std::string to_text(const T& value) {
  std::ostringstream stream;
  stream.precision(17);
  stream << value;
  return stream.str();
}

/// "function: argument", the name of an argument in an error message. Compose it only once a
/// check has failed, so that passing checks do not allocate.
inline std::string argument_name(std::string_view function, std::string_view argument) {
  return std::string(function) + ": " + std::string(argument);
}

/// Throws @p Exception with the message "<name> <finding>, expected <expectation>" (see the
/// file comment): the failure branch of every check, and of the checks too specific for a
/// function of their own.
template <class Exception = std::invalid_argument>
[[noreturn]] void reject_argument(std::string_view name, std::string_view finding,
                                  std::string_view expectation) {
  throw Exception(std::string(name) + " " + std::string(finding) + ", expected " +
                  std::string(expectation));
}

/// "is <value>", the finding of a scalar check.
template <class T>
std::string is_value(const T& value) {
  return "is " + to_text(value);
}

/// The first non-finite entry of @p values, or -1 if all are finite: its index in a vector (a
/// row or column vector at compile time), its column (the sample) in a matrix.
template <class Derived>
Index first_nonfinite_index(const Eigen::DenseBase<Derived>& values) {
  if (values.allFinite()) return -1;
  if constexpr (Derived::IsVectorAtCompileTime) {
    Index index = 0;
    while (values.segment(index, 1).allFinite()) ++index;
    return index;
  } else {
    Index col = 0;
    while (values.col(col).allFinite()) ++col;
    return col;
  }
}

/// Throws std::invalid_argument unless @p matrix is rows×cols (a negative expected size is not
/// checked, and reads "any" in the message).
template <class Derived>
void require_shape(std::string_view name, const Eigen::DenseBase<Derived>& matrix, Index rows,
                   Index cols) {
  if ((rows >= 0 && matrix.rows() != rows) || (cols >= 0 && matrix.cols() != cols)) {
    const auto size = [](Index expected) {
      return expected >= 0 ? to_text(expected) : std::string("any");
    };
    reject_argument(name, "has shape " + to_text(matrix.rows()) + "x" + to_text(matrix.cols()),
                    size(rows) + "x" + size(cols));
  }
}

/// Throws std::invalid_argument unless every entry of @p matrix is finite, naming the place and
/// the value of the first bad entry (see first_nonfinite_index).
template <class Derived>
void require_finite(std::string_view name, const Eigen::DenseBase<Derived>& matrix) {
  const Index index = first_nonfinite_index(matrix);
  if (index < 0) return;
  if constexpr (Derived::IsVectorAtCompileTime) {
    reject_argument(name,
                    "has a non-finite entry at index " + to_text(index) + " (value " +
                        to_text(matrix(index)) + ")",
                    "finite entries");
  } else {
    Index row = 0;
    while (matrix.col(index).segment(row, 1).allFinite()) ++row;
    reject_argument(name,
                    "has a non-finite entry in column " + to_text(index) + " (row " + to_text(row) +
                        ", value " + to_text(matrix(row, index)) + ")",
                    "finite entries");
  }
}

/// Throws std::invalid_argument unless @p x is a finite d×N batch with d >= 1 rows.
template <class Derived>
void require_batch(std::string_view name, const Eigen::DenseBase<Derived>& x) {
  if (x.rows() == 0) {
    reject_argument(name, "has shape 0x" + to_text(x.cols()), "a d×N batch with d >= 1");
  }
  require_finite(name, x);
}

/// Throws std::invalid_argument unless @p x is a finite d×N batch with d, N >= 1.
template <class Derived>
void require_nonempty_batch(std::string_view name, const Eigen::DenseBase<Derived>& x) {
  if (x.cols() == 0) {
    reject_argument(name, "has shape " + to_text(x.rows()) + "x0", "a d×N batch with N >= 1");
  }
  require_batch(name, x);
}

/// Throws std::invalid_argument unless @p value is finite.
template <class Scalar>
void require_finite_value(std::string_view name, Scalar value) {
  if (!std::isfinite(static_cast<double>(value))) reject_argument(name, is_value(value), "finite");
}

/// Throws std::domain_error unless @p t is a time in [0, 1] (NaN fails).
template <class Scalar>
void require_unit_time(std::string_view name, Scalar t) {
  if (!(t >= Scalar(0) && t <= Scalar(1))) {
    reject_argument<std::domain_error>(name, is_value(t), "in [0, 1]");
  }
}

/// Throws std::invalid_argument unless @p value is finite and >= 0.
template <class Scalar>
void require_nonnegative(std::string_view name, Scalar value) {
  if (!(value >= Scalar(0)) || !std::isfinite(value)) {
    reject_argument(name, is_value(value), "finite and >= 0");
  }
}

/// Throws std::invalid_argument unless @p value is finite and > 0.
template <class Scalar>
void require_positive(std::string_view name, Scalar value) {
  if (!(value > Scalar(0)) || !std::isfinite(value)) {
    reject_argument(name, is_value(value), "finite and > 0");
  }
}

/// Throws std::invalid_argument unless lower <= @p value < upper (NaN fails).
template <class Scalar>
void require_in_range(std::string_view name, Scalar value, Scalar lower, Scalar upper) {
  if (!(value >= lower && value < upper)) {
    reject_argument(name, is_value(value), "in [" + to_text(lower) + ", " + to_text(upper) + ")");
  }
}

/// Throws std::invalid_argument unless the count @p value is >= @p minimum.
template <class Integer>
void require_count(std::string_view name, Integer value, Integer minimum) {
  if (value < minimum) reject_argument(name, is_value(value), ">= " + to_text(minimum));
}

}  // namespace flowmatch::detail
