// Tests of the float products on the AMX tile unit (detail/tile_unit_product.hpp): accuracy
// against a long double reference, columns independent of their place in the batch, non-finite
// entries confined to their column, kept splits of the weights that follow changes to them, and
// the blocks handed to multiply_and_finish. Where the build or the processor has no tile
// unit, the cases say so and check only that nothing claims to use it.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/matrix_product.hpp"

namespace test_tile_unit {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::detail::TileUnitProduct;

struct Shape {
  Index rows;
  Index depth;
  Index cols;
};

// Shapes with a partial last column block (45, 70, 21), a depth that is not a multiple of the
// tile's 32 (33, 40), and the layers of the benchmark networks.
constexpr Shape kShapes[] = {{128, 128, 256}, {64, 33, 70}, {256, 256, 45}, {32, 40, 21}};

Matrix<float> random_matrix(Index rows, Index cols, float scale, std::mt19937& generator) {
  std::normal_distribution<float> normal(0.0f, scale);
  Matrix<float> matrix(rows, cols);
  for (Index i = 0; i < matrix.size(); ++i) matrix.data()[i] = normal(generator);
  return matrix;
}

bool tile_unit_missing(const Shape& shape) {
  if (TileUnitProduct::applies(shape.rows, shape.depth, shape.cols)) return false;
  WARN("no AMX tile unit in this build or on this processor: nothing to check");
  return true;
}

TEST_CASE("float products on the tile unit are as accurate as float arithmetic", "[tile_unit]") {
  std::mt19937 generator(61);
  for (const Shape& shape : kShapes) {
    if (tile_unit_missing(shape)) return;
    INFO(shape.rows << "x" << shape.depth << " times " << shape.depth << "x" << shape.cols);
    const Matrix<float> lhs =
        random_matrix(shape.rows, shape.depth, 1.0f / std::sqrt(float(shape.depth)), generator);
    // Blocks of larger matrices: outer strides that are not the row counts.
    const Matrix<float> rhs_storage =
        random_matrix(shape.depth + 3, shape.cols + 1, 1.0f, generator);
    const auto rhs = rhs_storage.block(2, 1, shape.depth, shape.cols);
    Matrix<float> out_storage = Matrix<float>::Constant(shape.rows + 5, shape.cols, 7.0f);
    MatrixRef<float> out = out_storage.topRows(shape.rows);
    TileUnitProduct product;
    product.multiply(lhs, rhs, out);
    // Each entry within 8 units of float roundoff of Σ_k |lhs[i, k]·rhs[k, j]|. Leaving out any
    // of the six part products would cost at least 2⁻¹⁸ of that sum on most entries (file
    // comment of tile_unit_product.hpp); a fused multiply-add loop stays within about 5 units
    // on these sizes.
    const double unit = std::numeric_limits<float>::epsilon() / 2;
    double worst = 0;
    for (Index j = 0; j < shape.cols; ++j) {
      for (Index i = 0; i < shape.rows; ++i) {
        long double exact = 0;
        long double magnitude = 0;
        for (Index k = 0; k < shape.depth; ++k) {
          const long double term = static_cast<long double>(lhs(i, k)) * rhs(k, j);
          exact += term;
          magnitude += std::fabs(term);
        }
        worst = std::max(worst, static_cast<double>(std::fabs(out(i, j) - exact) / magnitude));
      }
    }
    CHECK(worst <= 8 * unit);
    // Rows below the result are untouched.
    CHECK((out_storage.bottomRows(5).array() == 7.0f).all());
  }
}

TEST_CASE("a column's product on the tile unit does not depend on its place in the batch",
          "[tile_unit]") {
  std::mt19937 generator(62);
  for (const Shape& shape : kShapes) {
    if (tile_unit_missing(shape)) return;
    INFO(shape.rows << "x" << shape.depth << " times " << shape.depth << "x" << shape.cols);
    const Matrix<float> lhs = random_matrix(shape.rows, shape.depth, 0.2f, generator);
    const Matrix<float> rhs = random_matrix(shape.depth, shape.cols, 1.0f, generator);
    TileUnitProduct product;
    Matrix<float> whole(shape.rows, shape.cols);
    MatrixRef<float> whole_ref(whole);
    product.multiply(lhs, rhs, whole_ref);
    // The batch reversed: every column lands in another block and lane.
    const Matrix<float> reversed_rhs = rhs.rowwise().reverse();
    Matrix<float> reversed(shape.rows, shape.cols);
    MatrixRef<float> reversed_ref(reversed);
    product.multiply(lhs, reversed_rhs, reversed_ref);
    CHECK(reversed.rowwise().reverse() == whole);
    // A sub-batch that starts in the middle of a block (and still spans a tile).
    const Index start = 5;
    Matrix<float> tail(shape.rows, shape.cols - start);
    MatrixRef<float> tail_ref(tail);
    REQUIRE(TileUnitProduct::applies(shape.rows, shape.depth, tail.cols()));
    product.multiply(lhs, rhs.rightCols(tail.cols()), tail_ref);
    CHECK(tail == whole.rightCols(tail.cols()));
  }
}

TEST_CASE("a non-finite rhs entry on the tile unit spoils only its own column", "[tile_unit]") {
  const Shape shape{64, 64, 40};
  if (tile_unit_missing(shape)) return;
  std::mt19937 generator(63);
  const Matrix<float> lhs = random_matrix(shape.rows, shape.depth, 0.2f, generator);
  Matrix<float> rhs = random_matrix(shape.depth, shape.cols, 1.0f, generator);
  TileUnitProduct product;
  Matrix<float> clean(shape.rows, shape.cols);
  MatrixRef<float> clean_ref(clean);
  product.multiply(lhs, rhs, clean_ref);
  rhs(10, 3) = std::numeric_limits<float>::quiet_NaN();
  rhs(20, 33) = std::numeric_limits<float>::infinity();  // split into ∞ and ∞ − ∞: NaN
  Matrix<float> spoilt(shape.rows, shape.cols);
  MatrixRef<float> spoilt_ref(spoilt);
  product.multiply(lhs, rhs, spoilt_ref);
  for (Index j = 0; j < shape.cols; ++j) {
    INFO("column " << j);
    if (j == 3 || j == 33) {
      CHECK(spoilt.col(j).array().isNaN().all());
    } else {
      CHECK(spoilt.col(j) == clean.col(j));
    }
  }
}

TEST_CASE("a kept split of the weights is used only while they hold the same values",
          "[tile_unit]") {
  const Shape shape{64, 64, 48};
  if (tile_unit_missing(shape)) return;
  std::mt19937 generator(64);
  Matrix<float> lhs = random_matrix(shape.rows, shape.depth, 0.2f, generator);
  const Matrix<float> rhs = random_matrix(shape.depth, shape.cols, 1.0f, generator);
  // A fresh object for each expected result: nothing kept from earlier products.
  const auto fresh_product = [&](const Matrix<float>& weights) {
    TileUnitProduct product;
    Matrix<float> out(shape.rows, shape.cols);
    MatrixRef<float> out_ref(out);
    product.multiply(weights, rhs, out_ref);
    return out;
  };
  TileUnitProduct product;
  Matrix<float> out(shape.rows, shape.cols);
  MatrixRef<float> out_ref(out);
  product.multiply(lhs, rhs, out_ref);
  CHECK(out == fresh_product(lhs));
  // The same matrix, one weight changed in place (same address and shape).
  lhs(7, 40) += 0.5f;
  product.multiply(lhs, rhs, out_ref);
  CHECK(out == fresh_product(lhs));
  // More weight matrices in turn than splits are kept, each changed between its products.
  std::vector<Matrix<float>> layers;
  for (int layer = 0; layer < 6; ++layer) {
    layers.push_back(random_matrix(shape.rows, shape.depth, 0.2f, generator));
  }
  for (int round = 0; round < 3; ++round) {
    for (Matrix<float>& weights : layers) {
      if (round == 2) weights(3, 3) *= -1.0f;
      product.multiply(weights, rhs, out_ref);
      CHECK(out == fresh_product(weights));
    }
  }
}

TEST_CASE("multiply_and_finish finishes every block of the result once, after its product",
          "[tile_unit]") {
  // On the tile unit in 32-row blocks while later ones are computed; elsewhere in one call.
  std::mt19937 generator(65);
  for (const Shape& shape : kShapes) {
    INFO(shape.rows << "x" << shape.depth << " times " << shape.depth << "x" << shape.cols);
    const Matrix<float> lhs = random_matrix(shape.rows, shape.depth, 0.2f, generator);
    const Matrix<float> rhs = random_matrix(shape.depth, shape.cols, 1.0f, generator);
    flowmatch::detail::ProductBuffers<float> products;
    Matrix<float> expected(shape.rows, shape.cols);
    products.multiply(lhs, rhs, expected);
    Matrix<float> out = Matrix<float>::Zero(shape.rows, shape.cols);
    Eigen::MatrixXi finished = Eigen::MatrixXi::Zero(shape.rows, shape.cols);
    bool complete_when_finished = true;
    products.multiply_and_finish(lhs, rhs, out, [&](Index row, Index col, Index rows, Index cols) {
      complete_when_finished = complete_when_finished && out.block(row, col, rows, cols) ==
                                                             expected.block(row, col, rows, cols);
      finished.block(row, col, rows, cols).array() += 1;
      out.block(row, col, rows, cols).array() *= 2.0f;  // the finishing work itself
    });
    CHECK(complete_when_finished);
    CHECK((finished.array() == 1).all());
    CHECK(out == 2.0f * expected);
  }
}

}  // namespace test_tile_unit
