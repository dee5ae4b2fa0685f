/// @file tile_unit_product.hpp
/// @brief Float matrix products on the AMX tile unit at float accuracy (internal).
///
/// Processors with AMX (Intel Xeon from Sapphire Rapids on) multiply bfloat16 tiles into float
/// accumulators: one instruction adds a 16×32 by 32×16 product to a 16×16 float tile, sixteen
/// times the multiply-adds of an AVX-512 instruction. bfloat16 keeps 8 of float's 24
/// significant bits, so a float x is split into three bfloat16 parts, each the nearest to what
/// the parts before it leave:
///
///     x = x₀ + x₁ + x₂,   |x₁| ≤ 2⁻⁸·|x|,   |x₂| ≤ 2⁻¹⁶·|x|,
///
/// exactly for every x of magnitude above about 10⁻³³ (three 8-bit parts with rounding cover
/// the 24 bits; a part below 2⁻¹²⁶ is flushed to zero by the conversion and by the tile unit).
/// Then w·x = Σ_{i,j} w_i·x_j, each product exact in float, and the six terms with i + j ≤ 2
/// are kept: the three left out are at most (2⁻²³ + 2⁻³²)·|w·x|, about one unit in the last
/// place, and far smaller unless both operands sit near a rounding midpoint of their first
/// parts. The tile unit sums the kept terms in float, with one rounding per term. Measured
/// against a long double reference on 128-deep products of normal random numbers, the error
/// relative to Σ|w_k·x_k| is half that of a loop of fused multiply-adds (README, "Where the
/// time goes"). The results therefore differ from the register-tiled kernel's in the last bits,
/// like those of any two summation orders; each column of the result still depends only on its
/// own column of the rhs, wherever it sits in the batch.
///
/// Six tile products per step leave 16/6 ≈ 2.7 times the float peak of the vector units. The
/// kernel splits lhs (a layer's weights) into the unit's pair-interleaved layout once and keeps
/// the split while lhs holds the same values, splits the rhs 32 columns at a time into
/// row-major tiles, and writes the result through tile stores with the result's column stride.
///
/// The unit is used only when the compiler targets it (-march=native on such a processor enables
/// AMX-TILE, AMX-BF16 and AVX512-BF16), the operating system grants the process the
/// tile state (Linux 5.16 or later, arch_prctl(ARCH_REQ_XCOMP_PERM)), and FLOWMATCH_NO_TILE_UNIT
/// is not defined; otherwise TileUnitProduct::applies is false and the products take the
/// register-tiled kernel.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/eigen_core.hpp"

// GCC spells the instruction-set macros __AMX_TILE__ and __AMX_BF16__, Clang __AMXTILE__ and
// __AMXBF16__.
#if (defined(__AMX_TILE__) || defined(__AMXTILE__)) &&                            \
    (defined(__AMX_BF16__) || defined(__AMXBF16__)) && defined(__AVX512BF16__) && \
    defined(__linux__) && !defined(FLOWMATCH_NO_TILE_UNIT)
#define FLOWMATCH_TILE_UNIT 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define FLOWMATCH_TILE_UNIT 0
#endif

namespace flowmatch::detail {

#if FLOWMATCH_TILE_UNIT

/// Whether this process may use the tile unit: asks the kernel once for the tile state.
inline bool tile_unit_available() {
  static const bool available = [] {
    constexpr long request_permission = 0x1023;  // ARCH_REQ_XCOMP_PERM
    constexpr long tile_data = 18;               // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, request_permission, tile_data) == 0;
  }();
  return available;
}

/// out = lhs·rhs in float on the tile unit (see the file comment). One object must not be used
/// by two threads at once; its buffers only grow.
class TileUnitProduct {
 public:
  /// Whether a rows×depth by depth×cols product takes the tile unit: rows a multiple of 32
  /// (two 16-row output tiles), a depth of at least one tile step and at least a tile of
  /// columns.
  static bool applies(Index rows, Index depth, Index cols) {
    return rows % 32 == 0 && rows > 0 && depth >= kDepthStep && cols >= 16 && tile_unit_available();
  }

