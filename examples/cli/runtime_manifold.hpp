// A manifold chosen at run time, from the command line: --manifold euclidean, sphere, torus or
// product:F1,F2,... with factors sphere[:n], torus[:n] or euclidean[:n].
//
// The library's Product is a template over its factors; the tool picks them at run time, so
// RuntimeManifold keeps a list of factors, each one of the library's manifolds, and applies
// every member of the Manifold concept factor by factor on its block of rows (the layout of
// flowmatch::Product).
//
// Angles at the command line: a torus angle is read and written in [−π, π), while the library
// keeps it in [0, 2π). to_library() and to_command_line() convert at the I/O boundary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/manifold/euclidean.hpp"
#include "flowmatch/manifold/flat_torus.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/manifold/sphere.hpp"

namespace flowmatch_cli {

/// The model file's metadata key that records the manifold the model was trained on.
inline constexpr const char* kManifoldMetadataKey = "manifold";

/// The manifold of --manifold (a Manifold): one factor, or the product of several.
template <class Scalar>
class RuntimeManifold {
 public:
  using scalar_type = Scalar;

  /// The manifold named @p name for points of @p dimension coordinates. A single manifold
  /// (euclidean, sphere, torus) takes all the coordinates; the factors of product:F1,F2,...
  /// take n coordinates each with F:n, by default 3 for a sphere (S² in R³) and 1 for a torus
  /// (a circle) or a line, and must add up to @p dimension.
  /// @throws std::invalid_argument for an unknown name or dimensions that do not fit.
  RuntimeManifold(const std::string& name, flowmatch::Index dimension) {
    if (name.starts_with("product:")) {
      std::string rest = name.substr(8);
      while (!rest.empty()) {
        const std::size_t comma = rest.find(',');
        add_factor(rest.substr(0, comma), std::nullopt);
        rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
      }
      if (factors_.empty()) throw std::invalid_argument("--manifold " + name + ": no factors");
    } else {
      add_factor(name, dimension);
    }
    if (this->dimension() != dimension) {
      throw std::invalid_argument(
          "--manifold " + name + " has " + std::to_string(this->dimension()) +
          " coordinates, the model's dimension is " + std::to_string(dimension));
    }
  }

  /// The canonical name: the single factor's name, or product:F1:n1,F2:n2,...
  [[nodiscard]] std::string name() const {
    if (factors_.size() == 1) return factors_.front().name;
    std::string text = "product:";
    for (const Factor& factor : factors_) {
      if (text.back() != ':') text += ',';
      text += factor.name + ':' + std::to_string(factor.rows);
    }
    return text;
  }

  /// Whether this is R^d alone (which the tool integrates with its ordinary solvers).
  [[nodiscard]] bool is_euclidean() const {
    return factors_.size() == 1 && factors_.front().name == "euclidean";
  }

  /// How far each column of command-line points lies from the manifold: |x| − 1 on a sphere,
  /// the distance of an angle from [−π, π] on a torus, the largest over the factors.
  void command_line_deviation(const flowmatch::ConstMatrixRef<Scalar>& points,
                              flowmatch::VectorRef<Scalar> out) const {
    flowmatch::Vector<Scalar> factor_deviation(points.cols());
    out.setZero();
    for (const Factor& factor : factors_) {
      const auto rows = points.middleRows(factor.first, factor.rows);
      if (std::holds_alternative<flowmatch::FlatTorus<Scalar>>(factor.manifold)) {
        constexpr Scalar pi = std::numbers::pi_v<Scalar>;
        factor_deviation = rows.unaryExpr([](Scalar angle) {
                                 return std::max({Scalar(0), -pi - angle, angle - pi});
                               })
                               .colwise()
                               .maxCoeff()
                               .transpose();
      } else {
        std::visit([&](const auto& m) { m.deviation(rows, factor_deviation); }, factor.manifold);
      }
      out = out.cwiseMax(factor_deviation);
    }
  }

  /// Command-line points in the library's coordinates: torus angles wrapped into [0, 2π),
  /// sphere points normalised when @p project is set (otherwise left as they are).
  void to_library(flowmatch::MatrixRef<Scalar> points, bool project) const {
    for (const Factor& factor : factors_) {
      auto rows = points.middleRows(factor.first, factor.rows);
      const bool torus = std::holds_alternative<flowmatch::FlatTorus<Scalar>>(factor.manifold);
      if (torus || project) {
        std::visit([&](const auto& m) { m.project_points(rows, rows); }, factor.manifold);
      }
    }
  }

