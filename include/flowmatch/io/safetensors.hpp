/// @file safetensors.hpp
/// @brief Reading and writing safetensors files (the PyTorch / Hugging Face weight format).
///
/// Requires nlohmann-json 3 (CMake: `find_package(nlohmann_json 3 REQUIRED)` and link
/// `nlohmann_json::nlohmann_json`); no other flowmatch header includes it.
///
/// Layout: an 8-byte little-endian unsigned header length n, n bytes of a JSON object that maps
/// each tensor name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (plus an
/// optional "__metadata__" object of string → string), then the data buffer, which holds the
/// tensors' little-endian elements in C (row-major) order at [begin, end) relative to its start.
///
/// Reading supports the dtypes F64, F32, F16 and BF16; the other safetensors dtypes (integers,
/// BOOL, 8-bit floats) are rejected with a format_error naming the tensor. Writing supports F32
/// and F64. The reader is strict and safe on hostile input: the header length is at most
/// 100 000 000 bytes and lies within the file; the header is a JSON object without duplicate
/// keys whose values are tensor objects with exactly the three fields above; shapes and
/// offsets are non-negative integers without overflow; each tensor's byte length matches its
/// shape; and the tensors, sorted by offset, tile the data buffer exactly, which ends at the end
/// of the file. Any violation throws io::format_error; nothing is read out of bounds. A file of
/// another kind (text, .npy, random bytes), recognised by an implausible header length or a
/// header that does not open with '{', is reported as "<source>: not a safetensors file (...)".
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/bytes.hpp"
#include "flowmatch/detail/file.hpp"
#include "flowmatch/detail/shape.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/io/io_error.hpp"

namespace flowmatch::io {

/// Element type of a tensor.
enum class DType {
  F64,   ///< IEEE binary64
  F32,   ///< IEEE binary32
  F16,   ///< IEEE binary16 (read only)
  BF16,  ///< bfloat16, the upper half of a binary32 (read only)
};

/// A tensor: its stored element type, its shape and its elements in C (row-major) order,
/// converted exactly to double.
struct Tensor {
  DType dtype = DType::F64;
  std::vector<std::int64_t> shape;
  std::vector<double> values;
};

/// The content of a safetensors file.
struct SafeTensors {
  /// The "__metadata__" entries (empty if the file has none).
  std::map<std::string, std::string> metadata;
  /// The tensors by name.
  std::map<std::string, Tensor> tensors;
};

}  // namespace flowmatch::io

namespace flowmatch::detail {

/// Largest accepted header, as in the format's reference implementation.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
inline constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeInfo {
  io::DType dtype;
  std::string_view name;
  std::size_t size;
};
inline constexpr DTypeInfo kDTypes[] = {{io::DType::F64, "F64", 8},
                                        {io::DType::F32, "F32", 4},
                                        {io::DType::F16, "F16", 2},
                                        {io::DType::BF16, "BF16", 2}};

inline const DTypeInfo& dtype_info(io::DType dtype) {
  return kDTypes[static_cast<std::size_t>(dtype)];
}

/// The other dtype names of the format, rejected with "unsupported" rather than "unknown".
inline bool is_unsupported_safetensors_dtype(std::string_view name) {
  constexpr std::string_view names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16",
                                        "U16",  "I32", "U32", "I64",     "U64"};
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

/// A tensor entry of the header, checked but not yet decoded.
struct TensorEntry {
  std::string name;
  io::DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin;
  std::uint64_t end;
};

/// Checks one header value and turns it into a TensorEntry.
class SafetensorsHeaderReader {
 public:
  explicit SafetensorsHeaderReader(std::string_view source) : source_(source) {}

  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    throw io::format_error(source_, "tensor '" + name + "'", what);
  }

