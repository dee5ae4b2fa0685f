/// @file activation.hpp
/// @brief Element-wise activation functions of the neural fields, with exact first and second
/// derivatives.
///
/// Each activation uses PyTorch's default parameters so that weights trained there evaluate
/// identically here:
///
/// | name         | σ(z)                                               | PyTorch module          |
/// |--------------|----------------------------------------------------|-------------------------|
/// | "silu"       | z·s(z), s the logistic sigmoid                     | nn.SiLU                 |
/// | "relu"       | max(z, 0)                                          | nn.ReLU                 |
/// | "tanh"       | tanh(z)                                            | nn.Tanh                 |
/// | "gelu_tanh"  | ½z(1 + tanh(√(2/π)(z + 0.044715 z³)))              | nn.GELU("tanh")         |
/// | "gelu"       | z·Φ(z) = ½z(1 + erf(z/√2))                         | nn.GELU()               |
/// | "selu"       | λz for z > 0, λα(eᶻ − 1) otherwise                 | nn.SELU                 |
/// | "softplus"   | log(1 + eᶻ) for z ≤ 20, z for z > 20               | nn.Softplus()           |
/// | "elu"        | z for z > 0, eᶻ − 1 otherwise (α = 1)              | nn.ELU()                |
/// | "leaky_relu" | z for z > 0, 0.01·z otherwise                      | nn.LeakyReLU()          |
///
/// with SELU's λ = 1.0507009873554804934193349852946 and α = 1.6732632423543772848170429916717.
/// At a kink (z = 0 for relu, leaky_relu, elu, selu; z = 20 for softplus) the derivative is the
/// one-sided value PyTorch's autograd uses: that of the branch taken for z ≤ 0 (z ≤ 20). The
/// second derivative σ'' (the exact gradient of a network's divergence needs it) follows the same
/// rule; it is zero on every linear piece.
///
/// The formulas are evaluated in forms that stay finite and accurate for large |z|: the sigmoid
/// and tanh are written on exp of a non-positive argument, log(1 + eᶻ) with log1p, eᶻ − 1 with
/// expm1, and Φ with erfc.
#pragma once

#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/eigen_core.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// The activation between two linear layers of a network.
enum class Activation { silu, relu, tanh, gelu_tanh, gelu, selu, softplus, elu, leaky_relu };

/// Every activation, in declaration order (for iterating in tests and tools).
inline constexpr std::array<Activation, 9> all_activations = {
    Activation::silu,      Activation::relu, Activation::tanh,
    Activation::gelu_tanh, Activation::gelu, Activation::selu,
    Activation::softplus,  Activation::elu,  Activation::leaky_relu};

/// The name of @p activation as listed in the table above ("silu", "gelu_tanh", ...).
/// Throws std::invalid_argument for a value outside the enumeration.
inline std::string_view activation_name(Activation activation) {
  switch (activation) {
    case Activation::silu:
      return "silu";
    case Activation::relu:
      return "relu";
    case Activation::tanh:
      return "tanh";
    case Activation::gelu_tanh:
      return "gelu_tanh";
    case Activation::gelu:
      return "gelu";
    case Activation::selu:
      return "selu";
    case Activation::softplus:
      return "softplus";
    case Activation::elu:
      return "elu";
    case Activation::leaky_relu:
      return "leaky_relu";
  }
  detail::reject_argument("activation", detail::is_value(static_cast<int>(activation)),
                          "one of the Activation enumerators");
}

/// The activation called @p name (exactly one of the names in the table above).
/// Throws std::invalid_argument naming the accepted names otherwise.
inline Activation activation_from_name(std::string_view name) {
  for (const Activation activation : all_activations) {
    if (activation_name(activation) == name) return activation;
  }
  detail::reject_argument("activation_from_name: name", "is '" + std::string(name) + "'",
                          "one of silu, relu, tanh, gelu_tanh, gelu, selu, softplus, elu, "
                          "leaky_relu");
}

