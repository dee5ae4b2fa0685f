/// @file figures.hpp
/// @brief The pictures the examples draw of a 2-D flow: samples next to the data, flow
/// trajectories from noise to data, and a log-likelihood heat map (plot.hpp draws them).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/solver/options.hpp"
#include "plot.hpp"

namespace figures {

using flowmatch::Index;
using flowmatch::Matrix;

/// Two panels with the same axes: @p data on the left, @p samples on the right (both 2×N).
inline void samples_next_to_data(const std::string& path, const Matrix<double>& data,
                                 const Matrix<double>& samples, plot::Range range) {
  plot::Canvas canvas(1080, 620);
  const auto panel_at = [&](int left) {
    return plot::Panel(canvas, {left, 90, 440, 440}, range, range);
  };
  plot::Panel left = panel_at(90), right = panel_at(610);
  left.axes("data (" + std::to_string(data.cols()) + " held-out points)", "x1", "x2");
  left.scatter(data, plot::blue);
  right.axes("model samples (" + std::to_string(samples.cols()) + ")", "x1", "x2");
  right.scatter(samples, plot::orange);
  canvas.save_png(path);
}

/// Flow trajectories: @p trajectory[k] is the 2×N state at time times[k] (times from 0 to 1).
/// Each path is drawn coloured by t, with a ring at its start (noise) and a dot at its end;
/// @p data (2×M) is shown faintly behind.
inline void flow_trajectories(const std::string& path,
                              const std::vector<Matrix<double>>& trajectory,
                              const std::vector<double>& times, const Matrix<double>& data,
                              plot::Range range) {
  plot::Canvas canvas(920, 620);
  plot::Panel panel(canvas, {90, 90, 480, 480}, range, range);
  panel.axes("paths from noise to data", "x1", "x2");
  panel.scatter(data, plot::blue, 1.4, 0.25);
  const plot::ColourMap time_colour = plot::blue_to_orange();
  const Index paths = trajectory.front().cols();
  for (Index n = 0; n < paths; ++n) {
    for (std::size_t k = 0; k + 1 < trajectory.size(); ++k) {
      const double middle = (times[k] + times[k + 1]) / 2;
      panel.segment(trajectory[k](0, n), trajectory[k](1, n), trajectory[k + 1](0, n),
                    trajectory[k + 1](1, n), time_colour(middle), 1.0, 0.9);
    }
  }
  for (Index n = 0; n < paths; ++n) {
    panel.marker(trajectory.front()(0, n), trajectory.front()(1, n), plot::black, 4.5, 1.5);
    panel.marker(trajectory.back()(0, n), trajectory.back()(1, n), plot::black, 3.5);
  }
  plot::colour_bar(canvas, {640, 120, 22, 220}, {0, 1}, time_colour, "time t");
  plot::legend(canvas, 620, 400,
               {{"start: noise (t = 0)", plot::black, plot::LegendEntry::Symbol::ring},
                {"end: sample (t = 1)", plot::black, plot::LegendEntry::Symbol::disc},
                {"path, coloured by t", time_colour(0.5), plot::LegendEntry::Symbol::line},
                {"data", plot::blue, plot::LegendEntry::Symbol::disc}});
  canvas.save_png(path);
}

/// log p_1(x) of the flow of @p field on a resolution × resolution grid over range × range:
/// entry (i, j) is at x1 = range.low + j·Δ, x2 = range.low + i·Δ, Δ = width/(resolution − 1).
template <class Field>
Matrix<double> log_likelihood_grid(const Field& field, plot::Range range, Index resolution,
                                   const flowmatch::SolverOptions<double>& options) {
  const double spacing = (range.high - range.low) / double(resolution - 1);
  Matrix<double> points(2, resolution * resolution);
  for (Index i = 0; i < resolution; ++i) {
    for (Index j = 0; j < resolution; ++j) {
      points.col(i * resolution + j) << range.low + double(j) * spacing,
          range.low + double(i) * spacing;
    }
  }
  const auto result = flowmatch::log_likelihood(field, points, options);
  return result.log_prob.reshaped(resolution, resolution).transpose();
}

/// Points drawn over the heat map, with their legend line.
struct Overlay {
  Matrix<double> points;  ///< 2×N.
  plot::LegendEntry entry;
};

/// A heat map of @p log_density (from log_likelihood_grid over range × range), values below
/// @p floor shown in the lowest colour (colours span [min(floor, max − 1), max]), with a colour bar
/// and optional point overlays.
inline void log_likelihood_map(const std::string& path, const Matrix<double>& log_density,
                               plot::Range range, double floor, const std::string& title,
                               const std::vector<Overlay>& overlays = {}) {
  plot::Canvas canvas(800, 620);
  plot::Panel panel(canvas, {90, 90, 480, 480}, range, range);
  const double highest = log_density.maxCoeff();
  const plot::Range colours{std::min(floor, highest - 1), highest};
  const plot::ColourMap colour_map = plot::viridis();
  panel.heat_map(log_density, colours, colour_map);
  for (const Overlay& overlay : overlays) {
    const bool ring = overlay.entry.symbol == plot::LegendEntry::Symbol::ring;
    for (Index n = 0; n < overlay.points.cols(); ++n) {
      panel.marker(overlay.points(0, n), overlay.points(1, n), overlay.entry.colour, 4,
                   ring ? 1.5 : 0);
    }
  }
  panel.draw_frame_and_labels(title, "x1", "x2");
  plot::colour_bar(canvas, {640, 120, 22, 420}, colours, colour_map, "log p(x)");
  if (!overlays.empty()) {
    std::vector<plot::LegendEntry> entries;
    for (const Overlay& overlay : overlays) entries.push_back(overlay.entry);
    plot::legend(canvas, 100, 100, entries);
  }
  canvas.save_png(path);
}

}  // namespace figures
