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

// Eigen's packet types are SIMD vector types, whose alignment attributes GCC reports as
// ignored when they are template arguments; Eigen silences the same warning in its headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"

/// The SiLU kernel, the only one: σ(z) = z·s(z), σ'(z) and, if @p curvature is not null,
/// σ''(z) of one packet of pre-activations. From e = e^(−|z|) (Eigen's vectorised exp),
/// L = 1/(1 + e) = s(|z|) and S = e·L = s(−|z|), none of which overflows: s(z) = L for z ≥ 0
/// and S otherwise, 1 − s the other one, and since s·(1 − s) = L·S,
///
///     σ' = s·(1 + z·(1 − s)) = s + z·L·S,    σ'' = L·S·(2 + z·((1 − s) − s)).
///
/// Where e^(−|z|) is below the smallest normal number (z below about −708 in double, −87 in
/// float) it is taken as 0, so the tails are exact: σ = z and σ' = 1 above, and σ = σ' = σ'' = 0
/// below, where the exact values are smaller than the smallest normal number times |z|.
///
/// Accuracy, measured against the same formulas in long double with std::exp over the whole
/// range above the flush, and tested in tests/test_mlp.cpp: σ within 3 units in the last place
/// (relative), σ' within 4 units in the last place of s + |z|·L·S and σ'' within 4 units in the
/// last place of L·S·(2 + |z|·|1 − 2s|), the magnitudes of their terms (σ' and σ'' vanish at
/// points, where no relative bound holds).
template <class Packet>
EIGEN_ALWAYS_INLINE void silu_packet(const Packet& z, Packet& value, Packet& slope,
                                     Packet* curvature) {
  namespace packet = Eigen::internal;
  using Scalar = typename packet::unpacket_traits<Packet>::type;
  const Packet one = packet::pset1<Packet>(1);
  const Packet negative_magnitude = packet::pnegate(packet::pabs(z));
  const Packet underflow = packet::pcmp_lt(
      negative_magnitude, packet::pset1<Packet>(std::log(std::numeric_limits<Scalar>::min())));
  const Packet decay =
      packet::pselect(underflow, packet::pzero(z), packet::pexp(negative_magnitude));
  const Packet large = packet::pdiv(one, packet::padd(one, decay));
  const Packet small = packet::pmul(decay, large);
  const Packet negative = packet::pcmp_lt(z, packet::pzero(z));
  const Packet sigmoid = packet::pselect(negative, small, large);
  const Packet product = packet::pmul(large, small);  // s·(1 − s)
  value = packet::pmul(z, sigmoid);
  slope = packet::padd(sigmoid, packet::pmul(z, product));
  if (curvature != nullptr) {
    const Packet complement = packet::pselect(negative, large, small);
    *curvature = packet::pmul(
        product,
        packet::padd(packet::pset1<Packet>(2), packet::pmul(z, packet::psub(complement, sigmoid))));
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