namespace detail {

/// σ(z) and σ'(z) at one point.
template <class Scalar>
struct ActivationPoint {
  Scalar value;
  Scalar derivative;
};

/// The logistic sigmoid 1/(1 + e⁻ᶻ) and its complement 1 − s = s(−z), both from e^(−|z|) so
/// neither overflows nor loses relative accuracy.
template <class Scalar>
struct SigmoidPair {
  Scalar sigmoid;
  Scalar complement;
};

template <class Scalar>
SigmoidPair<Scalar> sigmoid_pair(Scalar z) {
  const Scalar decay = std::exp(-std::abs(z));
  const Scalar large = Scalar(1) / (Scalar(1) + decay);  // s(|z|)
  const Scalar small = decay * large;                    // s(−|z|)
  return z >= Scalar(0) ? SigmoidPair<Scalar>{large, small} : SigmoidPair<Scalar>{small, large};
}

/// tanh(z) and sech²(z) = 1 − tanh²(z) from e = e^(−2|z|):
/// tanh|z| = −expm1(−2|z|)/(2 + expm1(−2|z|)), sech²z = 4e/(1 + e)².
template <class Scalar>
ActivationPoint<Scalar> tanh_point(Scalar z) {
  const Scalar exponent = Scalar(-2) * std::abs(z);
  const Scalar minus_expm1 = -std::expm1(exponent);  // 1 − e
  const Scalar decay = std::exp(exponent);           // e
  const Scalar magnitude = minus_expm1 / (Scalar(2) - minus_expm1);
  const Scalar one_plus_decay = Scalar(1) + decay;
  return {std::copysign(magnitude, z), Scalar(4) * decay / (one_plus_decay * one_plus_decay)};
}

/// σ(z), σ'(z) and σ''(z) at one point.
template <class Scalar>
struct ActivationJet {
  Scalar value;
  Scalar derivative;
  Scalar second_derivative;
};

/// The constants of exp_of_negative for one scalar type: ln 2 = ln2_high + ln2_low, ln2_high
/// truncated to few enough bits that n·ln2_high is exact for every n the reduction meets
/// (|n| ≤ 126 in float, ≤ 1022 in double), ln2_low the rest rounded; and the coefficients of g,
/// highest degree first, in e⁻ᵘ ≈ 1 + u·g(u): the Chebyshev fit of (e⁻ᵘ − 1)/u on
/// [−ln2/2, ln2/2], of degree 5 in float and 10 in double (approximation errors 1.1·10⁻⁸ and
/// 1.8·10⁻¹⁷, a tenth of a unit in the last place).
template <class Scalar>
struct ExpConstants;

template <>
struct ExpConstants<float> {
  static constexpr float ln2_high = 0.693145751953125f;  // ln 2 truncated to 16 bits
  static constexpr float ln2_low = 1.4286068e-06f;
  static constexpr std::array<float, 6> polynomial = {0.0013933642f, -0.008369149f, 0.041666467f,
                                                      -0.16666505f,  0.5f,          -1.0f};
};

template <>
struct ExpConstants<double> {
  static constexpr double ln2_high = 0.693147180369123816490173339844;  // truncated to 32 bits
  static constexpr double ln2_low = 1.9082149292705877e-10;
  static constexpr std::array<double, 11> polynomial = {-2.510520637395701e-08,
                                                        2.7626357241447223e-07,
                                                        -2.7557255425746435e-06,
                                                        2.4801504346997686e-05,
                                                        -0.00019841269874800493,
                                                        0.0013888888932488599,
                                                        -0.008333333333326141,
                                                        0.04166666666657314,
                                                        -0.1666666666666667,
                                                        0.5000000000000006,
                                                        -1.0};
};

// Eigen's packet types are SIMD vector types, whose alignment attributes GCC reports as
// ignored when they are template arguments; Eigen silences the same warning in its headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"

/// @p x in the lanes where a ≤ b, zero in the others (also where a or b is NaN).
template <class Packet>
EIGEN_ALWAYS_INLINE Packet zero_unless_at_most(const Packet& a, const Packet& b, const Packet& x) {
  namespace packet = Eigen::internal;
  return packet::pand(packet::pcmp_le(a, b), x);
}

/// p·2ⁿ for integral n where 2ⁿ and the result are normal numbers; lanes with any other n
/// (NaN included) get unspecified values.
template <class Packet>
EIGEN_ALWAYS_INLINE Packet times_power_of_two(const Packet& p, const Packet& n) {
  if constexpr (std::is_floating_point_v<Packet>) {
    // Without vectorisation a packet is one number, and Eigen's pldexp converts n to int
    // unchecked.
    const Packet limit = std::numeric_limits<Packet>::max_exponent;
    return std::ldexp(p, std::fabs(n) <= limit ? static_cast<int>(n) : 0);
  } else {
    return Eigen::internal::pldexp(p, n);
  }
}

#ifdef EIGEN_VECTORIZE_AVX512
// With AVX-512 the comparison yields a mask register that zeroes lanes directly, and scalef
// multiplies by 2ⁿ in one instruction.
EIGEN_ALWAYS_INLINE __m512 zero_unless_at_most(__m512 a, __m512 b, __m512 x) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ), x);
}
EIGEN_ALWAYS_INLINE __m512d zero_unless_at_most(__m512d a, __m512d b, __m512d x) {
  return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(a, b, _CMP_LE_OQ), x);
}
EIGEN_ALWAYS_INLINE __m512 times_power_of_two(__m512 p, __m512 n) {
  return _mm512_scalef_ps(p, n);
}
EIGEN_ALWAYS_INLINE __m512d times_power_of_two(__m512d p, __m512d n) {
  return _mm512_scalef_pd(p, n);
}
#endif