  /// out = lhs·rhs; lhs m×k, rhs k×n, out m×n, all column-major with unit inner stride, and
  /// applies(m, k, n).
  ///
  /// The rhs is split 32 columns at a time, into two buffers in turn: while the unit multiplies
  /// one block, the vector units split the next one, a few columns after each depth step, so
  /// that the splitting runs in the shadow of the tile products.
  void multiply(const ConstMatrixRef<float>& lhs, const ConstMatrixRef<float>& rhs,
                MatrixRef<float>& out) {
    multiply(lhs, rhs, out, [](Index, Index, Index, Index) {});
  }

  /// multiply, then finish(row, col, rows, cols) on blocks of out that cover it once, each
  /// called once its block holds the product: a 32-row block of out is finished a few columns
  /// after each depth step of a later block, so that the vector units' work on the result
  /// (scaling it by a layer's slopes) also runs in the shadow of the tile products.
  /// The split of lhs is kept for later products with the same lhs (address, shape and values,
  /// the values compared with a copy), up to kKeptSplits of them: the weights of a network's
  /// layers are split once, not at every call. With @p lhs_unchanged the caller promises that
  /// lhs holds the values it held at the previous call, so that they need not be compared.
  template <class Finish>
  void multiply(const ConstMatrixRef<float>& lhs, const ConstMatrixRef<float>& rhs,
                MatrixRef<float>& out, Finish&& finish, bool lhs_unchanged = false) {
    const Index cols = rhs.cols();
    steps_ = (lhs.cols() + kDepthStep - 1) / kDepthStep;
    row_tiles_ = lhs.rows() / 16;
    lhs_part_ = static_cast<std::size_t>(row_tiles_ * steps_) * kTileEntries;
    rhs_part_ = static_cast<std::size_t>(2 * steps_) * kTileEntries;
    lhs_tiles_ = kept_split(lhs, lhs_unchanged);
    rhs_parts_.reserve(2 * 3 * rhs_part_);
    configure_tiles();
    for (Index column = 0; column < kBlockColumns; ++column) {
      split_rhs_column(rhs, 0, column, rhs_block(0));
    }
    // Columns of the next rhs block to split after each depth step, so that all are split by
    // the column block's last step, and of a stored block of out to finish, so that all are
    // finished by the last step of the block being computed.
    const Index split_per_step =
        (kBlockColumns + row_tiles_ / 2 * steps_ - 1) / (row_tiles_ / 2 * steps_);
    const Index finish_per_step = (kBlockColumns + steps_ - 1) / steps_;
    // A block of out is finished while the unit computes the block after the next one, so
    // that its tile stores are complete when the vector units read it.
    struct StoredBlock {
      Index row = 0;
      Index col = 0;
      Index width = 0;
      Index finished = 0;  // its columns finished so far
    };
    StoredBlock older;  // the block stored before the last one
    StoredBlock newer;  // the last stored block
    const auto finish_older = [&](Index columns) {
      const Index end = std::min(older.finished + columns, older.width);
      if (end > older.finished) {
        finish(older.row, older.col + older.finished, Index(32), end - older.finished);
      }
      older.finished = end;
    };
    for (Index col = 0, block = 0; col < cols; col += kBlockColumns, ++block) {
      const std::uint16_t* current = rhs_block(block % 2);
      std::uint16_t* upcoming = rhs_block((block + 1) % 2);
      const Index next = col + kBlockColumns;
      Index split_columns = next < cols ? 0 : kBlockColumns;
      const auto after_step = [&] {
        for (const Index end = std::min(split_columns + split_per_step, kBlockColumns);
             split_columns < end; ++split_columns) {
          split_rhs_column(rhs, next, split_columns, upcoming);
        }
        finish_older(finish_per_step);
      };
      const Index width = std::min<Index>(kBlockColumns, cols - col);
      for (Index row_tile = 0; row_tile < row_tiles_; row_tile += 2) {
        multiply_block(row_tile, current, after_step);
        finish_older(kBlockColumns);
        if (width == kBlockColumns) {
          store_block(out.data() + col * out.outerStride() + row_tile * 16, out.outerStride());
        } else {
          store_block(partial_.data(), kBlockColumns);
          for (Index j = 0; j < width; ++j) {
            std::copy_n(partial_.data() + j * kBlockColumns, kBlockColumns,
                        out.data() + (col + j) * out.outerStride() + row_tile * 16);
          }
        }
        older = newer;
        newer = StoredBlock{row_tile * 16, col, width, 0};
      }
    }
    _tile_release();
    finish_older(kBlockColumns);
    older = newer;
    finish_older(kBlockColumns);
  }

