/// @file npy.hpp
/// @brief Reading and writing NumPy .npy arrays (format versions 1.0, 2.0 and 3.0).
///
/// Supported element types: '<f4' '>f4' '<f8' '>f8' (float32/float64) and '<i4' '>i4' '<i8'
/// '>i8' (int32/int64, for labels), in C or Fortran order. The parser is strict and safe on
/// hostile input: the header must be a Python dict literal with exactly the keys 'descr',
/// 'fortran_order' and 'shape', padded with spaces and terminated by '\n'; the data must hold
/// exactly product(shape) elements. Any violation throws io::format_error naming the byte
/// offset; nothing is ever read out of bounds.
///
/// A batch of N points in R^d (a d×N column-major matrix) has the memory of a C-order [N, d]
/// array: element (i, j) of the array is row j of column i of the batch. read_npy_header and
/// load_npy_batch_rows read only the header, or the header and a range of rows, of a file.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/bytes.hpp"
#include "flowmatch/detail/file.hpp"
#include "flowmatch/detail/shape.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/io/io_error.hpp"

namespace flowmatch::io {

/// Element type of an .npy array.
enum class NpyType {
  f4,  ///< float32
  f8,  ///< float64
  i4,  ///< int32
  i8,  ///< int64
};

/// An .npy array in memory.
struct NpyArray {
  /// Extent of each dimension (empty for a 0-d array holding one element).
  std::vector<std::int64_t> shape;
  /// Element type stored in (or to be written to) the file.
  NpyType type = NpyType::f8;
  /// Byte order of the elements in the file (std::endian::little or std::endian::big).
  std::endian byte_order = std::endian::little;
  /// Element order: false for C (row-major) order, true for Fortran (column-major) order.
  bool fortran_order = false;
  /// The elements of a float array (f4, f8), in the file's element order (C order unless
  /// fortran_order), converted exactly to double. Empty for integer arrays.
  std::vector<double> values;
  /// The elements of an integer array (i4, i8), in the file's element order. Empty for float
  /// arrays.
  std::vector<std::int64_t> integers;
};

/// What the header of an .npy file says about its elements (see read_npy_header).
struct NpyHeader {
  /// Element type.
  NpyType type = NpyType::f8;
  /// Byte order of the elements (std::endian::little or std::endian::big).
  std::endian byte_order = std::endian::little;
  /// Element order: false for C (row-major) order, true for Fortran (column-major) order.
  bool fortran_order = false;
  /// Extent of each dimension (empty for a 0-d array holding one element).
  std::vector<std::int64_t> shape;
};

}  // namespace flowmatch::io

namespace flowmatch::detail {

/// Largest accepted header (the dict text); numpy writes a few hundred bytes.
inline constexpr std::uint64_t kMaxNpyHeaderBytes = std::uint64_t{1} << 20;
/// Largest accepted number of dimensions (numpy allows 64).
inline constexpr std::size_t kMaxNpyDimensions = 64;
/// Headers are padded so that the data starts at a multiple of this many bytes.
inline constexpr std::size_t kNpyAlignment = 64;
inline constexpr std::string_view kNpyMagic = "\x93NUMPY";

inline bool is_float(io::NpyType type) {
  return type == io::NpyType::f4 || type == io::NpyType::f8;
}

inline std::size_t item_size(io::NpyType type) {
  return type == io::NpyType::f4 || type == io::NpyType::i4 ? 4 : 8;
}

/// The numpy descr string, e.g. '<f8'.
inline std::string npy_descr(io::NpyType type, std::endian byte_order) {
  static constexpr const char* names[] = {"f4", "f8", "i4", "i8"};
  return std::string(byte_order == std::endian::big ? ">" : "<") + names[static_cast<int>(type)];
}

/// Parses the header dict, a Python literal such as
/// {'descr': '<f8', 'fortran_order': False, 'shape': (16, 2), }, with a small tokenizer.
/// Whitespace (spaces and tabs) may separate tokens; strings take single or double quotes
/// without escapes; integers are unsigned decimal literals.
class NpyHeaderParser {
 public:
  /// @param text the dict text without the terminating '\n'.
  /// @param file_offset the byte offset of @p text in the file, for error messages.
  NpyHeaderParser(std::string_view text, std::uint64_t file_offset, std::string_view source)
      : text_(text), file_offset_(file_offset), source_(source) {}

