/// @file plot.hpp
/// @brief A small PNG plotting helper for the examples: an RGB canvas with anti-aliased
/// lines and discs, bitmap text, 2-D panels with ticked axes, scatter plots, segments, heat
/// maps, colour bars and legends. Not part of the library.
///
/// PNG files are written with stb_image_write and text is drawn with stb_easy_font (both from
/// Debian's libstb-dev; the build puts their folder on the include path). Each example is one
/// translation unit, so the stb implementation is compiled here with internal linkage
/// (STB_IMAGE_WRITE_STATIC).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_easy_font.h>
#include <stb_image_write.h>

namespace plot {

/// An RGB colour, 8 bits per channel.
struct Colour {
  std::uint8_t red = 0, green = 0, blue = 0;
};

inline constexpr Colour black{0, 0, 0};
inline constexpr Colour white{255, 255, 255};
inline constexpr Colour grey{128, 128, 128};
inline constexpr Colour light_grey{225, 225, 225};
inline constexpr Colour blue{31, 119, 180};
inline constexpr Colour orange{255, 127, 14};
inline constexpr Colour red{214, 39, 40};

/// A colour map: colours at evenly spaced stops on [0, 1], linearly interpolated between them.
class ColourMap {
 public:
  explicit ColourMap(std::vector<Colour> stops) : stops_(std::move(stops)) {}

  /// The colour at @p value, clamped into [0, 1].
  [[nodiscard]] Colour operator()(double value) const {
    const double position = std::clamp(value, 0.0, 1.0) * double(stops_.size() - 1);
    const std::size_t below = std::min(std::size_t(position), stops_.size() - 2);
    const double fraction = position - double(below);
    const auto mix = [fraction](std::uint8_t from, std::uint8_t to) {
      return std::uint8_t(std::lround(from + fraction * (to - from)));
    };
    const Colour& a = stops_[below];
    const Colour& b = stops_[below + 1];
    return {mix(a.red, b.red), mix(a.green, b.green), mix(a.blue, b.blue)};
  }

 private:
  std::vector<Colour> stops_;
};

/// Dark purple through blue and green to yellow (perceptually ordered, like viridis).
inline ColourMap viridis() {
  return ColourMap({{68, 1, 84},
                    {72, 40, 120},
                    {62, 73, 137},
                    {49, 104, 142},
                    {38, 130, 142},
                    {31, 158, 137},
                    {53, 183, 121},
                    {110, 206, 88},
                    {253, 231, 37}});
}

/// Deep blue through magenta to orange: stays visible on a white background at both ends.
inline ColourMap blue_to_orange() {
  return ColourMap({{13, 8, 135}, {106, 0, 168}, {177, 42, 144}, {225, 100, 98}, {252, 166, 54}});
}

/// A rectangle of pixels: columns [left, left + width), rows [top, top + height).
struct Box {
  int left = 0, top = 0, width = 0, height = 0;
  [[nodiscard]] bool contains(int x, int y) const {
    return x >= left && x < left + width && y >= top && y < top + height;
  }
};

/// An RGB image with a white background; drawing outside the image (or a clip box) is ignored.
class Canvas {
 public:
  Canvas(int width, int height)
      : width_(width), height_(height), pixels_(std::size_t(3) * width * height, 255) {}

  /// Mixes @p colour into pixel (x, y) with opacity @p alpha: new = (1 − α)·old + α·colour.
  void blend(int x, int y, Colour colour, double alpha) {
    if (!clip_.contains(x, y) || !(alpha > 0)) return;
    alpha = std::min(alpha, 1.0);
    std::uint8_t* pixel = &pixels_[3 * (std::size_t(y) * width_ + x)];
    for (const std::uint8_t channel : {colour.red, colour.green, colour.blue}) {
      *pixel = std::uint8_t(std::lround((1 - alpha) * *pixel + alpha * channel));
      ++pixel;
    }
  }

  /// Paints @p box in @p colour.
  void fill(const Box& box, Colour colour) {
    for (int y = box.top; y < box.top + box.height; ++y) {
      for (int x = box.left; x < box.left + box.width; ++x) blend(x, y, colour, 1.0);
    }
  }

  /// A one-pixel outline just inside @p box.
  void outline(const Box& box, Colour colour) {
    const int right = box.left + box.width - 1, bottom = box.top + box.height - 1;
    fill({box.left, box.top, box.width, 1}, colour);
    fill({box.left, bottom, box.width, 1}, colour);
    fill({box.left, box.top, 1, box.height}, colour);
    fill({right, box.top, 1, box.height}, colour);
  }