 private:
  static constexpr Index kDepthStep = 32;           // depth entries of one tile product
  static constexpr Index kBlockColumns = 32;        // rhs columns per block: two tiles of rows
  static constexpr std::size_t kTileEntries = 512;  // bfloat16 entries of a 1 KiB tile

  // bfloat16 entries 64-byte aligned (a tile row that straddles two cache lines halves the
  // unit's speed), grown on demand.
  class TileBuffer {
   public:
    // Room for @p entries (the contents are lost when it grows).
    void reserve(std::size_t entries) {
      if (storage_.size() >= entries + kAlignment) return;
      storage_.resize(entries + kAlignment);
      const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
      start_ = (kAlignment - address / sizeof(std::uint16_t) % kAlignment) % kAlignment;
    }
    std::uint16_t* data() { return storage_.data() + start_; }

   private:
    static constexpr std::size_t kAlignment = 64 / sizeof(std::uint16_t);
    std::vector<std::uint16_t> storage_;
    std::size_t start_ = 0;
  };

  // The three parts of 16 floats (see the file comment), as floats that bfloat16 holds
  // exactly: a part is rounded to its 8 leading bits by adding half a unit of the 16 bits below
  // them and clearing those (ties away from zero, a nearest rounding), and the rest is exact.
  static void split_into_parts(__m512 value, __m512 parts[3]) {
    parts[0] = leading_bits(value);
    const __m512 rest = _mm512_sub_ps(value, parts[0]);
    parts[1] = leading_bits(rest);
    parts[2] = _mm512_sub_ps(rest, parts[1]);
  }

  // The nearest float with 8 significant bits: the bfloat16 nearest to each of 16 floats
  // (infinity above bfloat16's range, as the conversion gives; NaN stays NaN).
  static __m512 leading_bits(__m512 value) {
    return _mm512_castsi512_ps(
        high_halves(_mm512_add_epi32(_mm512_castps_si512(value), _mm512_set1_epi32(0x8000))));
  }