  io::NpyHeader parse() {
    io::NpyHeader header;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect(Kind::open_brace, "'{' opening the header dict");
    Token token = next();
    while (token.kind != Kind::close_brace) {
      if (token.kind != Kind::string) fail_at(token, "expected a quoted key or '}'");
      const std::string_view key = token.text;
      const bool duplicate = (key == "descr" && seen_descr) ||
                             (key == "fortran_order" && seen_fortran) ||
                             (key == "shape" && seen_shape);
      if (duplicate) fail_at(token, "duplicate key '" + std::string(key) + "'");
      expect(Kind::colon, "':' after a key");
      if (key == "descr") {
        parse_descr(header);
        seen_descr = true;
      } else if (key == "fortran_order") {
        header.fortran_order = parse_bool();
        seen_fortran = true;
      } else if (key == "shape") {
        header.shape = parse_shape();
        seen_shape = true;
      } else {
        fail_at(token, "unknown key '" + std::string(key) +
                           "' (expected 'descr', 'fortran_order', 'shape')");
      }
      token = next();
      if (token.kind == Kind::comma) {
        token = next();
      } else if (token.kind != Kind::close_brace) {
        fail_at(token, "expected ',' or '}' after a value");
      }
    }
    if (!seen_descr) fail_at(token, "missing key 'descr'");
    if (!seen_fortran) fail_at(token, "missing key 'fortran_order'");
    if (!seen_shape) fail_at(token, "missing key 'shape'");
    expect(Kind::end, "only spaces between the header dict and its terminating newline");
    return header;
  }

 private:
  enum class Kind {
    open_brace,
    close_brace,
    open_paren,
    close_paren,
    colon,
    comma,
    string,
    integer,
    true_literal,
    false_literal,
    end
  };
  struct Token {
    Kind kind;
    std::string_view text;  // string content, integer digits (with sign) or punctuation
    std::size_t position;   // within text_
  };

  [[noreturn]] void fail_at(std::size_t position, const std::string& what) const {
    throw io::format_error(source_, "header byte " + std::to_string(file_offset_ + position), what);
  }
  [[noreturn]] void fail_at(const Token& token, const std::string& what) const {
    fail_at(token.position,
            what + (token.kind == Kind::end ? ", found the end of the header"
                                            : ", found '" + std::string(token.text) + "'"));
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || is_digit(c);
  }

  Token next() {
    while (position_ < text_.size() && (text_[position_] == ' ' || text_[position_] == '\t')) {
      ++position_;
    }
    const std::size_t start = position_;
    if (start == text_.size()) return {Kind::end, {}, start};
    const char c = text_[start];
    constexpr std::string_view punctuation = "{}():,";
    constexpr Kind punctuation_kinds[] = {Kind::open_brace,  Kind::close_brace, Kind::open_paren,
                                          Kind::close_paren, Kind::colon,       Kind::comma};
    if (const auto index = punctuation.find(c); index != std::string_view::npos) {
      ++position_;
      return {punctuation_kinds[index], text_.substr(start, 1), start};
    }
    if (c == '\'' || c == '"') return lex_string(c);
    if (is_digit(c) || c == '-') {
      ++position_;
      while (position_ < text_.size() && is_digit(text_[position_])) ++position_;
      return {Kind::integer, text_.substr(start, position_ - start), start};
    }
    if (is_name_char(c)) {
      while (position_ < text_.size() && is_name_char(text_[position_])) ++position_;
      const std::string_view name = text_.substr(start, position_ - start);
      if (name == "True") return {Kind::true_literal, name, start};
      if (name == "False") return {Kind::false_literal, name, start};
      fail_at(start, "unexpected name '" + std::string(name) + "'");
    }
    fail_at(start,
            "unexpected character with code " + std::to_string(static_cast<unsigned char>(c)));
  }

  Token lex_string(char quote) {
    const std::size_t start = position_++;
    while (position_ < text_.size() && text_[position_] != quote) {
      const auto c = static_cast<unsigned char>(text_[position_]);
      if (c == '\\' || c < 0x20 || c == 0x7F) {
        fail_at(position_,
                "unsupported character with code " + std::to_string(c) + " in a string literal");
      }
      ++position_;
    }
    if (position_ == text_.size()) fail_at(start, "unterminated string literal");
    ++position_;
    return {Kind::string, text_.substr(start + 1, position_ - start - 2), start};
  }

  Token expect(Kind kind, const char* what) {
    const Token token = next();
    if (token.kind != kind) fail_at(token, std::string("expected ") + what);
    return token;
  }

