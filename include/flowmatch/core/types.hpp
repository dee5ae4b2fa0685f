/// @file types.hpp
/// @brief Batch and vector types shared by every part of flowmatch.
///
/// A batch of N points in R^d is a d×N column-major matrix: one column per sample. This is
/// the memory layout of a C-order NumPy array of shape [N, d]. Per-sample scalars (times,
/// log-densities, guidance weights) are length-N column vectors.
#pragma once

#include <concepts>

#include "flowmatch/detail/eigen_core.hpp"

namespace flowmatch {

/// Index type for rows, columns and sample numbers.
using Index = Eigen::Index;

/// A d×N batch: one column per sample.
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// A length-N vector of per-sample scalars, or a single point in R^d.
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Writable view of a batch (a whole matrix or a block of whole columns).
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;

/// Read-only view of a batch; binds to matrices and column blocks without a copy.
template <class Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;

/// Writable view of a per-sample vector.
template <class Scalar>
using VectorRef = Eigen::Ref<Vector<Scalar>>;

/// Read-only view of a per-sample vector.
template <class Scalar>
using ConstVectorRef = Eigen::Ref<const Vector<Scalar>>;

/// An Eigen matrix or expression type whose entries are @p Scalar (for constraints such as
/// `template <MatrixOf<double> Derived> f(const Eigen::MatrixBase<Derived>&)`).
template <class Derived, class Scalar>
concept MatrixOf = std::same_as<typename Derived::Scalar, Scalar>;

}  // namespace flowmatch