  // The high 16 bits of each 32-bit lane, the low ones cleared.
  static __m512i high_halves(__m512i lanes) {
    return _mm512_and_si512(lanes, _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
  }

  static constexpr std::size_t kKeptSplits = 4;  // splits of lhs kept for later products

  // A split of an lhs: its address and shape, a copy of its values and their parts.
  struct KeptSplit {
    const float* data = nullptr;
    Index rows = 0;
    Index cols = 0;
    Index outer_stride = 0;
    std::vector<float> values;  // column by column
    TileBuffer parts;
    std::uint64_t last_use = 0;

    bool holds(const ConstMatrixRef<float>& lhs) const {
      if (data != lhs.data() || rows != lhs.rows() || cols != lhs.cols() ||
          outer_stride != lhs.outerStride()) {
        return false;
      }
      for (Index col = 0; col < cols; ++col) {
        if (std::memcmp(values.data() + col * rows, lhs.data() + col * outer_stride,
                        static_cast<std::size_t>(rows) * sizeof(float)) != 0) {
          return false;
        }
      }
      return true;
    }
  };

  // The parts of lhs: those of a kept split of the same lhs (see multiply), or a new split in
  // place of the least recently used one.
  const std::uint16_t* kept_split(const ConstMatrixRef<float>& lhs, bool lhs_unchanged) {
    KeptSplit* oldest = &kept_splits_[0];
    for (KeptSplit& split : kept_splits_) {
      // With lhs_unchanged, the split of the previous product needs no comparison.
      const bool previous = lhs_unchanged && split.last_use == uses_ && split.data == lhs.data() &&
                            split.rows == lhs.rows() && split.cols == lhs.cols() &&
                            split.outer_stride == lhs.outerStride();
      if (split.last_use > 0 && (previous || split.holds(lhs))) {
        split.last_use = ++uses_;
        return split.parts.data();
      }
      if (split.last_use < oldest->last_use) oldest = &split;
    }
    KeptSplit& split = *oldest;
    split.parts.reserve(3 * lhs_part_);
    split_lhs(lhs, split);
    split.data = lhs.data();
    split.rows = lhs.rows();
    split.cols = lhs.cols();
    split.outer_stride = lhs.outerStride();
    split.values.resize(static_cast<std::size_t>(lhs.size()));
    Eigen::Map<Matrix<float>>(split.values.data(), lhs.rows(), lhs.cols()) = lhs;
    split.last_use = ++uses_;
    return split.parts.data();
  }

  // The parts of lhs (m×k) as the unit's right operands: for part q, 16-row tile r and depth
  // step s, a tile whose row p holds, for each of its 16 rows i, the pair lhs[16r + i, 32s +
  // 2p], lhs[16r + i, 32s + 2p + 1]. Depth past k is zero.
  void split_lhs(const ConstMatrixRef<float>& lhs, KeptSplit& kept) {
    const Index depth = lhs.cols();
    const __m512 zero = _mm512_setzero_ps();
    std::uint16_t* parts = kept.parts.data();
    for (Index row_tile = 0; row_tile < row_tiles_; ++row_tile) {
      for (Index k = 0; k < steps_ * kDepthStep; k += 2) {
        const float* column =
            lhs.data() + std::min(k, depth - 1) * lhs.outerStride() + row_tile * 16;
        __m512 even[3];
        __m512 odd[3];
        split_into_parts(k < depth ? _mm512_loadu_ps(column) : zero, even);
        split_into_parts(k + 1 < depth ? _mm512_loadu_ps(column + lhs.outerStride()) : zero, odd);
        const std::size_t offset =
            static_cast<std::size_t>(row_tile * steps_ + k / kDepthStep) * kTileEntries +
            static_cast<std::size_t>(k % kDepthStep) * 16;
        for (int part = 0; part < 3; ++part) {
          // The parts hold bfloat16 values: the high half of each float is its bfloat16.
          const __m512i pairs =
              _mm512_or_si512(_mm512_srli_epi32(_mm512_castps_si512(even[part]), 16),
                              high_halves(_mm512_castps_si512(odd[part])));
          _mm512_storeu_si512(parts + part * lhs_part_ + offset, pairs);
        }
      }
    }
  }

  // Column @p column of the rhs block starting at column @p col, as row column % 16 of the
  // unit's left operands in @p block: for part q, 16-column half h and depth step s, a tile
  // whose row j holds rhs[32s : 32s + 32, col + 16h + j]. Depth past k, and columns past the
  // rhs, are zero. Each tile row is one 64-byte store.
  void split_rhs_column(const ConstMatrixRef<float>& rhs, Index col, Index column,
                        std::uint16_t* block) const {
    const Index depth = rhs.rows();
    const bool inside = col + column < rhs.cols();
    const float* values = rhs.data() + (inside ? (col + column) * rhs.outerStride() : 0);
    const auto load = [&](Index k) {
      const Index valid = inside ? std::clamp<Index>(depth - k, 0, 16) : 0;
      return valid == 16
                 ? _mm512_loadu_ps(values + k)
                 : _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << valid) - 1u), values + k);
    };
    std::uint16_t* row = block + static_cast<std::size_t>((column / 16) * steps_) * kTileEntries +
                         static_cast<std::size_t>(column % 16) * kDepthStep;
    for (Index step = 0; step < steps_; ++step) {
      __m512 low[3];   // depth entries 32s to 32s + 15
      __m512 high[3];  // 32s + 16 to 32s + 31
      split_into_parts(load(step * kDepthStep), low);
      split_into_parts(load(step * kDepthStep + 16), high);
      std::uint16_t* entries = row + static_cast<std::size_t>(step) * kTileEntries;
      for (int part = 0; part < 3; ++part) {
        // Exact: the parts are bfloat16 values.
        _mm512_store_si512(entries + part * rhs_part_,
                           reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high[part], low[part])));
      }
    }
  }

  // The rhs split buffer @p index (0 or 1).
  std::uint16_t* rhs_block(Index index) { return rhs_parts_.data() + index * 3 * rhs_part_; }

  static void configure_tiles() {
    struct alignas(64) Config {
      std::uint8_t palette = 1;
      std::uint8_t start_row = 0;
      std::uint8_t reserved[14] = {};
      std::uint16_t row_bytes[16] = {};
      std::uint8_t rows[16] = {};
    } config;
    for (int tile = 0; tile < 8; ++tile) {
      config.row_bytes[tile] = 64;
      config.rows[tile] = 16;
    }
    _tile_loadconfig(&config);
  }

  // Tiles 0–3 accumulate the 32×32 block [rhs half h, lhs row tile row_tile + c] as tile
  // 2h + c: Σ over the depth steps of the six part products with i + j ≤ 2 (see the file
  // comment), the rhs parts from @p rhs_tiles. Tiles 4–5 hold rhs parts, 6–7 lhs parts.
  // @p after_step runs after each depth step's products.
  template <class AfterStep>
  void multiply_block(Index row_tile, const std::uint16_t* rhs_tiles, const AfterStep& after_step) {
    const std::uint16_t* lhs_tiles = lhs_tiles_ + row_tile * steps_ * kTileEntries;
    const std::size_t next_tile_row = static_cast<std::size_t>(steps_) * kTileEntries;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (Index step = 0; step < steps_; ++step) {
      const std::uint16_t* lhs_step = lhs_tiles + step * kTileEntries;
      const std::uint16_t* rhs_step = rhs_tiles + step * kTileEntries;
      for (int rhs_part = 0; rhs_part < 3; ++rhs_part) {
        const std::uint16_t* rhs_tile = rhs_step + rhs_part * rhs_part_;
        _tile_loadd(4, rhs_tile, 64);
        _tile_loadd(5, rhs_tile + next_tile_row, 64);
        for (int lhs_part = 0; lhs_part + rhs_part < 3; ++lhs_part) {
          const std::uint16_t* lhs_tile = lhs_step + lhs_part * lhs_part_;
          _tile_loadd(6, lhs_tile, 64);
          _tile_loadd(7, lhs_tile + next_tile_row, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
      after_step();
    }
  }

  // Writes the accumulated 32×32 block to out, whose columns are column_stride floats apart.
  static void store_block(float* out, Index column_stride) {
    const auto stride = static_cast<long>(column_stride * Index(sizeof(float)));
    _tile_stored(0, out, stride);
    _tile_stored(1, out + 16, stride);
    _tile_stored(2, out + 16 * column_stride, stride);
    _tile_stored(3, out + 16 * column_stride + 16, stride);
  }

  Index steps_ = 0;
  Index row_tiles_ = 0;
  std::size_t lhs_part_ = 0;
  std::size_t rhs_part_ = 0;
  std::array<KeptSplit, kKeptSplits> kept_splits_;
  std::uint64_t uses_ = 0;                    // products so far, for the kept splits' last use
  const std::uint16_t* lhs_tiles_ = nullptr;  // the parts of the current product's lhs
  TileBuffer rhs_parts_;                      // two blocks, three parts each
  std::vector<float> partial_ = std::vector<float>(kBlockColumns * kBlockColumns);
};

#else

/// Without the tile unit: never applies.
class TileUnitProduct {
 public:
  static bool applies(Index, Index, Index) { return false; }
  void multiply(const ConstMatrixRef<float>&, const ConstMatrixRef<float>&, MatrixRef<float>&) {}
  template <class Finish>
  void multiply(const ConstMatrixRef<float>&, const ConstMatrixRef<float>&, MatrixRef<float>&,
                Finish&&, bool = false) {}
};

#endif

}  // namespace flowmatch::detail