/// e⁻ˣ of a packet, in the lanes where it is a normal number (|x| at most −log of the smallest
/// normal number); the other lanes get unspecified values (inf or NaN among them):
///
///     n = round(−x·log₂e),    u = (x + n·ln2_high) + n·ln2_low = x + n·ln 2,
///     e⁻ˣ = e⁻ᵘ·2ⁿ with e⁻ᵘ ≈ 1 + u·g(u) (ExpConstants), |u| ≤ ln2/2.
///
/// Adding and subtracting 1.5·2^(p−1), p the bits of the significand, rounds to an integer; the
/// first sum in u is exact, so u is within about one rounding of x + n·ln 2.
template <class Packet>
EIGEN_ALWAYS_INLINE Packet exp_of_negative(const Packet& x) {
  namespace packet = Eigen::internal;
  using Scalar = typename packet::unpacket_traits<Packet>::type;
  using Constants = ExpConstants<Scalar>;
  const Packet shifter =
      packet::pset1<Packet>(std::ldexp(Scalar(1.5), std::numeric_limits<Scalar>::digits - 1));
  const Packet n = packet::psub(
      packet::pmadd(x, packet::pset1<Packet>(-std::numbers::log2e_v<Scalar>), shifter), shifter);
  const Packet u = packet::pmadd(n, packet::pset1<Packet>(Constants::ln2_low),
                                 packet::pmadd(n, packet::pset1<Packet>(Constants::ln2_high), x));
  Packet g = packet::pset1<Packet>(Constants::polynomial[0]);
  for (std::size_t k = 1; k < Constants::polynomial.size(); ++k) {
    g = packet::pmadd(g, u, packet::pset1<Packet>(Constants::polynomial[k]));
  }
  return times_power_of_two(packet::pmadd(g, u, packet::pset1<Packet>(1)), n);
}

/// The SiLU kernel, the only one: σ(z) = z·s(z), σ'(z) and, if @p curvature is not null,
/// σ''(z) of one packet of pre-activations. With e = e^(−z) (exp_of_negative) the sigmoid
/// s = 1/(1 + e) and its complement 1 − s = e·s keep full relative accuracy for every z, and
///
///     σ' = s·(1 + z·(1 − s)) = s + z·s·(1 − s),    σ'' = s·(1 − s)·(2 + z·((1 − s) − s)).
///
/// For z in [t, −t], t = log of the smallest normal number rounded toward zero (about −708.4 in
/// double, −87.3 in float), e and s are normal numbers; beyond, the tails are exact: above −t,
/// e is taken as 0 (σ = z, σ' = 1, σ'' = 0), and below t, s and 1 − s are taken as 0
/// (σ = σ' = σ'' = 0, the exact values being smaller than the smallest normal number times
/// |z|). A NaN z gives NaN. Comparisons select lanes through zero_unless_at_most, and the
/// lanes whose e^(−z) is discarded may compute inf or NaN on the way.
///
/// Accuracy, measured against the same formulas in long double with std::exp over the whole
/// range above the flush, and tested in tests/test_mlp.cpp: σ within 2 units in the last place
/// (relative; measured 1.6), σ' within 3 units in the last place of s + |z|·s·(1 − s)
/// (measured 2.2 with fused multiply-add, 2.5 without) and σ'' within 4 units in the last place
/// of s·(1 − s)·(2 + |z|·|1 − 2s|) (measured 3.1), the magnitudes of their terms (σ' and σ''
/// vanish at points, where no relative bound holds); in float and double alike.
template <class Packet>
EIGEN_ALWAYS_INLINE void silu_packet(const Packet& z, Packet& value, Packet& slope,
                                     Packet* curvature) {
  namespace packet = Eigen::internal;
  using Scalar = typename packet::unpacket_traits<Packet>::type;
  const Packet flush_below = packet::pset1<Packet>(
      std::nextafter(std::log(std::numeric_limits<Scalar>::min()), Scalar(0)));
  const Packet saturate_above = packet::pnegate(flush_below);
  const Packet one = packet::pset1<Packet>(1);
  const Packet decay = zero_unless_at_most(z, saturate_above, exp_of_negative(z));  // e, 0 above −t
  const Packet sigmoid =
      zero_unless_at_most(flush_below, z, packet::pdiv(one, packet::padd(one, decay)));
  // 1 − s = e·s, zeroed below t too, where e may have overflowed.
  const Packet complement = zero_unless_at_most(flush_below, z, packet::pmul(decay, sigmoid));
  const Packet product = packet::pmul(sigmoid, complement);
  value = packet::pmul(z, sigmoid);
  slope = packet::pmadd(z, product, sigmoid);
  if (curvature != nullptr) {
    *curvature = packet::pmul(
        product, packet::pmadd(z, packet::psub(complement, sigmoid), packet::pset1<Packet>(2)));
  }
}

