/// @file matrix_product.hpp
/// @brief Matrix products for the network's layers: the AMX tile unit for float layers where the
/// build and the processor have it (tile_unit_product.hpp), register-tiled kernels for the
/// shapes of hidden layers, dot products for the few rows below the tiles, a column-wise kernel
/// for products a few entries deep (an input layer), and Eigen's blocked product with packing
/// buffers that outlive it for the rest.
///
/// The products of a network's hidden layers are W·H with W a few hundred rows deep and H a
/// panel of a few hundred columns. For them a register-tiled kernel (below) reads both operands
/// in place and keeps a tile of the result in vector registers over the whole depth, where
/// Eigen's general product reaches about 60 % of the processor's peak on these shapes (the
/// measurements are in the README). On a 2-core Sapphire Rapids Xeon (AVX-512, two FMA ports,
/// about 210 GFLOP/s per core in float), with H in the second-level cache, it runs at
/// 165–170 GFLOP/s, about 80 % of that peak; the tile's loop itself (2 loads and 14 broadcasts
/// beside its 28 multiply-adds per step) stays below about 88 % even with both operands in the
/// first-level cache. When H comes from further away (a batch of many thousand columns, or the
/// tangents of an exact divergence), the first row strip of each column block also fetches the
/// next block's rhs, which raises such products from about 130 to about 145 GFLOP/s.
///
/// Eigen's blocked matrix product copies blocks of both operands into packing buffers. A
/// product expression (`out.noalias() = lhs * rhs`) takes them from the stack up to
/// EIGEN_STACK_ALLOCATION_LIMIT bytes and from the heap above it, at every product: a 256×256
/// float weight matrix alone needs 256 KiB. ProductBuffers runs the same blocked kernel with
/// buffers it keeps, so a product allocates only when it needs larger buffers than any product
/// before it. The blocking sizes are the ones Eigen computes for the product expression.
#pragma once

#include <algorithm>
#include <type_traits>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/eigen_core.hpp"
#include "flowmatch/detail/tile_unit_product.hpp"

// The kernel's interface used below (with the result's inner stride) is that of Eigen 3.4.
static_assert(EIGEN_VERSION_AT_LEAST(3, 4, 0), "flowmatch needs Eigen 3.4 or later");