  void parse_descr(io::NpyHeader& header) {
    const Token token = expect(Kind::string, "a quoted dtype for 'descr'");
    for (const io::NpyType type :
         {io::NpyType::f4, io::NpyType::f8, io::NpyType::i4, io::NpyType::i8}) {
      for (const std::endian order : {std::endian::little, std::endian::big}) {
        if (token.text == npy_descr(type, order)) {
          header.type = type;
          header.byte_order = order;
          return;
        }
      }
    }
    fail_at(token.position, "unsupported dtype '" + std::string(token.text) +
                                "' (expected '<f4', '>f4', '<f8', '>f8', '<i4', '>i4', "
                                "'<i8' or '>i8')");
  }

  bool parse_bool() {
    const Token token = next();
    if (token.kind == Kind::true_literal) return true;
    if (token.kind == Kind::false_literal) return false;
    fail_at(token, "expected True or False for 'fortran_order'");
  }

  std::int64_t parse_extent(const Token& token) {
    const std::string_view digits = token.text;
    if (digits.empty() || digits.front() == '-') {
      fail_at(token, "expected a non-negative integer shape entry");
    }
    if (digits.size() > 1 && digits.front() == '0') {
      fail_at(token, "expected an integer without leading zeros");
    }
    std::uint64_t value = 0;
    for (const char digit : digits) {
      value = value * 10 + static_cast<std::uint64_t>(digit - '0');
      if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail_at(token, "shape entry does not fit in a 64-bit integer");
      }
    }
    return static_cast<std::int64_t>(value);
  }

  // ( ) | ( n , ) | ( n , n [, n]... [,] ): a one-element tuple needs its trailing comma.
  std::vector<std::int64_t> parse_shape() {
    expect(Kind::open_paren, "a tuple '(' for 'shape'");
    std::vector<std::int64_t> shape;
    Token token = next();
    while (token.kind != Kind::close_paren) {
      if (token.kind != Kind::integer) fail_at(token, "expected a shape entry or ')'");
      if (shape.size() == kMaxNpyDimensions) {
        fail_at(token, "more than " + std::to_string(kMaxNpyDimensions) + " dimensions");
      }
      shape.push_back(parse_extent(token));
      token = next();
      if (token.kind == Kind::comma) {
        token = next();
      } else if (token.kind != Kind::close_paren || shape.size() == 1) {
        fail_at(token, "expected ',' after a shape entry");
      }
    }
    return shape;
  }

  std::string_view text_;
  std::uint64_t file_offset_;
  std::string_view source_;
  std::size_t position_ = 0;
};

/// Decodes @p count elements of @p type stored in @p byte_order at @p data into @p out
/// (double for float types, std::int64_t for integer types).
template <class Out>
void decode_npy_elements(const std::uint8_t* data, std::size_t count, io::NpyType type,
                         std::endian byte_order, Out* out) {
  const ByteOrder order = byte_order == std::endian::big ? ByteOrder::big : ByteOrder::little;
  for (std::size_t i = 0; i < count; ++i) {
    switch (type) {
      case io::NpyType::f4:
        out[i] =
            static_cast<Out>(std::bit_cast<float>(load_uint<std::uint32_t>(data + 4 * i, order)));
        break;
      case io::NpyType::f8:
        out[i] =
            static_cast<Out>(std::bit_cast<double>(load_uint<std::uint64_t>(data + 8 * i, order)));
        break;
      case io::NpyType::i4:
        out[i] = static_cast<Out>(
            static_cast<std::int32_t>(load_uint<std::uint32_t>(data + 4 * i, order)));
        break;
      case io::NpyType::i8:
        out[i] = static_cast<Out>(
            static_cast<std::int64_t>(load_uint<std::uint64_t>(data + 8 * i, order)));
        break;
    }
  }
}

/// Where the elements of an .npy file lie, and what its header says.
struct NpyLayout {
  io::NpyHeader header;
  std::uint64_t data_start = 0;     ///< byte offset of the first element
  std::uint64_t element_count = 0;  ///< the product of the shape
};