  std::map<std::string, std::string> metadata(const nlohmann::json& value) const {
    const auto fail_metadata = [&](const std::string& what) {
      throw io::format_error(source_, "'__metadata__'", what);
    };
    if (!value.is_object()) fail_metadata("expected an object of strings");
    std::map<std::string, std::string> entries;
    for (const auto& item : value.items()) {
      if (!item.value().is_string()) {
        fail_metadata("entry '" + item.key() + "' is a " + item.value().type_name() +
                      ", expected a string");
      }
      entries.emplace(item.key(), item.value().get<std::string>());
    }
    return entries;
  }

  TensorEntry tensor(const std::string& name, const nlohmann::json& value) const {
    if (!value.is_object()) {
      fail(name, std::string("is a ") + value.type_name() +
                     ", expected an object with 'dtype', 'shape' and 'data_offsets'");
    }
    for (const auto& item : value.items()) {
      const std::string& key = item.key();
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        fail(name, "unknown field '" + key + "' (expected 'dtype', 'shape', 'data_offsets')");
      }
    }
    TensorEntry entry{name, parse_dtype(name, field(name, value, "dtype")), {}, 0, 0};
    const nlohmann::json& shape = field(name, value, "shape");
    if (!shape.is_array()) fail(name, "field 'shape' is not an array");
    for (const auto& extent : shape) {
      entry.shape.push_back(
          static_cast<std::int64_t>(unsigned_value(name, "shape", extent, int64_max())));
    }
    const nlohmann::json& offsets = field(name, value, "data_offsets");
    if (!offsets.is_array() || offsets.size() != 2) {
      fail(name, "field 'data_offsets' is not an array of two integers");
    }
    const auto limit = std::numeric_limits<std::uint64_t>::max();
    entry.begin = unsigned_value(name, "data_offsets", offsets[0], limit);
    entry.end = unsigned_value(name, "data_offsets", offsets[1], limit);
    if (entry.begin > entry.end) {
      fail(name, "data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                     "] has begin > end");
    }
    const std::size_t item_size = dtype_info(entry.dtype).size;
    const auto count = checked_product(entry.shape, limit / item_size);
    if (!count) fail(name, "the element count of its shape overflows");
    if (entry.end - entry.begin != *count * item_size) {
      fail(name, "data_offsets [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                     "] span " + std::to_string(entry.end - entry.begin) +
                     " bytes, but its shape and dtype need " + std::to_string(*count * item_size));
    }
    return entry;
  }

 private:
  static std::uint64_t int64_max() {
    return static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  }

  const nlohmann::json& field(const std::string& name, const nlohmann::json& value,
                              const char* key) const {
    const auto found = value.find(key);
    if (found == value.end()) fail(name, std::string("missing field '") + key + "'");
    return *found;
  }

  io::DType parse_dtype(const std::string& name, const nlohmann::json& value) const {
    if (!value.is_string()) fail(name, "field 'dtype' is not a string");
    const auto& text = value.get_ref<const std::string&>();
    for (const DTypeInfo& info : kDTypes) {
      if (text == info.name) return info.dtype;
    }
    fail(name, std::string(is_unsupported_safetensors_dtype(text) ? "unsupported" : "unknown") +
                   " dtype '" + text + "' (expected F64, F32, F16 or BF16)");
  }

  std::uint64_t unsigned_value(const std::string& name, const char* key,
                               const nlohmann::json& value, std::uint64_t limit) const {
    if (!value.is_number_unsigned() || value.get<std::uint64_t>() > limit) {
      const std::string found = value.is_number() ? value.dump() : value.type_name();
      fail(name, std::string("field '") + key + "' holds " + found +
                     ", expected a non-negative integer up to " + std::to_string(limit));
    }
    return value.get<std::uint64_t>();
  }

  std::string_view source_;
};

