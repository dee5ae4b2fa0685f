// A velocity field and a scheduler chosen at run time, from the command line.
//
// The library composes fields as templates (a network, its bound conditions, guidance, a
// schedule transform). A command-line tool picks the composition at run time, so it erases the
// type of each finished stage behind AnyField: one instantiation of the solver and likelihood
// code serves every combination of options.
#pragma once

#include <concepts>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/linear_vp.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/scheduler/vp.hpp"

namespace flowmatch_cli {

using flowmatch::ConstMatrixRef;
using flowmatch::MatrixRef;
using flowmatch::VectorRef;

template <class Scalar>
class AnyField;

/// A field that AnyField wraps: any velocity field but an AnyField, which is copied instead.
template <class Field, class Scalar>
concept WrappableField =
    flowmatch::VelocityField<Field, Scalar> && !std::same_as<Field, AnyField<Scalar>>;

/// Any velocity field over Scalar. It offers every derivative member the solvers and
/// estimators look for; a member the wrapped field lacks throws std::invalid_argument naming
/// what is missing, so an unsupported combination of options fails with one clear message.
template <class Scalar>
class AnyField {
 public:
  using scalar_type = Scalar;

  /// Wraps @p field; @p owner keeps alive whatever the field refers to (a network, a pool).
  template <class Field>
  requires WrappableField<Field, Scalar>
  explicit AnyField(Field field, std::shared_ptr<const void> owner = {})
      : AnyField(std::make_shared<const Field>(std::move(field)), std::move(owner)) {}

  /// Wraps the shared @p field.
  template <class Field>
  requires flowmatch::VelocityField<Field, Scalar>
  explicit AnyField(std::shared_ptr<const Field> field, std::shared_ptr<const void> owner = {})
      : field_(std::make_shared<const Model<Field>>(std::move(field))), owner_(std::move(owner)) {}

  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    field_->velocity(t, x, out);
  }
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const {
    field_->divergence(t, x, out);
  }
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const {
    field_->jvp(t, x, tangent, out);
  }
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const {
    field_->vjp(t, x, cotangent, out);
  }
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    field_->divergence_gradient(t, x, out);
  }

 private:
  struct Interface {
    virtual ~Interface() = default;
    virtual void velocity(Scalar, const ConstMatrixRef<Scalar>&, MatrixRef<Scalar>) const = 0;
    virtual void divergence(Scalar, const ConstMatrixRef<Scalar>&, VectorRef<Scalar>) const = 0;
    virtual void jvp(Scalar, const ConstMatrixRef<Scalar>&, const ConstMatrixRef<Scalar>&,
                     MatrixRef<Scalar>) const = 0;
    virtual void vjp(Scalar, const ConstMatrixRef<Scalar>&, const ConstMatrixRef<Scalar>&,
                     MatrixRef<Scalar>) const = 0;
    virtual void divergence_gradient(Scalar, const ConstMatrixRef<Scalar>&,
                                     MatrixRef<Scalar>) const = 0;
  };

  [[noreturn]] static void unavailable(const char* what) {
    throw std::invalid_argument(std::string("this combination of model and options offers no ") +
                                what);
  }

  template <class Field>
  struct Model final : Interface {
    explicit Model(std::shared_ptr<const Field> wrapped) : field(std::move(wrapped)) {}

    void velocity(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const override {
      flowmatch::evaluate_velocity<Scalar>(*field, t, x, out);
    }
    void divergence(Scalar t, const ConstMatrixRef<Scalar>& x,
                    VectorRef<Scalar> out) const override {
      if constexpr (flowmatch::HasDivergence<Field, Scalar>) {
        field->divergence(t, x, out);
      } else {
        unavailable("exact divergence");
      }
    }
    void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
             MatrixRef<Scalar> out) const override {
      if constexpr (flowmatch::HasJvp<Field, Scalar>) {
        field->jvp(t, x, tangent, out);
      } else {
        unavailable("Jacobian-vector product (needed by --divergence hutchinson)");
      }
    }
    void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
             MatrixRef<Scalar> out) const override {
      if constexpr (flowmatch::HasVjp<Field, Scalar>) {
        field->vjp(t, x, cotangent, out);
      } else {
        unavailable("vector-Jacobian product (needed by --mode exact)");
      }
    }
    void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                             MatrixRef<Scalar> out) const override {
      if constexpr (flowmatch::HasDivergenceGradient<Field, Scalar>) {
        field->divergence_gradient(t, x, out);
      } else {
        unavailable("gradient of the divergence (needed by --mode exact)");
      }
    }

    std::shared_ptr<const Field> field;
  };

  std::shared_ptr<const Interface> field_;
  std::shared_ptr<const void> owner_;
};

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