/// Checks the magic string, version, header and data size of an .npy file of @p file_size
/// bytes and parses its header, reading only the first bytes and the header;
/// @p source names the file in error messages. @p read(offset, length) returns the file's
/// bytes in [offset, offset + length), which the caller keeps inside the file.
template <class ReadBytes>
NpyLayout parse_npy_layout(ReadBytes&& read, std::uint64_t file_size, std::string_view source) {
  const auto fail = [&](std::uint64_t offset, const std::string& what) {
    throw io::format_error(source, "byte " + std::to_string(offset), what);
  };
  // Magic (6 bytes), version (2) and header length (2 bytes in version 1.0, 4 in 2.0 and 3.0).
  const auto prefix = read(0, static_cast<std::size_t>(std::min<std::uint64_t>(file_size, 12)));
  if (prefix.size() < kNpyMagic.size() ||
      std::memcmp(prefix.data(), kNpyMagic.data(), kNpyMagic.size()) != 0) {
    fail(0, "bad magic string (expected \\x93NUMPY)");
  }
  if (prefix.size() < 8) fail(file_size, "file ends inside the format version");
  const unsigned major = prefix[6], minor = prefix[7];
  if (major < 1 || major > 3 || minor != 0) {
    fail(6, "unsupported format version " + std::to_string(major) + "." + std::to_string(minor) +
                " (expected 1.0, 2.0 or 3.0)");
  }
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  const std::size_t header_start = 8 + length_bytes;
  if (file_size < header_start) fail(file_size, "file ends inside the header length");
  const std::uint64_t header_length =
      major == 1 ? load_uint<std::uint16_t>(prefix.data() + 8, ByteOrder::little)
                 : load_uint<std::uint32_t>(prefix.data() + 8, ByteOrder::little);
  if (header_length > kMaxNpyHeaderBytes) {
    fail(8, "header length " + std::to_string(header_length) + " exceeds the limit of " +
                std::to_string(kMaxNpyHeaderBytes) + " bytes");
  }
  if (header_length > file_size - header_start) {
    fail(8, "header length " + std::to_string(header_length) + " extends beyond the end (" +
                std::to_string(file_size - header_start) + " bytes follow the length field)");
  }
  const auto header_bytes = read(header_start, static_cast<std::size_t>(header_length));
  if (header_length == 0 || header_bytes[header_length - 1] != '\n') {
    fail(header_start + header_length, "header is not terminated by a newline");
  }
  const std::string_view header_text(reinterpret_cast<const char*>(header_bytes.data()),
                                     header_length - 1);
  NpyLayout layout;
  layout.header = NpyHeaderParser(header_text, header_start, source).parse();
  layout.data_start = header_start + header_length;

  const std::size_t item_bytes = item_size(layout.header.type);
  const auto count =
      checked_product(layout.header.shape, std::numeric_limits<std::uint64_t>::max() / item_bytes);
  if (!count) fail(header_start, "shape " + shape_text(layout.header.shape) + " overflows");
  const std::uint64_t expected = *count * item_bytes;
  const std::uint64_t available = file_size - layout.data_start;
  if (available != expected) {
    fail(layout.data_start, std::string(available < expected ? "data too short" : "trailing data") +
                                ": shape " + shape_text(layout.header.shape) + " needs " +
                                std::to_string(expected) + " bytes, found " +
                                std::to_string(available));
  }
  layout.element_count = *count;
  return layout;
}

/// Parses a whole .npy file held in @p bytes; @p source names it in error messages.
inline io::NpyArray parse_npy(std::span<const std::uint8_t> bytes, std::string_view source) {
  const auto read = [bytes](std::uint64_t offset, std::size_t length) {
    return bytes.subspan(static_cast<std::size_t>(offset), length);
  };
  NpyLayout layout = parse_npy_layout(read, bytes.size(), source);
  io::NpyArray array;
  array.shape = std::move(layout.header.shape);
  array.type = layout.header.type;
  array.byte_order = layout.header.byte_order;
  array.fortran_order = layout.header.fortran_order;
  const std::size_t count = layout.element_count;
  const std::uint8_t* data = bytes.data() + layout.data_start;
  if (is_float(array.type)) {
    array.values.resize(count);
    decode_npy_elements(data, count, array.type, array.byte_order, array.values.data());
  } else {
    array.integers.resize(count);
    decode_npy_elements(data, count, array.type, array.byte_order, array.integers.data());
  }
  return array;
}

/// The number of elements of @p shape; throws std::invalid_argument naming @p name if an
/// extent is negative, there are too many dimensions or the product overflows.
inline std::uint64_t npy_element_count(const std::string& name,
                                       std::span<const std::int64_t> shape) {
  if (shape.size() > kMaxNpyDimensions) {
    throw std::invalid_argument(name + " has " + std::to_string(shape.size()) +
                                " dimensions, expected at most " +
                                std::to_string(kMaxNpyDimensions));
  }
  return shape_element_count(name, shape);
}

