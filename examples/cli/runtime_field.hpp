// A velocity field and a scheduler chosen at run time, from the command line.
//
// The library composes fields as templates (a network, its bound conditions, guidance, a
// schedule transform). The tool picks the composition at run time, so it erases the type of
// each finished stage behind flowmatch::AnyField: one instantiation of the solver and
// likelihood code serves every combination of options.
#pragma once

#include <concepts>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include "flowmatch/core/types.hpp"
#include "flowmatch/field/any_field.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/linear_vp.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/scheduler/vp.hpp"

namespace flowmatch_cli {

using flowmatch::AnyField;

/// One of the library's schedulers, chosen by name: condot, cosine, vp, linear-vp or poly:N
/// (the polynomial scheduler α_t = tᴺ). A Scheduler.
template <class Scalar>
class NamedScheduler {
 public:
  using scalar_type = Scalar;

  /// @throws std::invalid_argument for an unknown name or a bad exponent.
  explicit NamedScheduler(const std::string& name) : scheduler_(from_name(name)) {}

  Scalar alpha(Scalar t) const {
    return std::visit([t](const auto& s) { return s.alpha(t); }, scheduler_);
  }
  Scalar sigma(Scalar t) const {
    return std::visit([t](const auto& s) { return s.sigma(t); }, scheduler_);
  }
  Scalar d_alpha(Scalar t) const {
    return std::visit([t](const auto& s) { return s.d_alpha(t); }, scheduler_);
  }
  Scalar d_sigma(Scalar t) const {
    return std::visit([t](const auto& s) { return s.d_sigma(t); }, scheduler_);
  }
  Scalar snr_inverse(Scalar rho) const {
    return std::visit([rho](const auto& s) { return s.snr_inverse(rho); }, scheduler_);
  }

 private:
  using Variant =
      std::variant<flowmatch::CondOT<Scalar>, flowmatch::Cosine<Scalar>, flowmatch::VP<Scalar>,
                   flowmatch::LinearVP<Scalar>, flowmatch::Polynomial<Scalar>>;

  static Variant from_name(const std::string& name) {
    if (name == "condot") return flowmatch::CondOT<Scalar>();
    if (name == "cosine") return flowmatch::Cosine<Scalar>();
    if (name == "vp") return flowmatch::VP<Scalar>();
    if (name == "linear-vp") return flowmatch::LinearVP<Scalar>();
    if (name.starts_with("poly:")) {
      const std::string exponent = name.substr(5);
      std::size_t parsed = 0;
      double value = 0;
      try {
        value = std::stod(exponent, &parsed);
      } catch (const std::exception&) {
        parsed = 0;
      }
      if (exponent.empty() || parsed != exponent.size()) {
        throw std::invalid_argument("scheduler '" + name + "': expected poly:N with a number N");
      }
      return flowmatch::Polynomial<Scalar>(static_cast<Scalar>(value));
    }
    throw std::invalid_argument("unknown scheduler '" + name +
                                "', expected one of: condot, cosine, vp, linear-vp, poly:N");
  }

  Variant scheduler_;
};

}  // namespace flowmatch_cli