/// Parses the JSON header, rejecting NUL bytes, duplicate keys (which the JSON library would
/// otherwise resolve silently) and nesting deeper than the format uses (object → object →
/// array).
inline nlohmann::json parse_safetensors_json(std::span<const std::uint8_t> text,
                                             std::string_view source) {
  std::vector<std::set<std::string>> open_objects;
  const auto check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if ((event == Event::object_start || event == Event::array_start) && depth >= 3) {
      throw io::format_error(source, "header", "JSON nested deeper than the format allows");
    }
    if (event == Event::object_start) open_objects.emplace_back();
    if (event == Event::object_end) open_objects.pop_back();
    if (event == Event::key && !open_objects.back().insert(parsed.get<std::string>()).second) {
      throw io::format_error(source, "header", "duplicate key '" + parsed.get<std::string>() + "'");
    }
    return true;
  };
  // The JSON library takes a NUL byte for the end of its input and would ignore what follows.
  const auto nul = std::find(text.begin(), text.end(), std::uint8_t{0});
  if (nul != text.end()) {
    throw io::format_error(source, "header",
                           "NUL byte at header byte " + std::to_string(8 + (nul - text.begin())) +
                               " (not valid JSON)");
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::parse_error& error) {
    throw io::format_error(source, "header byte " + std::to_string(8 + error.byte),
                           std::string("invalid JSON: ") + error.what());
  } catch (const nlohmann::json::exception& error) {
    // E.g. a number too large for a double (out_of_range.406).
    throw io::format_error(source, "header", std::string("invalid JSON: ") + error.what());
  }
}

/// Converts the little-endian elements at @p data to double.
inline void decode_tensor(const std::uint8_t* data, io::Tensor& tensor, std::size_t count) {
  tensor.values.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    double& value = tensor.values[i];
    switch (tensor.dtype) {
      case io::DType::F64:
        value = std::bit_cast<double>(load_uint<std::uint64_t>(data + 8 * i, ByteOrder::little));
        break;
      case io::DType::F32:
        value = std::bit_cast<float>(load_uint<std::uint32_t>(data + 4 * i, ByteOrder::little));
        break;
      case io::DType::F16:
        value = half_to_double(load_uint<std::uint16_t>(data + 2 * i, ByteOrder::little));
        break;
      case io::DType::BF16:
        value = bfloat16_to_double(load_uint<std::uint16_t>(data + 2 * i, ByteOrder::little));
        break;
    }
  }
}

/// @p byte as it reads in a message: 'c' for printable ASCII, else its hexadecimal value 0xNN.
inline std::string byte_text(std::uint8_t byte) {
  if (byte >= 0x20 && byte < 0x7F) return std::string{'\'', static_cast<char>(byte), '\''};
  constexpr char digits[] = "0123456789abcdef";
  return std::string{'0', 'x', digits[byte >> 4], digits[byte & 0xF]};
}

