/// @file any_field.hpp
/// @brief AnyField: a velocity field whose type is chosen at run time, with the capabilities
/// of the field it holds visible before use.
///
/// The library composes fields as templates (a network, its bound conditions, guidance, a
/// schedule transform, parallel evaluation). A program that picks the composition at run time
/// (from a configuration file, a command line) erases the finished field's type behind
/// AnyField<Scalar>: one instantiation of the solver, likelihood and score code then serves
/// every combination.
///
/// AnyField has every member of the field protocol (field/capabilities.hpp). Which of them
/// work is fixed when it is built: a capability is available when the held field offers the
/// member or the library derives it (autodiff/field_derivatives.hpp: forward mode for a field
/// generic over its scalar type; the fused members whenever their parts are available). Query it
/// with `offers(capability::Jvp{})`, or state what a computation needs with
/// `require(capability::Jvp{}, "my_estimator")`; the library's log-likelihood and exact-score
/// functions do so on entry, so a missing capability is reported before any integration starts.
/// Calling an unavailable member throws std::invalid_argument as well.
///
/// Ownership: the held field is kept by value (or std::cref(field), seen through) in shared,
/// immutable storage, so copies of an AnyField share it; `keep_alive` may hold whatever the
/// field refers to (a network, a thread pool). Calls are as thread-safe as the held field's.
#pragma once

#include <array>
#include <concepts>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/field/capabilities.hpp"

namespace flowmatch {

template <class Scalar>
class AnyField;

namespace detail {
template <class T>
inline constexpr bool is_any_field = false;
template <class Scalar>
inline constexpr bool is_any_field<AnyField<Scalar>> = true;
}  // namespace detail

/// A velocity field over Scalar of a type chosen at run time (see the file comment).
template <class Scalar>
class AnyField {
 public:
  using scalar_type = Scalar;

  /// Holds @p field (by value, or std::cref(field)); @p keep_alive keeps alive whatever the
  /// field refers to.
  template <class Field>
  requires(VelocityField<std::unwrap_reference_t<Field>, Scalar> &&
           !detail::is_any_field<std::remove_cvref_t<
               Field>>) explicit AnyField(Field field, std::shared_ptr<const void> keep_alive = {})
      : model_(std::make_shared<const Model<Field>>(std::move(field))),
        keep_alive_(std::move(keep_alive)) {}

  /// Whether the capability @p Tag is available (see the file comment).
  template <CapabilityTag Tag>
  [[nodiscard]] bool offers(Tag) const {
    return model_->available[capability::index<Tag>];
  }

  /// Throws std::invalid_argument unless the capability @p Tag is available, in the grammar
  /// of detail/validate.hpp with @p function as the function that needs it:
  /// "<function>: field offers no <capability>, expected ...". Allocates nothing when it is.
  template <CapabilityTag Tag>
  void require(Tag tag, std::string_view function) const {
    if (!offers(tag)) {
      detail::reject_argument(std::string(function) + ": field",
                              std::string("offers no ") + Tag::name,
                              "a field with that member, or one the library can derive "
                              "(autodiff/field_derivatives.hpp)");
    }
  }

  /// Whether the held field's derivatives come from reverse mode (capabilities.hpp: its
  /// prefers_reverse_mode, or its own reverse_mode_preferred()) and its vjp is available: then an
  /// estimator that may use either Jacobian product uses the vjp.
  [[nodiscard]] bool reverse_mode_preferred() const { return model_->reverse_mode; }

