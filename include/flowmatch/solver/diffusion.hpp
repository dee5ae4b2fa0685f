/// @file diffusion.hpp
/// @brief The diffusion coefficient g(t) of the stochastic sampler (sde.hpp).
///
/// On an affine path x_t = α_t x₁ + σ_t x₀ every g(t) ≥ 0 gives an SDE
///
///     dX = [u_t(X) + ½ g(t)² ∇log p_t(X)] dt + g(t) dW
///
/// with the marginals p_t of the flow. Three choices of g, each a scale G ≥ 0 times a profile:
///
///   - constant:  g = G. The same noise at every time. Near t = 1 the score term is stiff:
///     ∇log p_t = −ε̂/σ_t grows like 1/σ_t, and across a direction in which p_t has variance v
///     the term ½G²∇log p_t contracts at rate G²/(2v); an explicit step of size h is stable
///     only while v ≳ G²·h/4. For data concentrated near a thin set v ≈ σ_t², so the last steps
///     before t = 1 are not, for large G.
///   - sigma:     g = G·σ_t. Noise fades with the noise of the path; ½g²∇log p_t = −½G²σ_t·ε̂
///     stays bounded and vanishes at t = 1 (σ_1 = 0).
///   - vanishing: g = G·sqrt(α_t·σ_t), zero at both ends (α_0 = 0, σ_1 = 0); for CondOT this is
///     G·sqrt(t(1 − t)). Then ½g²∇log p_t = −½G²α_t·ε̂ is bounded on all of [0, 1], and g(0) = 0
///     keeps the sampler off the score at t = 0, where some paths do not define it (Polynomial
///     with n > 1, where α = α̇ = 0).
///
/// Here ε̂ = E[x₀ | x_t = x] is the noise predicted from the velocity (path/affine_path.hpp).
/// G = 0 gives g ≡ 0 for every profile: the deterministic flow.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <string>
#include <string_view>
#include <utility>

#include "flowmatch/detail/named_values.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The time profile of a diffusion coefficient (see the file comment).
enum class DiffusionProfile {
  constant,   ///< g = G.
  sigma,      ///< g = G·σ_t.
  vanishing,  ///< g = G·sqrt(α_t·σ_t): zero at t = 0 and t = 1.
};

namespace detail {

inline constexpr std::array<std::pair<DiffusionProfile, std::string_view>, 3>
    diffusion_profile_names{{
        {DiffusionProfile::constant, "constant"},
        {DiffusionProfile::sigma, "sigma"},
        {DiffusionProfile::vanishing, "vanishing"},
    }};

}  // namespace detail

/// The name of @p profile ("constant", "sigma" or "vanishing").
inline std::string_view diffusion_profile_name(DiffusionProfile profile) {
  return detail::name_in(detail::diffusion_profile_names, profile, "DiffusionProfile");
}

/// The profile called @p name; an unknown name throws std::invalid_argument listing the valid
/// ones.
inline DiffusionProfile diffusion_profile_from_name(std::string_view name) {
  return detail::value_named(detail::diffusion_profile_names, name, "diffusion profile");
}

/// A diffusion coefficient g(t) = scale × profile(t) (see the file comment). The default is
/// g ≡ 0, the deterministic flow.
template <class Scalar = double>
struct Diffusion {
  DiffusionProfile profile = DiffusionProfile::constant;
  Scalar scale = Scalar(0);  ///< G, finite and ≥ 0.

  /// g = @p scale at every time.
  static Diffusion constant(Scalar scale) { return {DiffusionProfile::constant, scale}; }
  /// g = @p scale · σ_t.
  static Diffusion sigma(Scalar scale) { return {DiffusionProfile::sigma, scale}; }
  /// g = @p scale · sqrt(α_t·σ_t).
  static Diffusion vanishing(Scalar scale) { return {DiffusionProfile::vanishing, scale}; }

  /// g(t) on the path of @p scheduler.
  template <SchedulerOf<Scalar> S>
  Scalar operator()(const S& scheduler, Scalar t) const {
    if (scale == Scalar(0)) return Scalar(0);
    switch (profile) {
      case DiffusionProfile::constant:
        return scale;
      case DiffusionProfile::sigma:
        return scale * scheduler.sigma(t);
      case DiffusionProfile::vanishing:
        return scale * std::sqrt(std::max(Scalar(0), scheduler.alpha(t) * scheduler.sigma(t)));
    }
    return Scalar(0);
  }
};

namespace detail {

/// Throws std::invalid_argument naming @p scale_name, the name of the scale in the caller's
/// options, unless @p diffusion has a known profile and a finite scale >= 0.
template <class Scalar>
void validate_diffusion(std::string_view scale_name, const Diffusion<Scalar>& diffusion) {
  diffusion_profile_name(diffusion.profile);  // rejects values outside the enumeration
  require_nonnegative(scale_name, diffusion.scale);
}

}  // namespace detail
}  // namespace flowmatch