/// Parses a whole safetensors file held in @p bytes; @p source names it in error messages.
inline io::SafeTensors parse_safetensors(std::span<const std::uint8_t> bytes,
                                         std::string_view source) {
  if (bytes.size() < 8) {
    throw io::format_error(source, "byte 0",
                           "file of " + std::to_string(bytes.size()) +
                               " bytes is shorter than the 8-byte header length");
  }
  // Another kind of file (text, .npy, random bytes) shows here: its first 8 bytes read as an
  // implausible length, or its header does not open a JSON object.
  const auto not_safetensors = [&](const std::string& reason) {
    throw io::format_error(source, "not a safetensors file (" + reason + ")");
  };
  const std::uint64_t header_length = load_uint<std::uint64_t>(bytes.data(), ByteOrder::little);
  if (header_length > kMaxSafetensorsHeaderBytes) {
    not_safetensors("header length " + std::to_string(header_length) + " at byte 0 exceeds the " +
                    "limit of " + std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  }
  if (header_length > bytes.size() - 8) {
    not_safetensors("header length " + std::to_string(header_length) + " at byte 0 extends " +
                    "beyond the end: " + std::to_string(bytes.size() - 8) +
                    " bytes follow the length");
  }
  const std::span<const std::uint8_t> text = bytes.subspan(8, header_length);
  const auto first = std::find_if(text.begin(), text.end(), [](std::uint8_t byte) {
    return byte != ' ' && byte != '\t' && byte != '\n' && byte != '\r';
  });
  if (first != text.end() && *first != '{') {
    not_safetensors("header byte " + std::to_string(8 + (first - text.begin())) + " is " +
                    byte_text(*first) + ", expected '{' to open the JSON header");
  }
  const nlohmann::json header = parse_safetensors_json(text, source);
  if (!header.is_object()) {
    throw io::format_error(source, "header",
                           std::string("is a JSON ") + header.type_name() + ", expected an object");
  }

  const SafetensorsHeaderReader reader(source);
  io::SafeTensors file;
  std::vector<TensorEntry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      file.metadata = reader.metadata(value);
    } else {
      entries.push_back(reader.tensor(name, value));
    }
  }

  // Sorted by offset, the tensors must tile the data buffer exactly from 0 to its end.
  const std::span<const std::uint8_t> buffer = bytes.subspan(8 + header_length);
  std::sort(entries.begin(), entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  std::uint64_t covered = 0;
  for (const TensorEntry& entry : entries) {
    if (entry.begin != covered) {
      reader.fail(entry.name, "data_offsets begin at " + std::to_string(entry.begin) +
                                  ", expected " + std::to_string(covered) +
                                  (entry.begin < covered ? " (overlap)" : " (gap)"));
    }
    covered = entry.end;
  }
  if (covered != buffer.size()) {
    throw io::format_error(source, "data buffer",
                           "the tensors cover " + std::to_string(covered) +
                               " bytes of the data buffer, which holds " +
                               std::to_string(buffer.size()));
  }

  for (TensorEntry& entry : entries) {
    io::Tensor tensor{entry.dtype, std::move(entry.shape), {}};
    const std::size_t count = (entry.end - entry.begin) / dtype_info(entry.dtype).size;
    decode_tensor(buffer.data() + entry.begin, tensor, count);
    file.tensors.emplace(std::move(entry.name), std::move(tensor));
  }
  return file;
}

/// Throws std::invalid_argument unless @p dtype can be written (F32 or F64).
inline void require_writable_dtype(const std::string& name, io::DType dtype) {
  if (dtype != io::DType::F32 && dtype != io::DType::F64) {
    reject_argument("serialize_safetensors: tensor '" + name + "'",
                    "has dtype " + std::string(dtype_info(dtype).name),
                    "F32 or F64 (only F32 and F64 can be written)");
  }
}

/// Throws std::invalid_argument naming tensor @p name if a finite value of @p values is too
/// large for @p dtype.
inline void require_fits_dtype(std::span<const double> values, io::DType dtype,
                               const std::string& name) {
  if (dtype != io::DType::F32) return;
  const auto bad = first_narrowing_overflow<float>(values.data(), values.size());
  if (bad >= 0) {
    reject_argument("serialize_safetensors: tensor '" + name + "'",
                    "has value " + to_text(values[static_cast<std::size_t>(bad)]) + " at index " +
                        std::to_string(bad) + ", too large for F32",
                    "values within the range of F32 (or non-finite ones)");
  }
}

/// Rounds @p values to the precision of @p dtype (F32 or F64).
inline void round_to_dtype(std::vector<double>& values, io::DType dtype, const std::string& name) {
  require_fits_dtype(values, dtype, name);
  if (dtype != io::DType::F32) return;
  for (double& value : values) value = static_cast<float>(value);
}