/// σ, σ' and σ'' of SiLU at one point, through silu_packet (a zero-padded packet) so that a
/// point gets the same value as inside a batch.
template <class Scalar>
ActivationJet<Scalar> silu_jet(Scalar z) {
  namespace packet = Eigen::internal;
  using Packet = typename packet::packet_traits<Scalar>::type;
  constexpr Index width = packet::unpacket_traits<Packet>::size;
  Scalar lanes[width] = {};
  lanes[0] = z;
  Packet value;
  Packet slope;
  Packet curvature;
  silu_packet(packet::ploadu<Packet>(lanes), value, slope, &curvature);
  ActivationJet<Scalar> jet{};
  jet.value = packet::pfirst(value);
  jet.derivative = packet::pfirst(slope);
  jet.second_derivative = packet::pfirst(curvature);
  return jet;
}

#pragma GCC diagnostic pop

struct SiluFunction {
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    const ActivationJet<Scalar> jet = silu_jet(z);
    return {jet.value, jet.derivative};
  }
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    return silu_jet(z).second_derivative;
  }
};

struct ReluFunction {
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    return z > Scalar(0) ? ActivationPoint<Scalar>{z, Scalar(1)}
                         : ActivationPoint<Scalar>{Scalar(0), Scalar(0)};
  }
  template <class Scalar>
  static Scalar second_derivative(Scalar) {
    return Scalar(0);
  }
};

struct TanhFunction {
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    return tanh_point(z);
  }
  // σ' = 1 − tanh², σ'' = −2·tanh·sech².
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    const ActivationPoint<Scalar> point = tanh_point(z);
    return Scalar(-2) * point.value * point.derivative;
  }
};

struct GeluTanhFunction {
  // ½(1 + tanh u) = s(2u) with u = √(2/π)(z + 0.044715 z³):
  // σ = z·s(2u), σ' = s(2u) + z·s(2u)(1 − s(2u))·2u'.
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    const Scalar scale = Scalar(std::numbers::sqrt2 / std::sqrt(std::numbers::pi));  // √(2/π)
    const Scalar cubic = Scalar(0.044715);
    const Scalar u = scale * (z + cubic * z * z * z);
    const Scalar du = scale * (Scalar(1) + Scalar(3) * cubic * z * z);
    const SigmoidPair<Scalar> s = sigmoid_pair(Scalar(2) * u);
    return {z * s.sigmoid, s.sigmoid + Scalar(2) * z * s.sigmoid * s.complement * du};
  }
  // With g = s(2u), g' = 2u'·s(1 − s) and g'' = 2u''·s(1 − s) + 4u'²·s(1 − s)(1 − 2s):
  // σ'' = 2g' + z·g'' = 2s(1 − s)·(2u' + z·(u'' + 2u'²(1 − 2s))), u'' = 6·0.044715·√(2/π)·z.
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    const Scalar scale = Scalar(std::numbers::sqrt2 / std::sqrt(std::numbers::pi));
    const Scalar cubic = Scalar(0.044715);
    const Scalar u = scale * (z + cubic * z * z * z);
    const Scalar du = scale * (Scalar(1) + Scalar(3) * cubic * z * z);
    const Scalar ddu = scale * Scalar(6) * cubic * z;
    const SigmoidPair<Scalar> s = sigmoid_pair(Scalar(2) * u);
    return Scalar(2) * s.sigmoid * s.complement *
           (Scalar(2) * du + z * (ddu + Scalar(2) * du * du * (s.complement - s.sigmoid)));
  }
};

