/// @file carry_over.hpp
/// @brief The masked source's exact posterior at unmasked tokens, around any denoiser.
///
/// Under the mixture path from the masked source, a token of x_t is either the mask token K or
/// already x₁'s token, so at an unmasked position the posterior p(x₁ | x_t) is the point mass on
/// x_t. A network only approaches it; CarryOverDenoiser writes it exactly and keeps the wrapped
/// denoiser's posterior at the masked positions. This matters for the ELBO (discrete/elbo.hpp):
/// a posterior q < 1 on an unmasked token costs κ̇/(1 − κ)·(1 − q) per unit time, whose integral
/// diverges at t = 1 for every q < 1; and the sampler never moves an unmasked token. Around a
/// conditional denoiser (discrete/conditional_denoiser.hpp) the wrapper is conditional too and
/// treats the posterior of every label the same way, so the guided sampler
/// (discrete/guidance.hpp) never moves an unmasked token either: both rates to another token
/// are 0 there.
#pragma once

#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/tokens.hpp"

namespace flowmatch {

/// A Denoiser over the K data tokens of a masked source: @p D's posterior where x_t holds the
/// mask token K, the point mass on x_t elsewhere (see the file comment).
template <class D>
class CarryOverDenoiser {
 public:
  using scalar_type = typename D::scalar_type;

  /// Wraps @p denoiser, a Denoiser of scalar type D::scalar_type.
  explicit CarryOverDenoiser(D denoiser) : denoiser_(std::move(denoiser)) {}

  /// K, the number of data tokens (the wrapped denoiser's).
  [[nodiscard]] Index vocabulary() const { return denoiser_.vocabulary(); }

  /// The wrapped denoiser.
  [[nodiscard]] const D& wrapped() const { return denoiser_; }

  /// C, the wrapped conditional denoiser's number of labels.
  [[nodiscard]] Index labels() const requires ConditionalDenoiser<D, scalar_type> {
    return denoiser_.labels();
  }

  /// Writes p(x₁ | x_t) into @p posterior ((K·L)×N): the wrapped denoiser's, then e_j at every
  /// position holding a data token j.
  /// @throws what the wrapped denoiser throws (bad tokens, shapes or times).
  void operator()(const ConstVectorRef<scalar_type>& t, const ConstTokenRef& x_t,
                  MatrixRef<scalar_type> posterior) const {
    denoiser_(t, x_t, posterior);
    carry_over(x_t, posterior);
  }

  /// As the plain call, with the wrapped conditional denoiser's p(x₁ | x_t, y) for the N
  /// @p labels (in [0, C], C the null label) at the masked positions.
  /// @throws what the wrapped denoiser throws (bad labels, tokens, shapes or times).
  void operator()(const ConstVectorRef<scalar_type>& t, const ConstTokenRef& x_t,
                  const ConstLabelRef& labels, MatrixRef<scalar_type> posterior) const requires
      ConditionalDenoiser<D, scalar_type> {
    denoiser_(t, x_t, labels, posterior);
    carry_over(x_t, posterior);
  }

 private:
  // Writes e_j at every position of @p x_t holding a data token j.
  void carry_over(const ConstTokenRef& x_t, MatrixRef<scalar_type> posterior) const {
    const Index vocabulary = denoiser_.vocabulary();
    for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
      for (Index position = 0; position < x_t.rows(); ++position) {
        const Token token = x_t(position, sequence);
        if (token == vocabulary) continue;  // the mask token
        auto distribution = position_distribution(posterior, vocabulary, position, sequence);
        distribution.setZero();
        distribution(token) = scalar_type(1);
      }
    }
  }

  D denoiser_;
};

}  // namespace flowmatch