/// Throws std::invalid_argument naming @p name unless @p tensor holds as many values as its
/// shape needs and each fits Scalar.
template <class Scalar>
void require_tensor_values(const io::Tensor& tensor, const std::string& name) {
  const std::uint64_t count = shape_element_count(name, tensor.shape);
  if (count != tensor.values.size()) {
    reject_argument(name, "has " + std::to_string(tensor.values.size()) + " values",
                    "the " + std::to_string(count) + " of its shape " + shape_text(tensor.shape));
  }
  const auto bad = first_narrowing_overflow<Scalar>(tensor.values.data(), tensor.values.size());
  if (bad >= 0) {
    reject_argument(name,
                    "has value " + to_text(tensor.values[static_cast<std::size_t>(bad)]) +
                        " at index " + std::to_string(bad) + ", too large for float",
                    "values within the range of float (or non-finite ones)");
  }
}

}  // namespace flowmatch::detail

namespace flowmatch::io {

/// Parses a safetensors file held in memory; errors name the source "buffer".
/// @throws format_error if the content is corrupt or unsupported.
inline SafeTensors parse_safetensors(std::span<const std::uint8_t> bytes) {
  return detail::parse_safetensors(bytes, "buffer");
}

/// Reads the safetensors file at @p path.
/// @throws io_error if the file cannot be read; format_error if its content is corrupt or
///   unsupported.
inline SafeTensors read_safetensors(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_file_bytes(path);
  return detail::parse_safetensors(bytes, path);
}

/// The bytes of a safetensors file holding @p file: each tensor in its dtype (F32 values are
/// rounded to the nearest float), data in name order, the header padded with spaces to a
/// multiple of 8 bytes.
/// @throws std::invalid_argument if a tensor has a dtype other than F32/F64, an invalid shape,
///   a number of values that differs from its shape's product, a finite value too large for
///   F32, or the name "__metadata__", or if a name or metadata string is not valid UTF-8.
inline std::vector<std::uint8_t> serialize_safetensors(const SafeTensors& file) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!file.metadata.empty()) header[std::string(detail::kMetadataKey)] = file.metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : file.tensors) {
    if (name == detail::kMetadataKey) {
      detail::reject_argument("serialize_safetensors: tensor name", "is '__metadata__'",
                              "another name (this one is reserved for the metadata)");
    }
    detail::require_writable_dtype(name, tensor.dtype);
    detail::require_tensor_values<double>(tensor, "tensor '" + name + "'");
    detail::require_fits_dtype(tensor.values, tensor.dtype, name);
    const std::uint64_t count = tensor.values.size();
    const std::uint64_t end = offset + count * detail::dtype_info(tensor.dtype).size;
    header[name] = {{"dtype", std::string(detail::dtype_info(tensor.dtype).name)},
                    {"shape", tensor.shape},
                    {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& error) {
    detail::reject_argument("serialize_safetensors: tensor names and metadata",
                            std::string("are not valid UTF-8 (") + error.what() + ")",
                            "valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > detail::kMaxSafetensorsHeaderBytes) {
    detail::reject_argument(
        "serialize_safetensors: header", "has " + std::to_string(text.size()) + " bytes",
        "at most " + std::to_string(detail::kMaxSafetensorsHeaderBytes) + " (the format's limit)");
  }
  std::vector<std::uint8_t> bytes;
  bytes.reserve(8 + text.size() + offset);
  detail::append_uint(bytes, static_cast<std::uint64_t>(text.size()), detail::ByteOrder::little);
  bytes.insert(bytes.end(), text.begin(), text.end());
  for (const auto& [name, tensor] : file.tensors) {
    for (const double value : tensor.values) {
      if (tensor.dtype == DType::F32) {
        detail::append_uint(bytes, std::bit_cast<std::uint32_t>(static_cast<float>(value)),
                            detail::ByteOrder::little);
      } else {
        detail::append_uint(bytes, std::bit_cast<std::uint64_t>(value), detail::ByteOrder::little);
      }
    }
  }
  return bytes;
}

/// Writes @p file to @p path (see serialize_safetensors) through a temporary file in the same
/// directory that replaces @p path only when complete.
/// @throws std::invalid_argument as serialize_safetensors; io_error if the file cannot be
///   written.
inline void write_safetensors(const std::string& path, const SafeTensors& file) {
  detail::write_file_atomic(path, serialize_safetensors(file));
}

/// A 2-D tensor [rows, cols] as a rows×cols matrix (element (i, j) of the tensor is entry
/// (i, j) of the matrix).
/// @param name names the tensor in error messages.
/// @throws std::invalid_argument if the tensor is not 2-D, its values do not match its shape,
///   or (for float) a finite value is too large for float.
template <class Scalar = double>
Matrix<Scalar> tensor_matrix(const Tensor& tensor, const std::string& name = "tensor") {
  if (tensor.shape.size() != 2) {
    throw std::invalid_argument(name + " has shape " + detail::shape_text(tensor.shape) +
                                ", expected a 2-D shape [rows, cols]");
  }
  detail::require_tensor_values<Scalar>(tensor, name);
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return Eigen::Map<const RowMajor>(tensor.values.data(), static_cast<Index>(tensor.shape[0]),
                                    static_cast<Index>(tensor.shape[1]))
      .template cast<Scalar>();
}

/// A 1-D tensor [n] as a length-n vector.
/// @param name names the tensor in error messages.
/// @throws std::invalid_argument if the tensor is not 1-D, its values do not match its shape,
///   or (for float) a finite value is too large for float.
template <class Scalar = double>
Vector<Scalar> tensor_vector(const Tensor& tensor, const std::string& name = "tensor") {
  if (tensor.shape.size() != 1) {
    throw std::invalid_argument(name + " has shape " + detail::shape_text(tensor.shape) +
                                ", expected a 1-D shape [n]");
  }
  detail::require_tensor_values<Scalar>(tensor, name);
  return Eigen::Map<const Vector<double>>(tensor.values.data(),
                                          static_cast<Index>(tensor.values.size()))
      .template cast<Scalar>();
}

/// A 2-D tensor [rows, cols] holding @p matrix in C order, its values rounded to @p dtype
/// (F32 or F64) so that writing and reading it back gives the same tensor.
/// @throws std::invalid_argument if @p dtype is not F32/F64 or a finite value is too large
///   for F32.
template <class Derived>
Tensor make_tensor(const Eigen::MatrixBase<Derived>& matrix, DType dtype) {
  detail::require_writable_dtype("matrix", dtype);
  Tensor tensor{dtype, {matrix.rows(), matrix.cols()}, {}};
  tensor.values.resize(static_cast<std::size_t>(matrix.size()));
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMajor>(tensor.values.data(), matrix.rows(), matrix.cols()) =
      matrix.template cast<double>();
  detail::round_to_dtype(tensor.values, dtype, "matrix");
  return tensor;
}

/// A 1-D tensor [n] holding the n entries of @p vector (a row or column vector), rounded to
/// @p dtype (F32 or F64).
/// @throws std::invalid_argument if @p vector has more than one row and column, @p dtype is
///   not F32/F64 or a finite value is too large for F32.
template <class Derived>
Tensor make_vector_tensor(const Eigen::MatrixBase<Derived>& vector, DType dtype) {
  if (vector.rows() != 1 && vector.cols() != 1) {
    throw std::invalid_argument("vector has shape " + std::to_string(vector.rows()) + "x" +
                                std::to_string(vector.cols()) + ", expected a row or column");
  }
  detail::require_writable_dtype("vector", dtype);
  Tensor tensor{
      dtype, {vector.size()}, std::vector<double>(static_cast<std::size_t>(vector.size()))};
  for (Index i = 0; i < vector.size(); ++i) {
    tensor.values[static_cast<std::size_t>(i)] = static_cast<double>(vector(i));
  }
  detail::round_to_dtype(tensor.values, dtype, "vector");
  return tensor;
}

}  // namespace flowmatch::io