struct GeluFunction {
  // Φ(z) = ½erfc(−z/√2), φ(z) = e^(−z²/2)/√(2π): σ = z·Φ, σ' = Φ + z·φ.
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    const Scalar cdf = Scalar(0.5) * std::erfc(-z / Scalar(std::numbers::sqrt2));
    const Scalar pdf =
        std::exp(Scalar(-0.5) * z * z) * Scalar(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
    return {z * cdf, cdf + z * pdf};
  }
  // φ' = −z·φ: σ'' = 2φ + z·φ' = φ·(2 − z²).
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    const Scalar pdf =
        std::exp(Scalar(-0.5) * z * z) * Scalar(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
    return pdf * (Scalar(2) - z * z);
  }
};

struct SeluFunction {
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    const Scalar lambda = Scalar(1.0507009873554804934193349852946);
    const Scalar alpha = Scalar(1.6732632423543772848170429916717);
    if (z > Scalar(0)) return {lambda * z, lambda};
    return {lambda * alpha * std::expm1(z), lambda * alpha * std::exp(z)};
  }
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    if (z > Scalar(0)) return Scalar(0);
    const Scalar lambda = Scalar(1.0507009873554804934193349852946);
    const Scalar alpha = Scalar(1.6732632423543772848170429916717);
    return lambda * alpha * std::exp(z);
  }
};

struct SoftplusFunction {
  // PyTorch's threshold: above 20 the function is the identity.
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    if (z > Scalar(20)) return {z, Scalar(1)};
    return {std::log1p(std::exp(z)), sigmoid_pair(z).sigmoid};
  }
  // σ' = s(z), σ'' = s(1 − s); zero on the identity branch above 20.
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    if (z > Scalar(20)) return Scalar(0);
    const SigmoidPair<Scalar> s = sigmoid_pair(z);
    return s.sigmoid * s.complement;
  }
};

struct EluFunction {
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    if (z > Scalar(0)) return {z, Scalar(1)};
    return {std::expm1(z), std::exp(z)};
  }
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    return z > Scalar(0) ? Scalar(0) : std::exp(z);
  }
};

struct LeakyReluFunction {
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    const Scalar slope = Scalar(0.01);
    return z > Scalar(0) ? ActivationPoint<Scalar>{z, Scalar(1)}
                         : ActivationPoint<Scalar>{slope * z, slope};
  }
  template <class Scalar>
  static Scalar second_derivative(Scalar) {
    return Scalar(0);
  }
};

