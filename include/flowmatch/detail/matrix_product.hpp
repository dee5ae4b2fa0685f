/// @file matrix_product.hpp
/// @brief Matrix products whose packing buffers outlive the product.
///
/// Eigen's blocked matrix product copies blocks of both operands into packing buffers. A
/// product expression (`out.noalias() = lhs * rhs`) takes them from the stack up to
/// EIGEN_STACK_ALLOCATION_LIMIT bytes and from the heap above it, at every product: a 256×256
/// float weight matrix alone needs 256 KiB. ProductBuffers runs the same blocked kernel with
/// buffers it keeps, so a product allocates only when it needs larger buffers than any product
/// before it. The blocking sizes are the ones Eigen computes for the product expression, so the
/// results are those of the general (blocked) product path for any shape.
#pragma once

#include "flowmatch/detail/eigen_core.hpp"

#include "flowmatch/core/types.hpp"

// The kernel's interface used below (with the result's inner stride) is that of Eigen 3.4.
static_assert(EIGEN_VERSION_AT_LEAST(3, 4, 0), "flowmatch needs Eigen 3.4 or later");

namespace flowmatch::detail {

/// Packing buffers for products of column-major operands, either of them possibly transposed,
/// and the products themselves. One object must not be used by two threads at once.
template <class Scalar>
class ProductBuffers : private Eigen::internal::level3_blocking<Scalar, Scalar> {
 public:
  ProductBuffers() = default;
  // The base class keeps raw pointers into the buffers below: copies get their own buffers.
  ProductBuffers(const ProductBuffers&) : ProductBuffers() {}
  ProductBuffers& operator=(const ProductBuffers&) { return *this; }

  /// out = lhs·rhs, or out += lhs·rhs if @p accumulate; lhs m×k, rhs k×n, out m×n.
  void multiply(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                MatrixRef<Scalar> out, bool accumulate = false) {
    eigen_assert(lhs.cols() == rhs.rows() && out.rows() == lhs.rows() && out.cols() == rhs.cols());
    run<Eigen::ColMajor, Eigen::ColMajor>(lhs.rows(), rhs.cols(), lhs.cols(), lhs, rhs, out,
                                          accumulate);
  }

  /// out = lhsᵀ·rhs, or out += lhsᵀ·rhs if @p accumulate; lhs k×m, rhs k×n, out m×n.
  void multiply_transposed_lhs(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                               MatrixRef<Scalar> out, bool accumulate = false) {
    eigen_assert(lhs.rows() == rhs.rows() && out.rows() == lhs.cols() && out.cols() == rhs.cols());
    // The transpose of a column-major matrix is the same memory read as row-major.
    run<Eigen::RowMajor, Eigen::ColMajor>(lhs.cols(), rhs.cols(), lhs.rows(), lhs, rhs, out,
                                          accumulate);
  }

  /// out = lhs·rhsᵀ, or out += lhs·rhsᵀ if @p accumulate; lhs m×k, rhs n×k, out m×n.
  void multiply_transposed_rhs(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                               MatrixRef<Scalar> out, bool accumulate = false) {
    eigen_assert(lhs.cols() == rhs.cols() && out.rows() == lhs.rows() && out.cols() == rhs.rows());
    run<Eigen::ColMajor, Eigen::RowMajor>(lhs.rows(), rhs.rows(), lhs.cols(), lhs, rhs, out,
                                          accumulate);
  }

 private:
  // out (+)= op(lhs)·op(rhs) for a rows×depth by depth×cols product, where op reads a
  // column-major operand as stored (ColMajor) or as its transpose (RowMajor).
  template <int LhsStorageOrder, int RhsStorageOrder>
  void run(Index rows, Index cols, Index depth, const ConstMatrixRef<Scalar>& lhs,
           const ConstMatrixRef<Scalar>& rhs, MatrixRef<Scalar>& out, bool accumulate) {
    if (!accumulate) out.setZero();
    if (rows == 0 || cols == 0 || depth == 0) return;
    prepare(rows, cols, depth);
    Eigen::internal::general_matrix_matrix_product<
        Index, Scalar, LhsStorageOrder, false, Scalar, RhsStorageOrder, false, Eigen::ColMajor,
        1>::run(rows, cols, depth, lhs.data(), lhs.outerStride(), rhs.data(), rhs.outerStride(),
                out.data(), 1, out.outerStride(), Scalar(1), *this, nullptr);
  }

  // Eigen's blocking for a rows×depth by depth×cols product (kc, mc, nc), with the buffers
  // grown to hold a kc×mc block of lhs and a kc×nc block of rhs.
  void prepare(Index rows, Index cols, Index depth) {
    Index depth_block = depth;
    Index row_block = rows;
    Index col_block = cols;
    Eigen::internal::computeProductBlockingSizes<Scalar, Scalar, 1, Index>(depth_block, row_block,
                                                                           col_block, Index(1));
    if (lhs_block_.size() < depth_block * row_block) lhs_block_.resize(depth_block * row_block);
    if (rhs_block_.size() < depth_block * col_block) rhs_block_.resize(depth_block * col_block);
    this->m_kc = depth_block;
    this->m_mc = row_block;
    this->m_nc = col_block;
    this->m_blockA = lhs_block_.data();
    this->m_blockB = rhs_block_.data();
  }

  Vector<Scalar> lhs_block_;
  Vector<Scalar> rhs_block_;
};

}  // namespace flowmatch::detail
