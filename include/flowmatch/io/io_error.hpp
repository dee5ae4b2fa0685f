/// @file io_error.hpp
/// @brief Exception types of the file readers and writers (io/npy.hpp, io/safetensors.hpp).
///
/// A file that cannot be opened, read or written throws flowmatch::io::io_error, naming the
/// path and the reason. Content that is corrupt or not supported throws
/// flowmatch::io::format_error, naming the file (or "buffer" for in-memory data), the byte
/// offset or field, and what was expected.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace flowmatch::io {

/// A file could not be opened, read, written or renamed.
class io_error : public std::runtime_error {
 public:
  /// @param path the file concerned.
  /// @param reason what failed, e.g. "cannot open for reading: No such file or directory".
  io_error(const std::string& path, const std::string& reason)
      : std::runtime_error("'" + path + "': " + reason), path_(path) {}

  /// The file concerned.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// The content of a file or buffer is corrupt or uses a feature that is not supported.
class format_error : public std::invalid_argument {
 public:
  /// @param source the file name, or "buffer" for in-memory data.
  /// @param location where the problem is, e.g. "byte 12" or "tensor 'w', field 'shape'".
  /// @param what what was found and what was expected.
  format_error(std::string_view source, std::string_view location, std::string_view what)
      : std::invalid_argument(std::string(source) + ": " + std::string(location) + ": " +
                              std::string(what)) {}

  /// For a problem with the content as a whole, e.g. "not a safetensors file (...)".
  /// @param source the file name, or "buffer" for in-memory data.
  /// @param what what was found and what was expected.
  format_error(std::string_view source, std::string_view what)
      : std::invalid_argument(std::string(source) + ": " + std::string(what)) {}
};

}  // namespace flowmatch::io