  /// An anti-aliased segment of width 2·half_width (pixel (x, y) has its centre at (x, y)):
  /// coverage = clamp(half_width + ½ − distance from the pixel centre to the segment).
  void line(double x0, double y0, double x1, double y1, Colour colour, double half_width = 0.75,
            double alpha = 1.0) {
    const double dx = x1 - x0, dy = y1 - y0, length_squared = dx * dx + dy * dy;
    const double reach = half_width + 1;
    const auto [top, bottom] = rows(std::min(y0, y1), std::max(y0, y1), reach);
    const auto [left, right] = columns(std::min(x0, x1), std::max(x0, x1), reach);
    for (int y = top; y <= bottom; ++y) {
      for (int x = left; x <= right; ++x) {
        // distance from the pixel centre to the nearest point of the segment
        const double along =
            length_squared > 0
                ? std::clamp(((x - x0) * dx + (y - y0) * dy) / length_squared, 0.0, 1.0)
                : 0.0;
        const double distance = std::hypot(x - x0 - along * dx, y - y0 - along * dy);
        blend(x, y, colour, alpha * std::clamp(half_width + 0.5 - distance, 0.0, 1.0));
      }
    }
  }

  /// An anti-aliased filled disc, or with @p ring_width > 0 a ring of that width.
  void disc(double cx, double cy, double radius, Colour colour, double alpha = 1.0,
            double ring_width = 0) {
    const auto [top, bottom] = rows(cy, cy, radius + 1);
    const auto [left, right] = columns(cx, cx, radius + 1);
    for (int y = top; y <= bottom; ++y) {
      for (int x = left; x <= right; ++x) {
        const double distance = std::hypot(x - cx, y - cy);
        double coverage = std::clamp(radius + 0.5 - distance, 0.0, 1.0);
        if (ring_width > 0) {
          coverage =
              std::min(coverage, std::clamp(distance - (radius - ring_width) + 0.5, 0.0, 1.0));
        }
        blend(x, y, colour, alpha * coverage);
      }
    }
  }

  /// Text (printable ASCII, other bytes shown as '?') with its top-left corner at (x, y), each
  /// font pixel drawn as a scale×scale block.
  void text(int x, int y, const std::string& message, Colour colour, int scale = 2) {
    std::string printable = printable_ascii(message);
    std::vector<char> vertices(printable.size() * 1024 + 64);  // at most 16 quads of 64 bytes
    const int quads =
        stb_easy_font_print(0, 0, printable.data(), nullptr, vertices.data(), int(vertices.size()));
    for (int quad = 0; quad < quads; ++quad) {
      // 4 vertices of 16 bytes (x, y, z as floats, then a colour): corners 0 and 2 are opposite.
      const auto corner = [&](int vertex, int axis) {
        float value;
        std::copy_n(&vertices[std::size_t(64 * quad + 16 * vertex + 4 * axis)], sizeof value,
                    reinterpret_cast<char*>(&value));
        return int(std::lround(value)) * scale;
      };
      fill({x + corner(0, 0), y + corner(0, 1), corner(2, 0) - corner(0, 0),
            corner(2, 1) - corner(0, 1)},
           colour);
    }
  }

  /// The width of text() output in pixels.
  [[nodiscard]] static int text_width(const std::string& message, int scale = 2) {
    std::string printable = printable_ascii(message);
    return stb_easy_font_width(printable.data()) * scale;
  }
  /// The height of a line of text (capital letters) in pixels.
  [[nodiscard]] static int text_height(int scale = 2) { return 7 * scale; }

  /// Text centred horizontally on x.
  void centred_text(int x, int y, const std::string& message, Colour colour, int scale = 2) {
    text(x - text_width(message, scale) / 2, y, message, colour, scale);
  }

  /// Restricts drawing to @p box until reset_clip().
  void clip_to(const Box& box) { clip_ = box; }
  void reset_clip() { clip_ = {0, 0, width_, height_}; }

  /// Writes the image as a PNG file. @throws std::runtime_error if writing fails.
  void save_png(const std::string& path) const {
    if (stbi_write_png(path.c_str(), width_, height_, 3, pixels_.data(), 3 * width_) == 0) {
      throw std::runtime_error("cannot write the PNG file " + path);
    }
  }

 private:
  // The font covers the printable ASCII characters 32 to 126 only.
  static std::string printable_ascii(std::string text) {
    for (char& character : text) {
      if (character < 32 || character > 126) character = '?';
    }
    return text;
  }

