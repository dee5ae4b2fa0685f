/// @file sample_noise.hpp
/// @brief Independent Gaussian noise streams, one per sample, addressed by the sample's index
/// (internal; used by the stochastic sampler).
///
/// The words of the stream of sample n under key k are
///
///     w_c = mix(k_n + mix(c)),  c = 0, 1, 2, …,   k_n = mix(k + mix(n)),
///
/// with mix the SplitMix64 finaliser (a bijection of 64-bit words with full avalanche). A stream
/// depends only on (k, n) and on how many words it has given, never on the other samples of a
/// batch, on how the batch is split or on the order in which samples are served. Normal
/// variates come from std::normal_distribution over these words.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "flowmatch/core/types.hpp"

namespace flowmatch::detail {

/// The SplitMix64 finaliser (Steele, Lea and Flood, OOPSLA 2014).
constexpr std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// The counter-based stream of one sample (see the file comment): a
/// UniformRandomBitGenerator over a key and a counter.
class SampleStream {
 public:
  using result_type = std::uint64_t;

  SampleStream(std::uint64_t key, std::uint64_t sample, std::uint64_t counter)
      : key_(mix64(key + mix64(sample))), counter_(counter) {}

  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()() { return mix64(key_ + mix64(counter_++)); }

  /// Words given so far (the counter).
  [[nodiscard]] std::uint64_t counter() const { return counter_; }

 private:
  std::uint64_t key_;
  std::uint64_t counter_;
};

/// The noise streams of a batch whose column j is sample first_sample + j.
template <class Scalar>
class SampleNoise {
 public:
  SampleNoise(std::uint64_t key, std::uint64_t first_sample, Index samples)
      : key_(key), first_sample_(first_sample), counters_(static_cast<std::size_t>(samples), 0) {}

  /// Brownian increments over a step of length @p step into @p out (d×N, sized by the caller):
  /// each column the sum of @p substeps independent N(0, (step/substeps)·I) vectors, drawn in
  /// order from its sample's stream. A run with K steps of m substeps and a run with K·m steps of
  /// one substep over the same interval therefore share their Brownian path.
  void increments(Scalar step, std::size_t substeps, MatrixRef<Scalar> out) {
    const Scalar scale = std::sqrt(step / static_cast<Scalar>(substeps));
    for (Index col = 0; col < out.cols(); ++col) {
      std::uint64_t& counter = counters_[static_cast<std::size_t>(col)];
      SampleStream stream(key_, first_sample_ + static_cast<std::uint64_t>(col), counter);
      auto column = out.col(col);
      column.setZero();
      for (std::size_t substep = 0; substep < substeps; ++substep) {
        // A fresh distribution per substep: no variate cached across substeps, so each substep
        // reads the same words whatever the grouping of substeps into steps.
        std::normal_distribution<Scalar> normal(Scalar(0), Scalar(1));
        for (Scalar& value : column) value += normal(stream);
      }
      column *= scale;
      counter = stream.counter();
    }
  }

 private:
  std::uint64_t key_;
  std::uint64_t first_sample_;
  std::vector<std::uint64_t> counters_;
};

}  // namespace flowmatch::detail