namespace flowmatch::detail {

// Eigen's packet types are SIMD vector types, whose alignment attributes GCC reports as
// ignored when they are template arguments; Eigen silences the same warning in its headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"

/// The register tile of tiled_product: 2 packets of rows by tiled_product_columns columns, so
/// that its 2·columns accumulators, the two lhs packets and a broadcast rhs entry fit in the
/// vector registers (32 with AVX-512: 14 columns; 16 with AVX or SSE: 6).
template <class Scalar>
struct TiledProductShape {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  static constexpr Index packet_size = Eigen::internal::unpacket_traits<Packet>::size;
  static constexpr Index rows = 2 * packet_size;
  static constexpr int columns = (EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS - 4) / 2;
  /// Whether the kernel runs vectorised for this scalar type.
  static constexpr bool vectorised = Eigen::internal::packet_traits<Scalar>::Vectorizable;
};

/// Where the tiles of a row strip fetch the next column block's rhs ahead of its use: the k-th
/// depth step of a tile asks for the cache line holding start[k·step].
template <class Scalar>
struct TilePrefetch {
  const Scalar* start = nullptr;
  Index step = 0;
};

/// With @p Prefetch, asks for the cache line of step k of @p prefetch. It uses GCC's builtin,
/// which Clang has too (GCC 12 leaves out of the tile loop the request made through Eigen's
/// prefetch); other compilers make no request.
template <bool Prefetch, class Scalar>
EIGEN_ALWAYS_INLINE void prefetch_line(const TilePrefetch<Scalar>& prefetch, Index k) {
#if defined(__GNUC__)
  if constexpr (Prefetch) __builtin_prefetch(prefetch.start + k * prefetch.step);
#endif
  static_cast<void>(prefetch);
  static_cast<void>(k);
}

/// One tile: out[0 : 2P, 0 : Columns] (+)= Σ_k lhs[0 : 2P, k]·rhs[k, 0 : Columns], where
/// rhs[k, j] is at rhs + j·rhs_stride + k (RhsTransposed false: a column-major rhs) or
/// rhs + k·rhs_stride + j (RhsTransposed true: the transpose of a column-major matrix).
/// The sums run over k in order, in registers, each step one fused multiply-add per packet;
/// without @p accumulate the first step is a product (the value of a multiply-add onto zero),
/// so that the accumulators are never zeroed in memory.
/// With @p Prefetch, step k also asks for the cache line of step k of @p prefetch (what the
/// tiles of the next column block will read); the request changes no result.
template <class Scalar, bool RhsTransposed, int Columns, bool Prefetch>
EIGEN_ALWAYS_INLINE void multiply_tile(Index depth, const Scalar* lhs, Index lhs_stride,
                                       const Scalar* rhs, Index rhs_stride, Scalar* out,
                                       Index out_stride, bool accumulate,
                                       const TilePrefetch<Scalar>& prefetch) {
  namespace packet = Eigen::internal;
  using Packet = typename TiledProductShape<Scalar>::Packet;
  constexpr Index size = TiledProductShape<Scalar>::packet_size;
  const auto rhs_entry = [rhs, rhs_stride](Index k, int col) {
    return packet::pset1<Packet>(RhsTransposed ? rhs[k * rhs_stride + col]
                                               : rhs[col * rhs_stride + k]);
  };
  Packet upper[Columns];
  Packet lower[Columns];
  Index first = 0;
  if (accumulate) {
    for (int col = 0; col < Columns; ++col) {
      upper[col] = packet::ploadu<Packet>(out + col * out_stride);
      lower[col] = packet::ploadu<Packet>(out + col * out_stride + size);
    }
  } else {
    prefetch_line<Prefetch>(prefetch, 0);
    const Packet lhs_upper = packet::ploadu<Packet>(lhs);
    const Packet lhs_lower = packet::ploadu<Packet>(lhs + size);
    for (int col = 0; col < Columns; ++col) {
      const Packet broadcast = rhs_entry(0, col);
      upper[col] = packet::pmul(lhs_upper, broadcast);
      lower[col] = packet::pmul(lhs_lower, broadcast);
    }
    first = 1;
  }
  for (Index k = first; k < depth; ++k) {
    prefetch_line<Prefetch>(prefetch, k);
    const Packet lhs_upper = packet::ploadu<Packet>(lhs + k * lhs_stride);
    const Packet lhs_lower = packet::ploadu<Packet>(lhs + k * lhs_stride + size);
    for (int col = 0; col < Columns; ++col) {
      const Packet broadcast = rhs_entry(k, col);
      upper[col] = packet::pmadd(lhs_upper, broadcast, upper[col]);
      lower[col] = packet::pmadd(lhs_lower, broadcast, lower[col]);
    }
  }
  for (int col = 0; col < Columns; ++col) {
    packet::pstoreu(out + col * out_stride, upper[col]);
    packet::pstoreu(out + col * out_stride + size, lower[col]);
  }
}

/// multiply_tile with a run-time column count @p columns ≤ Columns.
template <class Scalar, bool RhsTransposed, int Columns, bool Prefetch>
void multiply_tile_with_columns(int columns, Index depth, const Scalar* lhs, Index lhs_stride,
                                const Scalar* rhs, Index rhs_stride, Scalar* out, Index out_stride,
                                bool accumulate, const TilePrefetch<Scalar>& prefetch) {
  if constexpr (Columns > 0) {
    if (columns == Columns) {
      multiply_tile<Scalar, RhsTransposed, Columns, Prefetch>(
          depth, lhs, lhs_stride, rhs, rhs_stride, out, out_stride, accumulate, prefetch);
    } else {
      multiply_tile_with_columns<Scalar, RhsTransposed, Columns - 1, Prefetch>(
          columns, depth, lhs, lhs_stride, rhs, rhs_stride, out, out_stride, accumulate, prefetch);
    }
  }
}

/// TilePrefetch for the rhs column block [col, col + width), one request for each of the
/// depth steps of a tile, all of them inside the block. A column-major rhs (RhsTransposed
/// false) is fetched in equal steps of at most a cache line from the block's first entry: about
/// all of the block when it spans at most depth lines (as a block of contiguous columns does),
/// its leading depth lines otherwise. A transposed rhs gives the start of each of its depth rows.
template <class Scalar, bool RhsTransposed>
TilePrefetch<Scalar> rhs_block_prefetch(const ConstMatrixRef<Scalar>& rhs, Index col, Index width,
                                        Index depth) {
  if constexpr (RhsTransposed) {
    return {rhs.data() + col, rhs.outerStride()};
  } else {
    constexpr Index line = std::max<Index>(1, 64 / Index(sizeof(Scalar)));  // 64-byte lines
    const Index entries = (width - 1) * rhs.outerStride() + depth;
    return {rhs.data() + col * rhs.outerStride(), std::min(line, entries / depth)};
  }
}

/// out[0 : R, :] (+)= lhs[0 : R, :]·rhs for the first R rows of the result, R the largest
/// multiple of the tile height not above lhs.rows(): column blocks of the tile's width (the
/// block of rhs stays in the first-level cache while every row strip passes over it), each in
/// tiles. The first row strip of a block, which reads the block from wherever it is, also
/// fetches the next block into the cache, so that the next block's first strip finds it there.
/// Returns R; the caller computes the remaining rows. rhs is k×n (RhsTransposed false) or is
/// given as its n×k transpose (RhsTransposed true).
template <class Scalar, bool RhsTransposed>
Index tiled_product(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                    MatrixRef<Scalar>& out, bool accumulate) {
  using Shape = TiledProductShape<Scalar>;
  const Index tiled_rows = lhs.rows() - lhs.rows() % Shape::rows;
  const Index depth = lhs.cols();
  const Index cols = out.cols();
  for (Index col = 0; col < cols; col += Shape::columns) {
    const int width = static_cast<int>(std::min<Index>(Shape::columns, cols - col));
    const Scalar* rhs_block =
        RhsTransposed ? rhs.data() + col : rhs.data() + col * rhs.outerStride();
    const Index next = col + Shape::columns;
    const TilePrefetch<Scalar> prefetch =
        next < cols ? rhs_block_prefetch<Scalar, RhsTransposed>(
                          rhs, next, std::min<Index>(Shape::columns, cols - next), depth)
                    : TilePrefetch<Scalar>{};
    for (Index row = 0; row < tiled_rows; row += Shape::rows) {
      const Scalar* lhs_strip = lhs.data() + row;
      Scalar* out_tile = out.data() + col * out.outerStride() + row;
      if (row == 0 && next < cols) {
        multiply_tile_with_columns<Scalar, RhsTransposed, Shape::columns, true>(
            width, depth, lhs_strip, lhs.outerStride(), rhs_block, rhs.outerStride(), out_tile,
            out.outerStride(), accumulate, prefetch);
      } else {
        multiply_tile_with_columns<Scalar, RhsTransposed, Shape::columns, false>(
            width, depth, lhs_strip, lhs.outerStride(), rhs_block, rhs.outerStride(), out_tile,
            out.outerStride(), accumulate, prefetch);
      }
    }
  }
  return tiled_rows;
}

/// The greatest depth of a shallow product (shallow_product); deeper products take the tiles.
inline constexpr Index kShallowDepth = 7;

/// out (+)= lhs·rhs for a product a few entries deep (a network's input layer), column by
/// column: each packet of rows of a column is Σₖ lhs(rows, k)·rhs(k, col), a product followed
/// by fused multiply-adds in the order of k. @p lhs_padded holds lhs column-major with its rows
/// padded with zeros to @p padded_rows, a whole number of packets, so that the last rows are
/// computed as the others; every entry depends only on its own column of rhs, wherever that
/// column sits. Packs nothing and reads rhs in place. Needs a depth from 1 to kShallowDepth.
template <class Scalar>
void shallow_product(const Scalar* lhs_padded, Index padded_rows, const ConstMatrixRef<Scalar>& rhs,
                     MatrixRef<Scalar> out, bool accumulate) {
  namespace packet = Eigen::internal;
  using Packet = typename TiledProductShape<Scalar>::Packet;
  constexpr Index size = TiledProductShape<Scalar>::packet_size;
  const Index depth = rhs.rows();
  const Index rows = out.rows();
  eigen_assert(depth >= 1 && depth <= kShallowDepth);
  Packet factors[kShallowDepth];
  for (Index col = 0; col < out.cols(); ++col) {
    for (Index k = 0; k < depth; ++k) {
      factors[k] = packet::pset1<Packet>(rhs(k, col));
    }
    Scalar* column = out.data() + col * out.outerStride();
    for (Index row = 0; row < padded_rows; row += size) {
      const Scalar* weights = lhs_padded + row;
      Packet sum = packet::pmul(packet::ploadu<Packet>(weights), factors[0]);
      for (Index k = 1; k < depth; ++k) {
        sum = packet::pmadd(packet::ploadu<Packet>(weights + k * padded_rows), factors[k], sum);
      }
      const Index count = std::min(size, rows - row);
      if (count == size) {
        if (accumulate) sum = packet::padd(packet::ploadu<Packet>(column + row), sum);
        packet::pstoreu(column + row, sum);
        continue;
      }
      Scalar lanes[size];
      packet::pstoreu(lanes, sum);
      for (Index i = 0; i < count; ++i) {
        column[row + i] = accumulate ? column[row + i] + lanes[i] : lanes[i];
      }
    }
  }
}

/// out (+)= lhsᵀ·rhs for an out of a few rows, given lhsᵀ (k×r, column-major): each entry the
/// dot product of a column of lhsᵀ with a column of rhs, both read in packets along the depth
/// into two accumulators, reduced across lanes, plus the depth's last entries one by one.
/// Every entry depends only on its own column of rhs, wherever that column sits.
template <class Scalar>
void dot_product_rows(const ConstMatrixRef<Scalar>& lhs_transposed,
                      const ConstMatrixRef<Scalar>& rhs, MatrixRef<Scalar> out, bool accumulate) {
  namespace packet = Eigen::internal;
  using Packet = typename TiledProductShape<Scalar>::Packet;
  constexpr Index size = TiledProductShape<Scalar>::packet_size;
  const Index depth = rhs.rows();
  const Index packed_depth = depth - depth % size;
  for (Index col = 0; col < out.cols(); ++col) {
    const Scalar* column = rhs.data() + col * rhs.outerStride();
    for (Index row = 0; row < out.rows(); ++row) {
      const Scalar* weights = lhs_transposed.data() + row * lhs_transposed.outerStride();
      Packet even = packet::pset1<Packet>(Scalar(0));
      Packet odd = even;
      Index k = 0;
      for (; k + 2 * size <= packed_depth; k += 2 * size) {
        even = packet::pmadd(packet::ploadu<Packet>(weights + k),
                             packet::ploadu<Packet>(column + k), even);
        odd = packet::pmadd(packet::ploadu<Packet>(weights + k + size),
                            packet::ploadu<Packet>(column + k + size), odd);
      }
      if (k < packed_depth) {
        even = packet::pmadd(packet::ploadu<Packet>(weights + k),
                             packet::ploadu<Packet>(column + k), even);
        k += size;
      }
      Scalar sum = packet::predux(packet::padd(even, odd));
      for (; k < depth; ++k) sum += weights[k] * column[k];
      out(row, col) = accumulate ? out(row, col) + sum : sum;
    }
  }
}

#pragma GCC diagnostic pop

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
    if constexpr (std::is_same_v<Scalar, float>) {
      if (!accumulate && TileUnitProduct::applies(lhs.rows(), lhs.cols(), rhs.cols())) {
        tile_unit_.multiply(lhs, rhs, out);
        return;
      }
    }
    if (use_shallow_product(lhs.cols())) {
      // lhs with its rows padded to whole packets, in a kept buffer.
      constexpr Index size = TiledProductShape<Scalar>::packet_size;
      const Index padded_rows = (lhs.rows() + size - 1) / size * size;
      if (padded_lhs_.size() < padded_rows * lhs.cols()) {
        padded_lhs_.resize(padded_rows * lhs.cols());
      }
      Eigen::Map<Matrix<Scalar>> padded(padded_lhs_.data(), padded_rows, lhs.cols());
      padded.topRows(lhs.rows()) = lhs;
      padded.bottomRows(padded_rows - lhs.rows()).setZero();
      shallow_product<Scalar>(padded_lhs_.data(), padded_rows, rhs, out, accumulate);
      return;
    }
    const Index tiled_rows = tiled(lhs, rhs, out, accumulate, false);
    if (tiled_rows == lhs.rows()) return;
    MatrixRef<Scalar> rest = out.bottomRows(lhs.rows() - tiled_rows);
    if (use_dot_products(rest.rows(), lhs.cols())) {
      // The rows' weights, transposed into a kept buffer so that each row reads contiguously.
      if (narrow_lhs_.size() < rest.rows() * lhs.cols())
        narrow_lhs_.resize(rest.rows() * lhs.cols());
      Eigen::Map<Matrix<Scalar>> transposed(narrow_lhs_.data(), lhs.cols(), rest.rows());
      transposed = lhs.bottomRows(rest.rows()).transpose();
      dot_product_rows<Scalar>(transposed, rhs, rest, accumulate);
      return;
    }
    run<Eigen::ColMajor, Eigen::ColMajor>(rest.rows(), rhs.cols(), lhs.cols(),
                                          lhs.bottomRows(rest.rows()), rhs, rest, accumulate);
  }

  /// out = lhs·rhs, then finish(row, col, rows, cols) on blocks of out that together cover it
  /// once, each called when its block holds the product: on the tile unit in 32-row blocks
  /// while the unit computes later ones (TileUnitProduct), elsewhere once on all of out. With
  /// @p lhs_unchanged the caller promises that lhs holds the values it held at the previous
  /// product of this object, which may then reuse its work on lhs.
  template <class Finish>
  void multiply_and_finish(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                           MatrixRef<Scalar> out, Finish&& finish, bool lhs_unchanged = false) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (TileUnitProduct::applies(lhs.rows(), lhs.cols(), rhs.cols())) {
        eigen_assert(lhs.cols() == rhs.rows() && out.rows() == lhs.rows() &&
                     out.cols() == rhs.cols());
        tile_unit_.multiply(lhs, rhs, out, finish, lhs_unchanged);
        return;
      }
    }
    multiply(lhs, rhs, out);
    finish(Index(0), Index(0), out.rows(), out.cols());
  }

  /// out = lhsᵀ·rhs, or out += lhsᵀ·rhs if @p accumulate; lhs k×m, rhs k×n, out m×n.
  void multiply_transposed_lhs(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                               MatrixRef<Scalar> out, bool accumulate = false) {
    eigen_assert(lhs.rows() == rhs.rows() && out.rows() == lhs.cols() && out.cols() == rhs.cols());
    if (use_tiles(lhs.cols(), lhs.rows(), rhs.cols())) {
      // The tiles read lhsᵀ by columns: a copy of it in a kept buffer, m·k entries against the
      // m·k·n multiply-adds of the product.
      if (transposed_lhs_.size() < lhs.size()) transposed_lhs_.resize(lhs.size());
      Eigen::Map<Matrix<Scalar>> transposed(transposed_lhs_.data(), lhs.cols(), lhs.rows());
      transposed = lhs.transpose();
      multiply(transposed, rhs, out, accumulate);
      return;
    }
    // The transpose of a column-major matrix is the same memory read as row-major.
    run<Eigen::RowMajor, Eigen::ColMajor>(lhs.cols(), rhs.cols(), lhs.rows(), lhs, rhs, out,
                                          accumulate);
  }

  /// out = lhs·rhsᵀ, or out += lhs·rhsᵀ if @p accumulate; lhs m×k, rhs n×k, out m×n.
  void multiply_transposed_rhs(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                               MatrixRef<Scalar> out, bool accumulate = false) {
    eigen_assert(lhs.cols() == rhs.cols() && out.rows() == lhs.rows() && out.cols() == rhs.rows());
    const Index tiled_rows = tiled(lhs, rhs, out, accumulate, true);
    if (tiled_rows == lhs.rows()) return;
    MatrixRef<Scalar> rest = out.bottomRows(lhs.rows() - tiled_rows);
    run<Eigen::ColMajor, Eigen::RowMajor>(rest.rows(), rhs.rows(), lhs.cols(),
                                          lhs.bottomRows(rest.rows()), rhs, rest, accumulate);
  }

 private:
  // Whether a rows×depth by depth×cols product takes the register tiles: a vectorised scalar
  // type, at least one tile of rows, and enough work for the tiles to pay (small products are
  // as fast through Eigen, whose results they then keep).
  static bool use_tiles(Index rows, Index depth, Index cols) {
    using Shape = TiledProductShape<Scalar>;
    return Shape::vectorised && rows >= Shape::rows && depth > kShallowDepth &&
           cols >= Shape::columns;
  }

  // Whether a product of depth @p depth is a shallow product (shallow_product): a vectorised
  // scalar type and a depth below the tiles' (a network's input layer). Eigen's product packs
  // both operands and clears the result first, which costs more than the product itself there.
  static bool use_shallow_product(Index depth) {
    return TiledProductShape<Scalar>::vectorised && depth >= 1 && depth <= kShallowDepth;
  }

  // Whether the last @p rows rows of a product of depth @p depth (those below the tiles) are
  // dot products (dot_product_rows): a vectorised scalar type, a few rows, and depth for at
  // least one packet. Eigen's product packs all of rhs for them.
  static bool use_dot_products(Index rows, Index depth) {
    using Shape = TiledProductShape<Scalar>;
    return Shape::vectorised && rows <= 8 && depth >= Shape::packet_size;
  }

  // The tiled rows of out (+)= lhs·op(rhs) (see tiled_product), or none.
  static Index tiled(const ConstMatrixRef<Scalar>& lhs, const ConstMatrixRef<Scalar>& rhs,
                     MatrixRef<Scalar>& out, bool accumulate, bool rhs_transposed) {
    if constexpr (TiledProductShape<Scalar>::vectorised) {
      if (!use_tiles(out.rows(), lhs.cols(), out.cols())) return 0;
      return rhs_transposed ? tiled_product<Scalar, true>(lhs, rhs, out, accumulate)
                            : tiled_product<Scalar, false>(lhs, rhs, out, accumulate);
    }
    return 0;
  }

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
  Vector<Scalar> transposed_lhs_;  // lhsᵀ of multiply_transposed_lhs, column-major
  Vector<Scalar> narrow_lhs_;      // the transposed rows of a product's dot products
  Vector<Scalar> padded_lhs_;      // lhs of a shallow product, its rows padded to whole packets
  TileUnitProduct tile_unit_;      // float products on the AMX tile unit, where it applies
};

}  // namespace flowmatch::detail