  /// @name The members of the field protocol
  /// Each throws std::invalid_argument if its capability is not available.
  ///@{
  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    model_->velocity(t, x, out);
  }
  void divergence(Scalar t, const ConstMatrixRef<Scalar>& x, VectorRef<Scalar> out) const {
    require(capability::Divergence{}, "AnyField::divergence");
    model_->divergence(t, x, out);
  }
  void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
           MatrixRef<Scalar> out) const {
    require(capability::Jvp{}, "AnyField::jvp");
    model_->jvp(t, x, tangent, out);
  }
  void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
           MatrixRef<Scalar> out) const {
    require(capability::Vjp{}, "AnyField::vjp");
    model_->vjp(t, x, cotangent, out);
  }
  void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    require(capability::DivergenceGradient{}, "AnyField::divergence_gradient");
    model_->divergence_gradient(t, x, out);
  }
  void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> velocity,
                           VectorRef<Scalar> divergence) const {
    require(capability::VelocityDivergence{}, "AnyField::velocity_divergence");
    model_->velocity_divergence(t, x, velocity, divergence);
  }
  void velocity_vjp_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                                        const ConstMatrixRef<Scalar>& cotangent,
                                        MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                        MatrixRef<Scalar> divergence_gradient) const {
    require(capability::VelocityVjpDivergenceGradient{},
            "AnyField::velocity_vjp_divergence_gradient");
    model_->velocity_vjp_divergence_gradient(t, x, cotangent, velocity, vjp, divergence_gradient);
  }
  ///@}

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
    virtual void velocity_divergence(Scalar, const ConstMatrixRef<Scalar>&, MatrixRef<Scalar>,
                                     VectorRef<Scalar>) const = 0;
    virtual void velocity_vjp_divergence_gradient(Scalar, const ConstMatrixRef<Scalar>&,
                                                  const ConstMatrixRef<Scalar>&, MatrixRef<Scalar>,
                                                  MatrixRef<Scalar>, MatrixRef<Scalar>) const = 0;

    std::array<bool, capability::count> available{};
    bool reverse_mode = false;
  };

  template <class Field>
  struct Model final : Interface {
    using Held = std::unwrap_reference_t<Field>;

    explicit Model(Field wrapped) : field(std::move(wrapped)) {
      [this]<class... Tags>(std::tuple<Tags...>*) {
        ((this->available[capability::index<Tags>] = Derivable<Tags, Held, Scalar>), ...);
      }(static_cast<capability::All*>(nullptr));
      this->reverse_mode = flowmatch::reverse_mode_preferred(field) &&
                           this->available[capability::index<capability::Vjp>];
    }

    // Each call is reached only when its capability is available (AnyField checks first).
    template <class Tag, class... Args>
    void call(Tag tag, Scalar t, const ConstMatrixRef<Scalar>& x, Args&&... args) const {
      if constexpr (Derivable<Tag, Held, Scalar>) {
        const Held& held = field;
        detail::derive(tag, held, t, x, std::forward<Args>(args)...);
      }
    }

    void velocity(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const override {
      call(capability::Velocity{}, t, x, out);
    }
    void divergence(Scalar t, const ConstMatrixRef<Scalar>& x,
                    VectorRef<Scalar> out) const override {
      call(capability::Divergence{}, t, x, out);
    }
    void jvp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& tangent,
             MatrixRef<Scalar> out) const override {
      call(capability::Jvp{}, t, x, tangent, out);
    }
    void vjp(Scalar t, const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& cotangent,
             MatrixRef<Scalar> out) const override {
      call(capability::Vjp{}, t, x, cotangent, out);
    }
    void divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                             MatrixRef<Scalar> out) const override {
      call(capability::DivergenceGradient{}, t, x, out);
    }
    void velocity_divergence(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> velocity,
                             VectorRef<Scalar> divergence) const override {
      call(capability::VelocityDivergence{}, t, x, velocity, divergence);
    }
    void velocity_vjp_divergence_gradient(Scalar t, const ConstMatrixRef<Scalar>& x,
                                          const ConstMatrixRef<Scalar>& cotangent,
                                          MatrixRef<Scalar> velocity, MatrixRef<Scalar> vjp,
                                          MatrixRef<Scalar> divergence_gradient) const override {
      call(capability::VelocityVjpDivergenceGradient{}, t, x, cotangent, velocity, vjp,
           divergence_gradient);
    }

    Field field;
  };

  std::shared_ptr<const Interface> model_;
  std::shared_ptr<const void> keep_alive_;
};

}  // namespace flowmatch
