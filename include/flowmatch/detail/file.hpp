/// @file file.hpp
/// @brief Whole-file and byte-range reading and atomic writing (internal), shared by the file
/// formats.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "flowmatch/io/io_error.hpp"

namespace flowmatch::detail {

/// The text of the current errno value.
inline std::string errno_text() {
  return std::generic_category().message(errno);
}

/// Closes a C stream when it goes out of scope.
class FileCloser {
 public:
  explicit FileCloser(std::FILE* file) noexcept : file_(file) {}
  FileCloser(const FileCloser&) = delete;
  FileCloser& operator=(const FileCloser&) = delete;
  ~FileCloser() {
    if (file_ != nullptr) std::fclose(file_);
  }
  /// Closes the stream now; false on failure (buffered data could not be written).
  bool close() noexcept {
    std::FILE* file = file_;
    file_ = nullptr;
    return std::fclose(file) == 0;
  }

 private:
  std::FILE* file_;
};

/// All bytes of the file at @p path; throws io::io_error naming the path if it cannot be read.
inline std::vector<std::uint8_t> read_file_bytes(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) throw io::io_error(path, "cannot open for reading: " + errno_text());
  FileCloser closer(file);
  std::vector<std::uint8_t> bytes;
  constexpr std::size_t chunk = std::size_t{1} << 16;
  while (true) {
    const std::size_t old_size = bytes.size();
    bytes.resize(old_size + chunk);
    const std::size_t count = std::fread(bytes.data() + old_size, 1, chunk, file);
    bytes.resize(old_size + count);
    if (count < chunk) break;
  }
  if (std::ferror(file) != 0) throw io::io_error(path, "cannot read: " + errno_text());
  return bytes;
}

/// A file opened for reading ranges of its bytes at given offsets, so that a reader needs only
/// the parts it uses (a header, some rows) and never the whole file.
class FileRangeReader {
 public:
  /// Opens @p path; throws io::io_error naming it if it cannot be opened or sized.
  explicit FileRangeReader(std::string path)
      : path_(std::move(path)), stream_(path_, std::ios::binary) {
    if (!stream_) throw io::io_error(path_, "cannot open for reading: " + errno_text());
    stream_.seekg(0, std::ios::end);
    const std::streamoff end = stream_.tellg();
    if (!stream_ || end < 0) throw io::io_error(path_, "cannot determine the file size");
    size_ = static_cast<std::uint64_t>(end);
  }

  /// The size of the file in bytes, when it was opened.
  [[nodiscard]] std::uint64_t size() const { return size_; }

  /// The @p length bytes starting at @p offset; throws io::io_error if they cannot all be read
  /// (a read error, or the file shrank since it was opened).
  std::vector<std::uint8_t> read(std::uint64_t offset, std::size_t length) {
    std::vector<std::uint8_t> bytes(length);
    if (length == 0) return bytes;
    stream_.clear();
    stream_.seekg(static_cast<std::streamoff>(offset));
    stream_.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(length));
    if (static_cast<std::size_t>(stream_.gcount()) != length) {
      throw io::io_error(path_, "cannot read bytes " + std::to_string(offset) + " to " +
                                    std::to_string(offset + length) + " of " +
                                    std::to_string(size_));
    }
    return bytes;
  }

 private:
  std::string path_;
  std::ifstream stream_;
  std::uint64_t size_ = 0;
};

/// Deletes a temporary file when it goes out of scope, unless released.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  ~TemporaryFile() {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  [[nodiscard]] const std::string& path() const { return path_; }
  void release() { path_.clear(); }

 private:
  std::string path_;
};

/// Writes @p bytes to @p path atomically: the bytes go to a new temporary file in the same
/// directory, which is renamed over @p path only once it is complete. On failure no partial
/// file remains and io::io_error names the path and the reason.
inline void write_file_atomic(const std::string& path, std::span<const std::uint8_t> bytes) {
  std::random_device entropy;
  std::FILE* file = nullptr;
  std::string temporary_path;
  for (int attempt = 0; attempt < 100 && file == nullptr; ++attempt) {
    temporary_path = path + ".tmp" + std::to_string(entropy());
    // "x": fail rather than reuse a file that already exists.
    file = std::fopen(temporary_path.c_str(), "wbx");
    if (file == nullptr && errno != EEXIST) {
      throw io::io_error(path, "cannot create a temporary file next to it: " + errno_text());
    }
  }
  if (file == nullptr) throw io::io_error(path, "cannot find an unused temporary file name");
  TemporaryFile temporary(temporary_path);
  FileCloser closer(file);
  if (std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size()) {
    throw io::io_error(path, "cannot write the temporary file: " + errno_text());
  }
  if (!closer.close()) {
    throw io::io_error(path, "cannot write the temporary file: " + errno_text());
  }
  std::error_code error;
  std::filesystem::rename(temporary_path, path, error);
  if (error) throw io::io_error(path, "cannot replace the file: " + error.message());
  temporary.release();
}

}  // namespace flowmatch::detail