  /// Command-line points in the library's coordinates (to_library), after checking that
  /// each lies within √ε of the manifold (command_line_deviation) unless @p project snaps them
  /// onto it. @throws std::invalid_argument naming @p source, the point, its distance and the
  /// tolerance.
  void points_to_library(flowmatch::Matrix<Scalar>& points, const std::string& source,
                         bool project) const {
    if (!project) {
      flowmatch::Vector<Scalar> deviation(points.cols());
      command_line_deviation(points, deviation);
      const Scalar tolerance = flowmatch::detail::manifold_tolerance<Scalar>();
      for (flowmatch::Index n = 0; n < points.cols(); ++n) {
        if (!(deviation(n) <= tolerance)) {
          std::ostringstream message;
          message << source << ": point " << n << " lies at distance " << deviation(n)
                  << " from the manifold " << name() << ", beyond the tolerance " << tolerance
                  << " (--project snaps the points onto it)";
          throw std::invalid_argument(message.str());
        }
      }
    }
    to_library(points, project);
  }

  /// Library points in the command line's coordinates: torus angles a ∈ [0, 2π) as
  /// a − 2π·⌊(a + π)/2π⌋ ∈ [−π, π).
  void to_command_line(flowmatch::MatrixRef<Scalar> points) const {
    constexpr Scalar pi = std::numbers::pi_v<Scalar>;
    for (const Factor& factor : factors_) {
      if (!std::holds_alternative<flowmatch::FlatTorus<Scalar>>(factor.manifold)) continue;
      auto rows = points.middleRows(factor.first, factor.rows);
      rows = rows.unaryExpr([](Scalar angle) {
        const Scalar shifted = angle - Scalar(2) * pi * std::floor((angle + pi) / (Scalar(2) * pi));
        // Rounding can land exactly on π; that end belongs to −π.
        return shifted >= pi ? shifted - Scalar(2) * pi : shifted;
      });
    }
  }

  // The members of the Manifold concept, factor by factor (see manifold/manifold.hpp).
  [[nodiscard]] flowmatch::Index dimension() const {
    return factors_.empty() ? 0 : factors_.back().first + factors_.back().rows;
  }
  void project_points(const flowmatch::ConstMatrixRef<Scalar>& points,
                      flowmatch::MatrixRef<Scalar> out) const {
    for_each_factor(
        [&](const auto& m, auto block) { m.project_points(block(points), block(out)); });
  }
  void project_tangents(const flowmatch::ConstMatrixRef<Scalar>& points,
                        const flowmatch::ConstMatrixRef<Scalar>& vectors,
                        flowmatch::MatrixRef<Scalar> out) const {
    for_each_factor([&](const auto& m, auto block) {
      m.project_tangents(block(points), block(vectors), block(out));
    });
  }
  void exp(const flowmatch::ConstMatrixRef<Scalar>& points,
           const flowmatch::ConstMatrixRef<Scalar>& tangents,
           flowmatch::MatrixRef<Scalar> out) const {
    for_each_factor(
        [&](const auto& m, auto block) { m.exp(block(points), block(tangents), block(out)); });
  }
  void log(const flowmatch::ConstMatrixRef<Scalar>& points,
           const flowmatch::ConstMatrixRef<Scalar>& targets,
           flowmatch::MatrixRef<Scalar> out) const {
    for_each_factor(
        [&](const auto& m, auto block) { m.log(block(points), block(targets), block(out)); });
  }
  void log_differential(const flowmatch::ConstMatrixRef<Scalar>& points,
                        const flowmatch::ConstMatrixRef<Scalar>& targets,
                        const flowmatch::ConstMatrixRef<Scalar>& vectors,
                        flowmatch::MatrixRef<Scalar> out) const {
    for_each_factor([&](const auto& m, auto block) {
      m.log_differential(block(points), block(targets), block(vectors), block(out));
    });
  }
  /// √(Σᵢ dᵢ²).
  void distance(const flowmatch::ConstMatrixRef<Scalar>& points,
                const flowmatch::ConstMatrixRef<Scalar>& targets,
                flowmatch::VectorRef<Scalar> out) const {
    flowmatch::Vector<Scalar> factor_distance(points.cols());
    out.setZero();
    for_each_factor([&](const auto& m, auto block) {
      m.distance(block(points), block(targets), factor_distance);
      out += factor_distance.cwiseAbs2();
    });
    out = out.cwiseSqrt();
  }
  void geodesic(const flowmatch::ConstMatrixRef<Scalar>& points,
                const flowmatch::ConstMatrixRef<Scalar>& tangents,
                const flowmatch::ConstVectorRef<Scalar>& parameters,
                flowmatch::MatrixRef<Scalar> positions,
                flowmatch::MatrixRef<Scalar> velocities) const {
    for_each_factor([&](const auto& m, auto block) {
      m.geodesic(block(points), block(tangents), parameters, block(positions), block(velocities));
    });
  }
  void deviation(const flowmatch::ConstMatrixRef<Scalar>& points,
                 flowmatch::VectorRef<Scalar> out) const {
    flowmatch::Vector<Scalar> factor_deviation(points.cols());
    out.setZero();
    for_each_factor([&](const auto& m, auto block) {
      m.deviation(block(points), factor_deviation);
      out = out.cwiseMax(factor_deviation);
    });
  }
  void projection_divergence(const flowmatch::ConstMatrixRef<Scalar>& points,
                             const flowmatch::ConstMatrixRef<Scalar>& vectors,
                             flowmatch::VectorRef<Scalar> out) const {
    flowmatch::Vector<Scalar> factor_term(points.cols());
    out.setZero();
    for_each_factor([&](const auto& m, auto block) {
      m.projection_divergence(block(points), block(vectors), factor_term);
      out += factor_term;
    });
  }
  void base_log_density(const flowmatch::ConstMatrixRef<Scalar>& points,
                        flowmatch::VectorRef<Scalar> out) const {
    flowmatch::Vector<Scalar> factor_density(points.cols());
    out.setZero();
    for_each_factor([&](const auto& m, auto block) {
      m.base_log_density(block(points), factor_density);
      out += factor_density;
    });
  }
  template <class Generator>
  void sample_base(Generator& generator, flowmatch::MatrixRef<Scalar> out) const {
    for_each_factor([&](const auto& m, auto block) { m.sample_base(generator, block(out)); });
  }