/// Calls @p visitor with the function object of @p activation (a type with static `point(z)`
/// and `second_derivative(z)`), so that loops over a batch are compiled once per activation.
template <class Visitor>
decltype(auto) visit_activation(Activation activation, Visitor&& visitor) {
  switch (activation) {
    case Activation::silu:
      return visitor(SiluFunction{});
    case Activation::relu:
      return visitor(ReluFunction{});
    case Activation::tanh:
      return visitor(TanhFunction{});
    case Activation::gelu_tanh:
      return visitor(GeluTanhFunction{});
    case Activation::gelu:
      return visitor(GeluFunction{});
    case Activation::selu:
      return visitor(SeluFunction{});
    case Activation::softplus:
      return visitor(SoftplusFunction{});
    case Activation::elu:
      return visitor(EluFunction{});
    case Activation::leaky_relu:
      return visitor(LeakyReluFunction{});
  }
  detail::reject_argument("activation", detail::is_value(static_cast<int>(activation)),
                          "one of the Activation enumerators");
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"

/// values(:, n) ← σ(values(:, n) + bias) for SiLU through silu_packet, with σ' into *slopes
/// and σ'' into *curvatures unless null. A column's rows are processed in packets, the last
/// partial packet through a zero-padded copy, so every column is computed the same way
/// wherever it is in the batch.
template <class Scalar, bool WithSlopes, bool WithCurvatures>
void add_bias_and_apply_silu(Matrix<Scalar>& values, const ConstVectorRef<Scalar>& bias,
                             Matrix<Scalar>* slopes, Matrix<Scalar>* curvatures) {
  namespace packet = Eigen::internal;
  using Packet = typename packet::packet_traits<Scalar>::type;
  constexpr Index width = packet::unpacket_traits<Packet>::size;
  const Index rows = values.rows();
  const Index full_rows = rows - rows % width;
  Packet value;
  Packet slope;
  Packet curvature;
  Packet* const curvature_out = WithCurvatures ? &curvature : nullptr;
  for (Index col = 0; col < values.cols(); ++col) {
    Scalar* column = values.data() + col * rows;
    Scalar* slope_column = WithSlopes ? slopes->data() + col * rows : nullptr;
    Scalar* curvature_column = WithCurvatures ? curvatures->data() + col * rows : nullptr;
    for (Index row = 0; row < full_rows; row += width) {
      silu_packet(packet::padd(packet::ploadu<Packet>(column + row),
                               packet::ploadu<Packet>(bias.data() + row)),
                  value, slope, curvature_out);
      packet::pstoreu(column + row, value);
      if constexpr (WithSlopes) packet::pstoreu(slope_column + row, slope);
      if constexpr (WithCurvatures) packet::pstoreu(curvature_column + row, curvature);
    }
    if (full_rows == rows) continue;
    Scalar lanes[width] = {};
    for (Index row = full_rows; row < rows; ++row) lanes[row - full_rows] = column[row] + bias(row);
    silu_packet(packet::ploadu<Packet>(lanes), value, slope, curvature_out);
    Scalar value_lanes[width];
    Scalar slope_lanes[width];
    Scalar curvature_lanes[width];
    packet::pstoreu(value_lanes, value);
    packet::pstoreu(slope_lanes, slope);
    if constexpr (WithCurvatures) packet::pstoreu(curvature_lanes, curvature);
    for (Index row = full_rows; row < rows; ++row) {
      column[row] = value_lanes[row - full_rows];
      if constexpr (WithSlopes) slope_column[row] = slope_lanes[row - full_rows];
      if constexpr (WithCurvatures) curvature_column[row] = curvature_lanes[row - full_rows];
    }
  }
}

#pragma GCC diagnostic pop

/// values(:, n) ← σ(values(:, n) + bias) for every column n; when @p slopes is not null also
/// σ' into it, and when @p curvatures is not null (only with slopes) σ'' into it, both resized
/// to the shape of @p values. One vectorised pass for SiLU, element by element for the others.
template <class Scalar>
void add_bias_and_activate(Activation activation, Matrix<Scalar>& values,
                           const ConstVectorRef<Scalar>& bias, Matrix<Scalar>* slopes,
                           Matrix<Scalar>* curvatures = nullptr) {
  if (slopes != nullptr) slopes->resize(values.rows(), values.cols());
  if (curvatures != nullptr) curvatures->resize(values.rows(), values.cols());
  if (activation == Activation::silu) {
    if (curvatures != nullptr) {
      add_bias_and_apply_silu<Scalar, true, true>(values, bias, slopes, curvatures);
    } else if (slopes != nullptr) {
      add_bias_and_apply_silu<Scalar, true, false>(values, bias, slopes, nullptr);
    } else {
      add_bias_and_apply_silu<Scalar, false, false>(values, bias, nullptr, nullptr);
    }
    return;
  }
  values.colwise() += bias;
  Scalar* data = values.data();
  Scalar* slope_data = slopes != nullptr ? slopes->data() : nullptr;
  Scalar* curvature_data = curvatures != nullptr ? curvatures->data() : nullptr;
  const Index size = values.size();
  visit_activation(activation, [&](auto function) {
    for (Index i = 0; i < size; ++i) {
      const Scalar z = data[i];
      const ActivationPoint<Scalar> point = function.point(z);
      data[i] = point.value;
      if (slope_data != nullptr) slope_data[i] = point.derivative;
      if (curvature_data != nullptr) curvature_data[i] = function.second_derivative(z);
    }
  });
}

}  // namespace detail

/// σ(z) for one pre-activation @p z.
template <class Scalar>
Scalar activation_value(Activation activation, Scalar z) {
  return detail::visit_activation(activation,
                                  [z](auto function) { return function.point(z).value; });
}

/// σ'(z) for one pre-activation @p z (the one-sided value at a kink, see the table above).
template <class Scalar>
Scalar activation_derivative(Activation activation, Scalar z) {
  return detail::visit_activation(activation,
                                  [z](auto function) { return function.point(z).derivative; });
}

/// σ''(z) for one pre-activation @p z (the one-sided value at a kink, see the table above).
template <class Scalar>
Scalar activation_second_derivative(Activation activation, Scalar z) {
  return detail::visit_activation(activation,
                                  [z](auto function) { return function.second_derivative(z); });
}

}  // namespace flowmatch
