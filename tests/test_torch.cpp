// The LibTorch component (flowmatch::torch): built only when LibTorch is found.
#include <catch2/catch.hpp>

#include <torch/script.h>

TEST_CASE("LibTorch links and computes", "[torch]") {
  CHECK(torch::ones({2}).sum().item<double>() == 2.0);
}