 private:
  using AnyFactor = std::variant<flowmatch::Euclidean<Scalar>, flowmatch::Sphere<Scalar>,
                                 flowmatch::FlatTorus<Scalar>>;
  struct Factor {
    std::string name;
    flowmatch::Index first;
    flowmatch::Index rows;
    AnyFactor manifold;
  };

  /// Appends the factor @p text (name or name:n); @p rows, if given, is its size.
  void add_factor(const std::string& text, std::optional<flowmatch::Index> rows) {
    const std::size_t colon = text.find(':');
    const std::string name = text.substr(0, colon);
    if (colon != std::string::npos) {
      const std::string count = text.substr(colon + 1);
      std::size_t parsed = 0;
      long value = 0;
      try {
        value = std::stol(count, &parsed);
      } catch (const std::exception&) {
        parsed = 0;
      }
      if (parsed == 0 || parsed != count.size() || value < 1) {
        throw std::invalid_argument("--manifold factor '" + text +
                                    "': expected name:n with a whole number n >= 1");
      }
      rows = value;
    }
    const flowmatch::Index first = dimension();
    if (name == "euclidean") {
      factors_.push_back(
          {name, first, rows.value_or(1), flowmatch::Euclidean<Scalar>(rows.value_or(1))});
    } else if (name == "sphere") {
      factors_.push_back(
          {name, first, rows.value_or(3), flowmatch::Sphere<Scalar>(rows.value_or(3))});
    } else if (name == "torus") {
      factors_.push_back(
          {name, first, rows.value_or(1), flowmatch::FlatTorus<Scalar>(rows.value_or(1))});
    } else {
      throw std::invalid_argument("unknown manifold '" + text +
                                  "', expected euclidean, sphere, torus or product:F1,F2,...");
    }
  }

  /// Calls visit(factor manifold, block) for each factor in order, where block(matrix) is the
  /// factor's rows of a D×N matrix.
  template <class Visit>
  void for_each_factor(Visit&& visit) const {
    for (const Factor& factor : factors_) {
      const auto block = [&factor](auto&& matrix) {
        return matrix.middleRows(factor.first, factor.rows);
      };
      std::visit([&](const auto& m) { visit(m, block); }, factor.manifold);
    }
  }

  std::vector<Factor> factors_;
};

static_assert(flowmatch::Manifold<RuntimeManifold<double>>);

}  // namespace flowmatch_cli
