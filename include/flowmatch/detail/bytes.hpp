/// @file bytes.hpp
/// @brief Byte-level helpers for the file formats (internal): fixed-width integers in either
/// byte order, IEEE half and bfloat16 decoding, overflow-checked size arithmetic.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

namespace flowmatch::detail {

/// Byte order of a stored number.
enum class ByteOrder { little, big };

/// Reads an unsigned integer of sizeof(UInt) bytes starting at @p bytes.
/// The caller guarantees that sizeof(UInt) bytes are readable.
template <class UInt>
UInt load_uint(const std::uint8_t* bytes, ByteOrder order) {
  static_assert(std::is_unsigned_v<UInt>);
  UInt value = 0;
  for (std::size_t i = 0; i < sizeof(UInt); ++i) {
    const std::size_t position = order == ByteOrder::little ? sizeof(UInt) - 1 - i : i;
    value = static_cast<UInt>((value << 8) | bytes[position]);
  }
  return value;
}

/// Appends the sizeof(UInt) bytes of @p value to @p out in the given byte order.
template <class UInt>
void append_uint(std::vector<std::uint8_t>& out, UInt value, ByteOrder order) {
  static_assert(std::is_unsigned_v<UInt>);
  for (std::size_t i = 0; i < sizeof(UInt); ++i) {
    const std::size_t shift = 8 * (order == ByteOrder::little ? i : sizeof(UInt) - 1 - i);
    out.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}

/// The value of an IEEE 754 binary16 number: sign s, 5-bit exponent e, 10-bit fraction f;
/// (−1)^s·2^(e−15)·(1 + f/2¹⁰) for 0 < e < 31, (−1)^s·2^(−14)·f/2¹⁰ for e = 0,
/// ±inf for e = 31 and f = 0, NaN otherwise. Every binary16 value is exact in double.
inline double half_to_double(std::uint16_t bits) {
  const bool negative = (bits & 0x8000u) != 0;
  const int exponent = (bits >> 10) & 0x1F;
  const int fraction = bits & 0x3FF;
  double magnitude = 0.0;
  if (exponent == 0x1F) {
    magnitude = fraction == 0 ? std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(fraction), -24);
  } else {
    magnitude = std::ldexp(static_cast<double>(fraction + 0x400), exponent - 25);
  }
  return negative ? -magnitude : magnitude;
}

/// The value of a bfloat16 number: the upper 16 bits of an IEEE binary32 number.
inline double bfloat16_to_double(std::uint16_t bits) {
  return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16));
}

/// a·b, or nothing if it does not fit in std::uint64_t.
inline std::optional<std::uint64_t> checked_multiply(std::uint64_t a, std::uint64_t b) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

/// a + b, or nothing if it does not fit in std::uint64_t.
inline std::optional<std::uint64_t> checked_add(std::uint64_t a, std::uint64_t b) {
  if (b > std::numeric_limits<std::uint64_t>::max() - a) return std::nullopt;
  return a + b;
}

/// The product of @p extents, or nothing if it does not fit in @p limit.
template <class Range>
std::optional<std::uint64_t> checked_product(const Range& extents, std::uint64_t limit) {
  std::uint64_t product = 1;
  for (const auto extent : extents) {
    const auto next = checked_multiply(product, static_cast<std::uint64_t>(extent));
    if (!next || *next > limit) return std::nullopt;
    product = *next;
  }
  return product;
}

/// Whether a finite double stays finite when rounded to the floating-point type Target: its
/// magnitude must lie below max + ulp(max)/2 = 2^emax − 2^(emax − digits − 1), the midpoint
/// that rounds to infinity. Checked before any conversion, which would be undefined otherwise.
template <class Target>
bool fits_in(double value) {
  static_assert(std::is_floating_point_v<Target>);
  using limits = std::numeric_limits<Target>;
  if constexpr (limits::max_exponent >= std::numeric_limits<double>::max_exponent) {
    return true;
  } else {
    const double bound = std::ldexp(1.0, limits::max_exponent) -
                         std::ldexp(1.0, limits::max_exponent - limits::digits - 1);
    return !std::isfinite(value) || std::abs(value) < bound;
  }
}

/// Index of the first entry of @p values that is finite but overflows Target once rounded,
/// or −1 if every entry converts.
template <class Target>
std::ptrdiff_t first_narrowing_overflow(const double* values, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (!fits_in<Target>(values[i])) return static_cast<std::ptrdiff_t>(i);
  }
  return -1;
}

}  // namespace flowmatch::detail