/// Magic string, version, header length and padded header dict, ready for the data.
/// @param version 1, 2 or 3, or 0 for the default, 1.
inline std::vector<std::uint8_t> npy_header_bytes(io::NpyType type, std::endian byte_order,
                                                  bool fortran_order,
                                                  std::span<const std::int64_t> shape,
                                                  int version) {
  if (version < 0 || version > 3) {
    reject_argument("serialize_npy: version", is_value(version), "0 (automatic), 1, 2 or 3");
  }
  const std::string dict = "{'descr': '" + npy_descr(type, byte_order) +
                           "', 'fortran_order': " + (fortran_order ? "True" : "False") +
                           ", 'shape': " + shape_text(shape) + ", }";
  // With at most 64 dimensions the dict is under 2 kB, so version 1.0's 16-bit header length
  // always suffices and is what version 0 selects.
  if (version == 0) version = 1;
  const std::size_t length_bytes = version == 1 ? 2 : 4;
  // Pads with spaces so that magic + version + length field + header + '\n' is aligned.
  const std::size_t unpadded = kNpyMagic.size() + 2 + length_bytes + dict.size() + 1;
  const std::size_t header_length =
      dict.size() + 1 + (kNpyAlignment - unpadded % kNpyAlignment) % kNpyAlignment;
  std::vector<std::uint8_t> out(kNpyMagic.begin(), kNpyMagic.end());
  out.push_back(static_cast<std::uint8_t>(version));
  out.push_back(0);
  if (version == 1) {
    append_uint(out, static_cast<std::uint16_t>(header_length), ByteOrder::little);
  } else {
    append_uint(out, static_cast<std::uint32_t>(header_length), ByteOrder::little);
  }
  out.insert(out.end(), dict.begin(), dict.end());
  out.insert(out.end(), header_length - dict.size() - 1, ' ');
  out.push_back('\n');
  return out;
}

/// Appends @p count elements of @p values as @p type in @p byte_order. Float values must fit
/// the type and integer values its range (checked by the callers).
template <class In>
void append_npy_elements(std::vector<std::uint8_t>& out, const In* values, std::size_t count,
                         io::NpyType type, std::endian byte_order) {
  const ByteOrder order = byte_order == std::endian::big ? ByteOrder::big : ByteOrder::little;
  out.reserve(out.size() + count * item_size(type));
  for (std::size_t i = 0; i < count; ++i) {
    switch (type) {
      case io::NpyType::f4:
        append_uint(out, std::bit_cast<std::uint32_t>(static_cast<float>(values[i])), order);
        break;
      case io::NpyType::f8:
        append_uint(out, std::bit_cast<std::uint64_t>(static_cast<double>(values[i])), order);
        break;
      case io::NpyType::i4:
        append_uint(out, static_cast<std::uint32_t>(static_cast<std::int32_t>(values[i])), order);
        break;
      case io::NpyType::i8:
        append_uint(out, static_cast<std::uint64_t>(static_cast<std::int64_t>(values[i])), order);
        break;
    }
  }
}

/// The element type that stores Scalar (float or double) exactly.
template <class Scalar>
constexpr io::NpyType npy_type_of() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "npy files are written from float or double");
  return std::is_same_v<Scalar, float> ? io::NpyType::f4 : io::NpyType::f8;
}

/// Writes a C-order little-endian float array of @p shape holding @p data.
template <class Scalar>
void write_npy_data(const std::string& path, std::span<const std::int64_t> shape,
                    const Scalar* data) {
  constexpr io::NpyType type = npy_type_of<Scalar>();
  const std::uint64_t count = npy_element_count("array", shape);
  std::vector<std::uint8_t> bytes = npy_header_bytes(type, std::endian::little, false, shape, 0);
  append_npy_elements(bytes, data, count, type, std::endian::little);
  write_file_atomic(path, bytes);
}

/// Throws io::format_error unless @p type is a float type (an integer array is not a point
/// set); @p byte_order only names the dtype in the message.
inline void require_float_array(io::NpyType type, std::endian byte_order, const std::string& path,
                                const char* purpose) {
  if (!is_float(type)) {
    throw io::format_error(path, "field 'descr'",
                           "integer dtype '" + npy_descr(type, byte_order) +
                               "' cannot be loaded as " + purpose +
                               "; expected a float array ('<f4', '>f4', '<f8' or '>f8')");
  }
}

/// Throws io::format_error naming @p path if a finite entry of @p values overflows Scalar;
/// @p values are the file's elements from number @p first_element on.
template <class Scalar>
void require_representable(std::span<const double> values, const std::string& path,
                           std::uint64_t first_element = 0) {
  const auto bad = first_narrowing_overflow<Scalar>(values.data(), values.size());
  if (bad >= 0) {
    throw io::format_error(
        path, "element " + std::to_string(first_element + static_cast<std::uint64_t>(bad)),
        "value " + std::to_string(values[static_cast<std::size_t>(bad)]) +
            " is too large for float");
  }
}