  // The pixel rows (columns) from floor(low − reach) to ceil(high + reach), cut to the clip box
  // so that a far-away shape costs nothing.
  [[nodiscard]] std::pair<int, int> rows(double low, double high, double reach) const {
    return cut(low, high, reach, clip_.top, clip_.height);
  }
  [[nodiscard]] std::pair<int, int> columns(double low, double high, double reach) const {
    return cut(low, high, reach, clip_.left, clip_.width);
  }
  static std::pair<int, int> cut(double low, double high, double reach, int start, int extent) {
    return {int(std::max(std::floor(low - reach), double(start))),
            int(std::min(std::ceil(high + reach), double(start + extent - 1)))};
  }

  int width_, height_;
  std::vector<std::uint8_t> pixels_;
  Box clip_{0, 0, width_, height_};
};

/// A closed interval of data values.
struct Range {
  double low = 0, high = 1;
  [[nodiscard]] double fraction(double value) const { return (value - low) / (high - low); }
};

/// About @p count round tick values inside @p range: multiples of 1, 2 or 5 × 10^k (none for an
/// empty range).
inline std::vector<double> ticks(Range range, int count = 5) {
  if (!(range.high > range.low)) return {};
  const double raw_step = (range.high - range.low) / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  double step = magnitude;
  for (const double factor : {2.0, 5.0, 10.0}) {
    if (step < raw_step) step = factor * magnitude;
  }
  std::vector<double> values;
  for (double value = std::ceil(range.low / step - 1e-9) * step; value <= range.high + 1e-9 * step;
       value += step) {
    values.push_back(std::abs(value) < 1e-12 * step ? 0.0 : value);
  }
  return values;
}

/// A tick value as short text ("-4", "0.5", "1e+03").
inline std::string tick_label(double value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

/// A rectangle of the canvas showing the data region x_range × y_range (y upwards).
class Panel {
 public:
  Panel(Canvas& canvas, Box box, Range x_range, Range y_range)
      : canvas_(canvas), box_(box), x_(x_range), y_(y_range) {}

  /// Pixel coordinates of the data point (x, y).
  [[nodiscard]] double pixel_x(double x) const { return box_.left + x_.fraction(x) * box_.width; }
  [[nodiscard]] double pixel_y(double y) const {
    return box_.top + (1 - y_.fraction(y)) * box_.height;
  }

  /// Frame, ticks with their values, light grid lines, a title above and axis names.
  void axes(const std::string& title, const std::string& x_name, const std::string& y_name) {
    canvas_.clip_to(box_);
    for (const double x : ticks(x_)) {
      canvas_.line(pixel_x(x), box_.top, pixel_x(x), box_.top + box_.height, light_grey, 0.5);
    }
    for (const double y : ticks(y_)) {
      canvas_.line(box_.left, pixel_y(y), box_.left + box_.width, pixel_y(y), light_grey, 0.5);
    }
    canvas_.reset_clip();
    draw_frame_and_labels(title, x_name, y_name);
  }

  /// Frame, ticks and labels only (to draw over a heat map).
  void draw_frame_and_labels(const std::string& title, const std::string& x_name,
                             const std::string& y_name) {
    const int bottom = box_.top + box_.height;
    canvas_.outline({box_.left - 1, box_.top - 1, box_.width + 2, box_.height + 2}, black);
    const int height = Canvas::text_height();
    for (const double x : ticks(x_)) {
      const int px = int(std::lround(pixel_x(x)));
      canvas_.fill({px, bottom, 1, 6}, black);
      canvas_.centred_text(px + 1, bottom + 10, tick_label(x), black);
    }
    for (const double y : ticks(y_)) {
      const int py = int(std::lround(pixel_y(y)));
      canvas_.fill({box_.left - 7, py, 6, 1}, black);
      const std::string label = tick_label(y);
      canvas_.text(box_.left - 12 - Canvas::text_width(label), py - height / 2, label, black);
    }
    canvas_.centred_text(box_.left + box_.width / 2, bottom + 18 + height, x_name, black);
    canvas_.text(box_.left - 12 - Canvas::text_width(y_name), box_.top - height - 6, y_name, black);
    const int title_scale = Canvas::text_width(title, 3) <= box_.width + 60 ? 3 : 2;
    canvas_.centred_text(box_.left + box_.width / 2, box_.top - height - 14 - 7 * title_scale,
                         title, black, title_scale);
  }

  /// One disc per column of the 2×N batch @p points.
  void scatter(const flowmatch::Matrix<double>& points, Colour colour, double radius = 1.6,
               double alpha = 0.5) {
    canvas_.clip_to(box_);
    for (flowmatch::Index k = 0; k < points.cols(); ++k) {
      canvas_.disc(pixel_x(points(0, k)), pixel_y(points(1, k)), radius, colour, alpha);
    }
    canvas_.reset_clip();
  }

  /// A marker at one data point: a disc, or a ring with @p ring_width > 0.
  void marker(double x, double y, Colour colour, double radius, double ring_width = 0) {
    canvas_.clip_to(box_);
    canvas_.disc(pixel_x(x), pixel_y(y), radius, colour, 1.0, ring_width);
    canvas_.reset_clip();
  }

  /// A segment between two data points.
  void segment(double x0, double y0, double x1, double y1, Colour colour, double half_width = 0.75,
               double alpha = 1.0) {
    canvas_.clip_to(box_);
    canvas_.line(pixel_x(x0), pixel_y(y0), pixel_x(x1), pixel_y(y1), colour, half_width, alpha);
    canvas_.reset_clip();
  }

  /// A heat map of @p values (rows × columns) sampled on the grid x_j = x_range.low + j·Δx,
  /// y_i = y_range.low + i·Δy spanning the panel, bilinearly interpolated, coloured by
  /// colour_map((value − range.low)/(range.high − range.low)).
  void heat_map(const flowmatch::Matrix<double>& values, Range range, const ColourMap& colour_map) {
    const double columns = double(values.cols() - 1), rows = double(values.rows() - 1);
    for (int py = box_.top; py < box_.top + box_.height; ++py) {
      for (int px = box_.left; px < box_.left + box_.width; ++px) {
        const double u = (px + 0.5 - box_.left) / box_.width * columns;
        const double v = (1 - (py + 0.5 - box_.top) / box_.height) * rows;
        const auto j = flowmatch::Index(std::min(u, columns - 1));
        const auto i = flowmatch::Index(std::min(v, rows - 1));
        const double fu = u - double(j), fv = v - double(i);
        const double value = (1 - fv) * ((1 - fu) * values(i, j) + fu * values(i, j + 1)) +
                             fv * ((1 - fu) * values(i + 1, j) + fu * values(i + 1, j + 1));
        canvas_.blend(px, py, colour_map(range.fraction(value)), 1.0);
      }
    }
  }

 private:
  Canvas& canvas_;
  Box box_;
  Range x_, y_;
};

/// A vertical colour bar in @p box for values in @p range, with ticks and a label above.
inline void colour_bar(Canvas& canvas, Box box, Range range, const ColourMap& colour_map,
                       const std::string& label) {
  for (int py = box.top; py < box.top + box.height; ++py) {
    const double fraction = 1 - (py + 0.5 - box.top) / box.height;
    canvas.fill({box.left, py, box.width, 1}, colour_map(fraction));
  }
  canvas.outline({box.left - 1, box.top - 1, box.width + 2, box.height + 2}, black);
  const int right = box.left + box.width;
  for (const double value : ticks(range)) {
    const int py = int(std::lround(box.top + (1 - range.fraction(value)) * box.height));
    canvas.fill({right, py, 6, 1}, black);
    canvas.text(right + 10, py - Canvas::text_height() / 2, tick_label(value), black);
  }
  canvas.text(box.left, box.top - Canvas::text_height() - 10, label, black);
}

/// One line of a legend.
struct LegendEntry {
  enum class Symbol { disc, ring, line };
  std::string label;
  Colour colour;
  Symbol symbol = Symbol::disc;
};

/// A legend with a white, outlined background whose top-left corner is (x, y).
inline void legend(Canvas& canvas, int x, int y, const std::vector<LegendEntry>& entries) {
  const int line_height = Canvas::text_height() + 12;
  int width = 0;
  for (const LegendEntry& entry : entries) width = std::max(width, Canvas::text_width(entry.label));
  const Box box{x, y, width + 52, line_height * int(entries.size()) + 8};
  canvas.fill(box, white);
  canvas.outline(box, grey);
  for (std::size_t k = 0; k < entries.size(); ++k) {
    const LegendEntry& entry = entries[k];
    const int centre_y = y + 4 + line_height * int(k) + line_height / 2;
    const int symbol_x = x + 20;
    switch (entry.symbol) {
      case LegendEntry::Symbol::disc:
        canvas.disc(symbol_x, centre_y, 5, entry.colour);
        break;
      case LegendEntry::Symbol::ring:
        canvas.disc(symbol_x, centre_y, 5, entry.colour, 1.0, 2);
        break;
      case LegendEntry::Symbol::line:
        canvas.line(symbol_x - 12, centre_y, symbol_x + 12, centre_y, entry.colour, 1.5);
        break;
    }
    canvas.text(x + 42, centre_y - Canvas::text_height() / 2, entry.label, black);
  }
}

}  // namespace plot
