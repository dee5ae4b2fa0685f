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
#include <numbers>
#include <stdexcept>
#include <string>
#include <string_view>

#include "flowmatch/core/types.hpp"

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
  throw std::invalid_argument("activation: unknown enumeration value " +
                              std::to_string(static_cast<int>(activation)));
}

/// The activation called @p name (exactly one of the names in the table above).
/// Throws std::invalid_argument naming the accepted names otherwise.
inline Activation activation_from_name(std::string_view name) {
  for (const Activation activation : all_activations) {
    if (activation_name(activation) == name) return activation;
  }
  throw std::invalid_argument("activation name '" + std::string(name) +
                              "' is unknown, expected one of silu, relu, tanh, gelu_tanh, gelu, "
                              "selu, softplus, elu, leaky_relu");
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

struct SiluFunction {
  // σ = z·s, σ' = s + z·s·(1 − s).
  template <class Scalar>
  static ActivationPoint<Scalar> point(Scalar z) {
    const SigmoidPair<Scalar> s = sigmoid_pair(z);
    return {z * s.sigmoid, s.sigmoid * (Scalar(1) + z * s.complement)};
  }
  // s' = s(1 − s): σ'' = s(1 − s)·(2 + z(1 − 2s)).
  template <class Scalar>
  static Scalar second_derivative(Scalar z) {
    const SigmoidPair<Scalar> s = sigmoid_pair(z);
    return s.sigmoid * s.complement * (Scalar(2) + z * (s.complement - s.sigmoid));
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
  throw std::invalid_argument("activation: unknown enumeration value " +
                              std::to_string(static_cast<int>(activation)));
}

/// Replaces every pre-activation z of @p values by σ(z); when @p slopes is not null, also
/// writes σ'(z) into it (resized to the shape of @p values).
template <class Scalar>
void apply_activation(Activation activation, Matrix<Scalar>& values, Matrix<Scalar>* slopes) {
  Scalar* data = values.data();
  const Index size = values.size();
  if (slopes == nullptr) {
    visit_activation(activation, [&](auto function) {
      for (Index i = 0; i < size; ++i) data[i] = function.point(data[i]).value;
    });
    return;
  }
  slopes->resize(values.rows(), values.cols());
  Scalar* slope_data = slopes->data();
  visit_activation(activation, [&](auto function) {
    for (Index i = 0; i < size; ++i) {
      const ActivationPoint<Scalar> point = function.point(data[i]);
      data[i] = point.value;
      slope_data[i] = point.derivative;
    }
  });
}

/// Replaces every pre-activation z of @p values by σ(z) and writes σ'(z) into @p slopes and
/// σ''(z) into @p curvatures (both resized to the shape of @p values).
template <class Scalar>
void apply_activation_with_curvature(Activation activation, Matrix<Scalar>& values,
                                     Matrix<Scalar>& slopes, Matrix<Scalar>& curvatures) {
  slopes.resize(values.rows(), values.cols());
  curvatures.resize(values.rows(), values.cols());
  Scalar* data = values.data();
  Scalar* slope_data = slopes.data();
  Scalar* curvature_data = curvatures.data();
  const Index size = values.size();
  visit_activation(activation, [&](auto function) {
    for (Index i = 0; i < size; ++i) {
      const Scalar z = data[i];
      const ActivationPoint<Scalar> point = function.point(z);
      data[i] = point.value;
      slope_data[i] = point.derivative;
      curvature_data[i] = function.second_derivative(z);
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