/// N and d of a batch file of @p shape, [N, d] or [N] (d = 1); throws io::format_error naming
/// @p path for any other shape.
inline std::pair<Index, Index> batch_extents(const std::vector<std::int64_t>& shape,
                                             const std::string& path) {
  if (shape.size() != 1 && shape.size() != 2) {
    throw io::format_error(
        path, "field 'shape'",
        "shape " + shape_text(shape) + " is not a batch of points (expected [N, d] or [N])");
  }
  return {static_cast<Index>(shape[0]), shape.size() == 2 ? static_cast<Index>(shape[1]) : 1};
}

/// Whether @p shape is [N] or [N, 1].
inline bool is_vector_shape(std::span<const std::int64_t> shape) {
  return shape.size() == 1 || (shape.size() == 2 && shape[1] == 1);
}

}  // namespace flowmatch::detail

namespace flowmatch::io {

/// Parses an .npy file held in memory; errors name the source "buffer".
/// @throws format_error if the content is corrupt or unsupported.
inline NpyArray parse_npy(std::span<const std::uint8_t> bytes) {
  return detail::parse_npy(bytes, "buffer");
}

/// Reads the .npy file at @p path.
/// @throws io_error if the file cannot be read; format_error if its content is corrupt or
/// unsupported.
inline NpyArray read_npy(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_file_bytes(path);
  return detail::parse_npy(bytes, path);
}

/// The bytes of an .npy file holding @p array, in its type, byte order and element order.
/// @param version the format version to write: 1, 2 or 3, or 0 for the default, 1.0 (whose
///   16-bit header length always suffices for the at most 64 dimensions allowed).
/// @throws std::invalid_argument if the shape is invalid or does not match the number of
///   elements, the elements are in the wrong vector for the type (values for f4/f8, integers
///   for i4/i8), a finite value overflows f4, an integer does not fit i4, or @p version is
///   not 0–3.
inline std::vector<std::uint8_t> serialize_npy(const NpyArray& array, int version = 0) {
  const std::uint64_t count = detail::npy_element_count("array", array.shape);
  const bool floats = detail::is_float(array.type);
  const std::size_t stored = floats ? array.values.size() : array.integers.size();
  const bool other_empty = floats ? array.integers.empty() : array.values.empty();
  if (stored != count || !other_empty) {
    detail::reject_argument("serialize_npy: array",
                            "holds " + std::to_string(array.values.size()) + " values and " +
                                std::to_string(array.integers.size()) + " integers",
                            std::to_string(count) + " " + (floats ? "values" : "integers") +
                                " for shape " + detail::shape_text(array.shape) + " and dtype " +
                                detail::npy_descr(array.type, array.byte_order));
  }
  if (array.byte_order != std::endian::little && array.byte_order != std::endian::big) {
    detail::reject_argument("serialize_npy: array.byte_order",
                            detail::is_value(static_cast<int>(array.byte_order)),
                            "std::endian::little or big");
  }
  if (array.type == NpyType::f4) {
    const auto bad = detail::first_narrowing_overflow<float>(array.values.data(), count);
    if (bad >= 0) {
      detail::reject_argument("serialize_npy: array.values[" + std::to_string(bad) + "]",
                              detail::is_value(array.values[static_cast<std::size_t>(bad)]) +
                                  ", too large for dtype f4",
                              "a value within the range of f4 (or a non-finite one)");
    }
  }
  if (array.type == NpyType::i4) {
    const auto bad = std::find_if(array.integers.begin(), array.integers.end(), [](auto n) {
      return n < std::numeric_limits<std::int32_t>::min() ||
             n > std::numeric_limits<std::int32_t>::max();
    });
    if (bad != array.integers.end()) {
      detail::reject_argument(
          "serialize_npy: array.integers[" + std::to_string(bad - array.integers.begin()) + "]",
          detail::is_value(*bad) + ", which does not fit dtype i4", "a 32-bit integer");
    }
  }
  std::vector<std::uint8_t> bytes = detail::npy_header_bytes(
      array.type, array.byte_order, array.fortran_order, array.shape, version);
  if (floats) {
    detail::append_npy_elements(bytes, array.values.data(), count, array.type, array.byte_order);
  } else {
    detail::append_npy_elements(bytes, array.integers.data(), count, array.type, array.byte_order);
  }
  return bytes;
}

/// Writes @p array to @p path (see serialize_npy), through a temporary file in the same
/// directory that replaces @p path only when complete.
/// @throws std::invalid_argument as serialize_npy; io_error if the file cannot be written.
inline void write_npy(const std::string& path, const NpyArray& array, int version = 0) {
  detail::write_file_atomic(path, serialize_npy(array, version));
}

/// Loads a batch of points: an [N, d] float array (f4 or f8, C or Fortran order) becomes the
/// d×N batch (column i is row i of the array), a 1-D [N] array the 1×N batch. Values are
/// returned as stored, including non-finite ones.
/// @throws io_error if the file cannot be read; format_error if it is corrupt, holds integers,
///   is not 1-D or 2-D, or (for float) holds a finite value too large for float.
template <class Scalar = double>
Matrix<Scalar> load_npy_batch(const std::string& path) {
  const NpyArray array = read_npy(path);
  detail::require_float_array(array.type, array.byte_order, path, "a batch of points");
  const auto [count, dimension] = detail::batch_extents(array.shape, path);
  detail::require_representable<Scalar>(array.values, path);
  using DoubleMatrix = Matrix<double>;
  // C order [N, d] is the column-major d×N memory; Fortran order [N, d] is column-major N×d.
  if (array.fortran_order) {
    return Eigen::Map<const DoubleMatrix>(array.values.data(), count, dimension)
        .transpose()
        .template cast<Scalar>();
  }
  return Eigen::Map<const DoubleMatrix>(array.values.data(), dimension, count)
      .template cast<Scalar>();
}

/// Reads the header of the .npy file at @p path (element type, byte order, element order and
/// shape) and checks the file size against it, without reading the elements.
/// @throws io_error if the file cannot be read; format_error if the header is corrupt or
///   unsupported or the file size does not match the shape.
inline NpyHeader read_npy_header(const std::string& path) {
  detail::FileRangeReader file(path);
  const auto read = [&file](std::uint64_t offset, std::size_t length) {
    return file.read(offset, length);
  };
  return detail::parse_npy_layout(read, file.size(), path).header;
}

/// Loads rows [first_row, first_row + row_count) of a batch file as a d×row_count batch: bit
/// for bit columns first_row, …, first_row + row_count − 1 of load_npy_batch(path), but reading
/// only the header and the bytes of those rows (one contiguous range in C order, d ranges in
/// Fortran order). Each process of a parallel job can so read just its share of a large file.
/// @throws std::invalid_argument unless first_row ≥ 0, row_count ≥ 0 and
///   first_row + row_count ≤ N; io_error if the file cannot be read; format_error as
///   load_npy_batch (checked on the header, and on the values of the rows read).
template <class Scalar = double>
Matrix<Scalar> load_npy_batch_rows(const std::string& path, Index first_row, Index row_count) {
  detail::FileRangeReader file(path);
  const auto read = [&file](std::uint64_t offset, std::size_t length) {
    return file.read(offset, length);
  };
  const detail::NpyLayout layout = detail::parse_npy_layout(read, file.size(), path);
  const NpyHeader& header = layout.header;
  detail::require_float_array(header.type, header.byte_order, path, "a batch of points");
  const auto [count, dimension] = detail::batch_extents(header.shape, path);
  if (first_row < 0 || row_count < 0 || first_row > count - row_count) {
    detail::reject_argument(
        "load_npy_batch_rows: first_row and row_count",
        "are " + std::to_string(first_row) + " and " + std::to_string(row_count),
        "rows within the " + std::to_string(count) + " rows of '" + path + "'");
  }
  // C order: row i is the d elements from i·d on, so the rows are one run of row_count·d
  // elements, the d×row_count batch. Fortran order: element (i, j) is number j·N + i, so
  // column j of the array holds a run of row_count elements, the row_count×d transpose.
  const bool fortran = header.fortran_order;
  Matrix<double> values(fortran ? row_count : dimension, fortran ? dimension : row_count);
  const Index runs = fortran ? dimension : 1;
  const auto run_length = static_cast<std::size_t>(fortran ? row_count : row_count * dimension);
  const std::size_t item_bytes = detail::item_size(header.type);
  for (Index run = 0; run < runs; ++run) {
    const auto first_element =
        static_cast<std::uint64_t>(fortran ? run * count + first_row : first_row * dimension);
    double* out = values.data() + run * static_cast<Index>(run_length);
    const std::vector<std::uint8_t> bytes =
        file.read(layout.data_start + first_element * item_bytes, run_length * item_bytes);
    detail::decode_npy_elements(bytes.data(), run_length, header.type, header.byte_order, out);
    detail::require_representable<Scalar>(std::span<const double>(out, run_length), path,
                                          first_element);
  }
  if (fortran) return values.transpose().template cast<Scalar>();
  if constexpr (std::is_same_v<Scalar, double>) {
    return values;
  } else {
    return values.template cast<Scalar>();
  }
}

/// Loads a float vector: an [N] or [N, 1] array (f4 or f8) becomes a length-N vector.
/// @throws io_error if the file cannot be read; format_error if it is corrupt, holds integers,
///   has another shape, or (for float) holds a finite value too large for float.
template <class Scalar = double>
Vector<Scalar> load_npy_vector(const std::string& path) {
  const NpyArray array = read_npy(path);
  detail::require_float_array(array.type, array.byte_order, path, "a vector");
  if (!detail::is_vector_shape(array.shape)) {
    throw format_error(
        path, "field 'shape'",
        "shape " + detail::shape_text(array.shape) + " is not a vector (expected [N] or [N, 1])");
  }
  detail::require_representable<Scalar>(array.values, path);
  return Eigen::Map<const Vector<double>>(array.values.data(),
                                          static_cast<Index>(array.values.size()))
      .template cast<Scalar>();
}

/// Loads integer labels: an [N] or [N, 1] array of dtype i4 or i8.
/// @throws io_error if the file cannot be read; format_error if it is corrupt, holds floats or
///   has another shape.
inline std::vector<std::int64_t> load_npy_labels(const std::string& path) {
  NpyArray array = read_npy(path);
  if (detail::is_float(array.type)) {
    throw format_error(path, "field 'descr'",
                       "float dtype '" + detail::npy_descr(array.type, array.byte_order) +
                           "' cannot be loaded as labels; expected an integer array ('<i4', "
                           "'>i4', '<i8' or '>i8')");
  }
  if (!detail::is_vector_shape(array.shape)) {
    throw format_error(path, "field 'shape'",
                       "shape " + detail::shape_text(array.shape) +
                           " is not a label vector (expected [N] or [N, 1])");
  }
  return std::move(array.integers);
}

/// Writes the d×N @p batch as a C-order [N, d] array ('<f8' for double, '<f4' for float),
/// format version 1.0, through a temporary file renamed over @p path when complete.
/// @throws io_error if the file cannot be written.
template <class Scalar>
void save_npy(const std::string& path, const Matrix<Scalar>& batch) {
  const std::int64_t shape[] = {batch.cols(), batch.rows()};
  detail::write_npy_data(path, shape, batch.data());
}

/// Writes @p vector as a 1-D [N] array ('<f8' for double, '<f4' for float).
/// @throws io_error if the file cannot be written.
template <class Scalar>
void save_npy_vector(const std::string& path, const Vector<Scalar>& vector) {
  const std::int64_t shape[] = {vector.size()};
  detail::write_npy_data(path, shape, vector.data());
}

/// Writes the L×N integer matrix @p tokens (one column per sequence, the layout of
/// discrete/tokens.hpp) as a C-order [N, L] int64 array ('<i8'): the same memory.
/// @throws io_error if the file cannot be written.
inline void save_npy_tokens(
    const std::string& path,
    const Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic>& tokens) {
  NpyArray array;
  array.type = NpyType::i8;
  array.shape = {tokens.cols(), tokens.rows()};
  array.integers.assign(tokens.data(), tokens.data() + tokens.size());
  write_npy(path, array);
}

/// Writes @p data, the C-order (row-major) elements of an array of any @p shape (e.g. a
/// [T, N, d] trajectory), as '<f8' for double or '<f4' for float. Call as
/// `save_npy_array<double>(path, {T, N, d}, data)`.
/// @throws std::invalid_argument if @p shape has a negative extent or its product is not
///   data.size(); io_error if the file cannot be written.
template <class Scalar>
void save_npy_array(const std::string& path, const std::vector<std::int64_t>& shape,
                    std::span<const Scalar> data) {
  const std::uint64_t count = detail::npy_element_count("array", shape);
  if (count != data.size()) {
    detail::reject_argument(
        "save_npy_array: data", "has " + std::to_string(data.size()) + " elements",
        "the " + std::to_string(count) + " of shape " + detail::shape_text(shape));
  }
  detail::write_npy_data(path, shape, data.data());
}

}  // namespace flowmatch::io
