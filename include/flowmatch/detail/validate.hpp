/// @file validate.hpp
/// @brief Argument checks shared by the public functions (internal).
#pragma once

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

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
inline std::string argument_name(const char* function, const char* argument) {
  return std::string(function) + ": " + argument;
}

/// Index of the first column of @p matrix holding a non-finite entry, or -1 if all are finite.
template <class Derived>
Index first_nonfinite_column(const Eigen::DenseBase<Derived>& matrix) {
  for (Index col = 0; col < matrix.cols(); ++col) {
    if (!matrix.col(col).allFinite()) return col;
  }
  return -1;
}

/// Throws std::invalid_argument naming @p name unless @p matrix is rows×cols
/// (a negative expected size is not checked).
template <class Derived>
void require_shape(const char* name, const Eigen::DenseBase<Derived>& matrix, Index rows,
                   Index cols) {
  if ((rows >= 0 && matrix.rows() != rows) || (cols >= 0 && matrix.cols() != cols)) {
    throw std::invalid_argument(std::string(name) + " has shape " + to_text(matrix.rows()) + "x" +
                                to_text(matrix.cols()) + ", expected " +
                                (rows >= 0 ? to_text(rows) : std::string("any")) + "x" +
                                (cols >= 0 ? to_text(cols) : std::string("any")));
  }
}

/// Throws std::invalid_argument unless every entry of @p matrix is finite, naming @p name, the
/// value and the place of the first bad entry (in column-major order): its index in a vector
/// (a row or column vector at compile time), its column (the sample) and row in a matrix.
template <class Derived>
void require_finite(const char* name, const Eigen::DenseBase<Derived>& matrix) {
  const Index col = first_nonfinite_column(matrix);
  if (col < 0) return;
  Index row = 0;
  while (matrix.col(col).segment(row, 1).allFinite()) ++row;
  const std::string entry = std::string(name) + " has a non-finite entry ";
  const std::string value = to_text(matrix(row, col));
  if constexpr (Derived::IsVectorAtCompileTime) {
    const Index index = Derived::ColsAtCompileTime == 1 ? row : col;
    throw std::invalid_argument(entry + "at index " + to_text(index) + " (value " + value + ")");
  } else {
    throw std::invalid_argument(entry + "in column " + to_text(col) + " (row " + to_text(row) +
                                ", value " + value + ")");
  }
}

/// Throws std::invalid_argument unless @p value is finite.
template <class Scalar>
void require_finite_value(const char* name, Scalar value) {
  if (!std::isfinite(static_cast<double>(value))) {
    throw std::invalid_argument(std::string(name) + " must be finite, got " + to_text(value));
  }
}

/// Throws std::domain_error unless t is a finite time in [0, 1].
template <class Scalar>
void require_unit_time(const char* name, Scalar t) {
  if (!(t >= Scalar(0) && t <= Scalar(1))) {
    throw std::domain_error(std::string(name) + " must lie in [0, 1], got " + to_text(t));
  }
}

}  // namespace flowmatch::detail
