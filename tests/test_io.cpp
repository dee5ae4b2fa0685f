// Tests of the file formats: .npy arrays and safetensors, their strictness on corrupt input and
// the PyTorch/NumPy fixture files.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/io/npy.hpp"
#include "flowmatch/io/safetensors.hpp"

namespace test_io {

namespace {

namespace io = flowmatch::io;
namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
using Catch::Matchers::StartsWith;

const std::string kFixtureDir = std::string(FLOWMATCH_TEST_DATA_DIR) + "/tiny2d/";

static_assert(std::endian::native == std::endian::little,
              "the byte-building helpers below assume a little-endian host");

// A fresh directory under the system temporary directory, removed with its content at the end.
class ScratchDirectory {
 public:
  ScratchDirectory() {
    std::random_device entropy;
    path_ = fs::temp_directory_path() / ("flowmatch_test_io_" + std::to_string(entropy()));
    fs::create_directories(path_);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;
  ~ScratchDirectory() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::size_t entry_count() const {
    return static_cast<std::size_t>(std::distance(fs::directory_iterator(path_), {}));
  }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream stream(path, std::ios::binary);
  stream.write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
}

Bytes read_bytes(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(stream), {});
}

// Appends @p size bytes at @p data (resize and copy: GCC 12 warns falsely on vector::insert).
void append(Bytes& out, const void* data, std::size_t size) {
  const std::size_t old_size = out.size();
  out.resize(old_size + size);
  if (size > 0) std::memcpy(out.data() + old_size, data, size);
}
void append(Bytes& out, const std::string& text) {
  append(out, text.data(), text.size());
}
void append(Bytes& out, const Bytes& bytes) {
  append(out, bytes.data(), bytes.size());
}

// The bytes of each value in memory (little-endian host), reversed for big-endian.
template <class T>
Bytes raw(std::initializer_list<T> values, bool big_endian = false) {
  Bytes out(values.size() * sizeof(T));
  std::size_t offset = 0;
  for (const T value : values) {
    std::memcpy(out.data() + offset, &value, sizeof(T));
    if (big_endian) std::reverse(out.begin() + offset, out.begin() + offset + sizeof(T));
    offset += sizeof(T);
  }
  return out;
}

// An .npy file assembled by hand: magic, version major.0, the header length (2 bytes for
// version 1, 4 otherwise), @p header as given followed by @p data.
Bytes npy_file(int major, const std::string& header, const Bytes& data) {
  Bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(major), 0};
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  for (std::size_t i = 0; i < length_bytes; ++i) {
    out.push_back(static_cast<std::uint8_t>(header.size() >> (8 * i)));
  }
  append(out, header);
  append(out, data);
  return out;
}

// The same with a header dict padded by spaces to 64-byte alignment and a final newline.
Bytes npy_padded(int major, const std::string& dict, const Bytes& data) {
  std::string header = dict;
  const std::size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  return npy_file(major, header + "\n", data);
}

// A safetensors file assembled by hand: 8-byte little-endian length, @p header, @p data.
Bytes safetensors_file(const std::string& header, const Bytes& data) {
  Bytes out = raw<std::uint64_t>({header.size()});
  append(out, header);
  append(out, data);
  return out;
}

Bytes repeat(std::uint8_t value, std::size_t count) {
  return Bytes(count, value);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// .npy
// ---------------------------------------------------------------------------------------------

TEST_CASE("npy round trip for every dtype, byte order, element order and version", "[npy]") {
  for (const io::NpyType type :
       {io::NpyType::f4, io::NpyType::f8, io::NpyType::i4, io::NpyType::i8}) {
    for (const std::endian order : {std::endian::little, std::endian::big}) {
      for (const bool fortran : {false, true}) {
        for (const int version : {1, 2, 3}) {
          io::NpyArray array;
          array.shape = {2, 3};
          array.type = type;
          array.byte_order = order;
          array.fortran_order = fortran;
          if (type == io::NpyType::f4) {
            // Exactly representable in float, including a subnormal and infinity.
            array.values = {0.5,  -1.25,
                            3.0,  std::ldexp(1.0, -140),
                            -0.0, std::numeric_limits<double>::infinity()};
          } else if (type == io::NpyType::f8) {
            array.values = {0.1, -1e300, std::ldexp(1.0, -1074), 2.0 / 3.0, -0.0, 7.0};
          } else if (type == io::NpyType::i4) {
            array.integers = {0, -1, 2147483647, -2147483648LL, 12345, -6};
          } else {
            array.integers = {0,
                              -1,
                              std::numeric_limits<std::int64_t>::max(),
                              std::numeric_limits<std::int64_t>::min(),
                              1LL << 40,
                              9};
          }
          CAPTURE(static_cast<int>(type), order == std::endian::big, fortran, version);
          const Bytes bytes = io::serialize_npy(array, version);
          CHECK(bytes[6] == version);
          const io::NpyArray back = io::parse_npy(bytes);
          CHECK(back.shape == array.shape);
          CHECK(back.type == type);
          CHECK(back.byte_order == order);
          CHECK(back.fortran_order == fortran);
          CHECK(back.integers == array.integers);
          REQUIRE(back.values.size() == array.values.size());
          for (std::size_t i = 0; i < array.values.size(); ++i) {
            CHECK(std::bit_cast<std::uint64_t>(back.values[i]) ==
                  std::bit_cast<std::uint64_t>(array.values[i]));
          }
        }
      }
    }
  }
}

TEST_CASE("npy shapes of zero, one and many dimensions round trip", "[npy]") {
  for (const std::vector<std::int64_t>& shape :
       {std::vector<std::int64_t>{}, {5}, {0}, {4, 0}, {1, 2, 1, 2}}) {
    io::NpyArray array;
    array.shape = shape;
    std::int64_t count = 1;
    for (const auto extent : shape) count *= extent;
    for (std::int64_t i = 0; i < count; ++i) array.values.push_back(static_cast<double>(i));
    const io::NpyArray back = io::parse_npy(io::serialize_npy(array));
    CHECK(back.shape == shape);
    CHECK(back.values == array.values);
  }
}

TEST_CASE("npy headers written by the serializer are padded to 64 bytes like numpy's", "[npy]") {
  // The fixture was written by numpy: reading and rewriting it reproduces every byte.
  const std::string fixture = kFixtureDir + "points.npy";
  ScratchDirectory scratch;
  io::save_npy(scratch.file("points.npy"), io::load_npy_batch<double>(fixture));
  CHECK(read_bytes(scratch.file("points.npy")) == read_bytes(fixture));
  for (const int version : {1, 2, 3}) {
    io::NpyArray array;
    array.shape = {3, 1, 4, 1, 5, 9, 2, 6};
    array.values.assign(3 * 4 * 5 * 9 * 2 * 6, 1.0);
    const Bytes bytes = io::serialize_npy(array, version);
    const std::size_t data_start = bytes.size() - array.values.size() * 8;
    CHECK(data_start % 64 == 0);
    CHECK(bytes[data_start - 1] == '\n');
  }
}

TEST_CASE("hand-assembled npy files in big-endian, Fortran order and versions 2 and 3", "[npy]") {
  SECTION("big-endian float64") {
    const io::NpyArray array =
        io::parse_npy(npy_padded(1, "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }",
                                 raw({1.5, -2.0, 0.1}, true)));
    CHECK(array.byte_order == std::endian::big);
    CHECK(array.values == std::vector<double>{1.5, -2.0, 0.1});
  }
  SECTION("big-endian float32 in version 2.0") {
    const io::NpyArray array = io::parse_npy(npy_padded(
        2, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", raw({0.25f, -8.0f}, true)));
    CHECK(array.type == io::NpyType::f4);
    CHECK(array.values == std::vector<double>{0.25, -8.0});
  }
  SECTION("big-endian int32 labels in version 3.0") {
    ScratchDirectory scratch;
    write_bytes(scratch.file("labels.npy"),
                npy_padded(3, "{'descr': '>i4', 'fortran_order': False, 'shape': (4,), }",
                           raw<std::int32_t>({7, -1, 0, 65536}, true)));
    CHECK(io::load_npy_labels(scratch.file("labels.npy")) ==
          std::vector<std::int64_t>{7, -1, 0, 65536});
  }
  SECTION("little-endian int64 labels of shape [N, 1]") {
    ScratchDirectory scratch;
    write_bytes(scratch.file("labels.npy"),
                npy_padded(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1), }",
                           raw<std::int64_t>({-5, 1LL << 50})));
    CHECK(io::load_npy_labels(scratch.file("labels.npy")) ==
          std::vector<std::int64_t>{-5, 1LL << 50});
  }
  SECTION("another key order, double quotes, no trailing comma, no alignment") {
    const io::NpyArray array = io::parse_npy(
        npy_file(1, "{\"shape\": (2, 1),\t\"fortran_order\": True, \"descr\": \"<i8\"}  \n",
                 raw<std::int64_t>({4, 5})));
    CHECK(array.fortran_order);
    CHECK(array.shape == std::vector<std::int64_t>{2, 1});
    CHECK(array.integers == std::vector<std::int64_t>{4, 5});
  }
}

TEST_CASE("an L×N token matrix is written as the C-order [N, L] int64 array", "[npy]") {
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic> tokens(2, 3);
  tokens << 0, 1, 2, 3, 4, -5;
  const ScratchDirectory scratch;
  const std::string path = scratch.file("tokens.npy");
  flowmatch::io::save_npy_tokens(path, tokens);
  const flowmatch::io::NpyArray array = flowmatch::io::read_npy(path);
  CHECK(array.type == flowmatch::io::NpyType::i8);
  CHECK(array.shape == std::vector<std::int64_t>{3, 2});
  CHECK(array.integers == std::vector<std::int64_t>{0, 3, 1, 4, 2, -5});
}

TEST_CASE("a C-order [N, d] array is the d×N batch; Fortran order is transposed", "[npy]") {
  // Array element (i, j) = 10 i + j for N = 3 samples in d = 2 dimensions.
  const auto element = [](int i, int j) { return 10.0 * i + j; };
  ScratchDirectory scratch;
  write_bytes(scratch.file("c.npy"),
              npy_padded(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }",
                         raw({element(0, 0), element(0, 1), element(1, 0), element(1, 1),
                              element(2, 0), element(2, 1)})));
  write_bytes(scratch.file("f.npy"),
              npy_padded(1, "{'descr': '>f4', 'fortran_order': True, 'shape': (3, 2), }",
                         raw({float(element(0, 0)), float(element(1, 0)), float(element(2, 0)),
                              float(element(0, 1)), float(element(1, 1)), float(element(2, 1))},
                             true)));
  for (const std::string name : {"c.npy", "f.npy"}) {
    CAPTURE(name);
    const flowmatch::Matrix<double> batch = io::load_npy_batch<double>(scratch.file(name));
    const flowmatch::Matrix<float> batch_float = io::load_npy_batch<float>(scratch.file(name));
    REQUIRE(batch.rows() == 2);
    REQUIRE(batch.cols() == 3);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 2; ++j) {
        CHECK(batch(j, i) == element(i, j));
        CHECK(batch_float(j, i) == static_cast<float>(element(i, j)));
      }
    }
  }
}

TEST_CASE("npy vectors, 1-D batches, saving float and double, arrays of any shape", "[npy]") {
  ScratchDirectory scratch;
  const std::string path = scratch.file("a.npy");

  flowmatch::Vector<double> vector(3);
  vector << 0.1, -2.0, 1e-310;
  io::save_npy_vector(path, vector);
  CHECK(io::read_npy(path).shape == std::vector<std::int64_t>{3});
  CHECK(io::load_npy_vector<double>(path) == vector);
  // A 1-D [N] array is the 1×N batch.
  CHECK(io::load_npy_batch<double>(path) == vector.transpose());

  flowmatch::Matrix<float> batch(2, 3);
  batch << 1.5f, 2.5f, 3.5f, -1.0f, -2.0f, -3.0f;
  io::save_npy(path, batch);
  const io::NpyArray stored = io::read_npy(path);
  CHECK(stored.type == io::NpyType::f4);
  CHECK(stored.shape == std::vector<std::int64_t>{3, 2});
  CHECK(stored.values == std::vector<double>{1.5, -1.0, 2.5, -2.0, 3.5, -3.0});
  CHECK(io::load_npy_batch<float>(path) == batch);

  // [N, 1] loads as a vector.
  io::save_npy(path, flowmatch::Matrix<double>(vector.transpose()));
  CHECK(io::read_npy(path).shape == std::vector<std::int64_t>{3, 1});
  CHECK(io::load_npy_vector<double>(path) == vector);

  const std::vector<double> trajectory = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  io::save_npy_array<double>(path, {2, 3, 2}, trajectory);
  const io::NpyArray back = io::read_npy(path);
  CHECK(back.shape == std::vector<std::int64_t>{2, 3, 2});
  CHECK(back.values == trajectory);

  io::NpyArray labels;
  labels.type = io::NpyType::i4;
  labels.shape = {2};
  labels.integers = {3, -4};
  io::write_npy(path, labels);
  CHECK(io::load_npy_labels(path) == labels.integers);
}

TEST_CASE("npy loaders reject the wrong dtype or shape", "[npy]") {
  ScratchDirectory scratch;
  const std::string labels = scratch.file("labels.npy");
  const std::string cube = scratch.file("cube.npy");
  const std::string wide = scratch.file("wide.npy");
  const std::string huge = scratch.file("huge.npy");
  io::NpyArray array;
  array.type = io::NpyType::i8;
  array.shape = {2};
  array.integers = {1, 2};
  io::write_npy(labels, array);
  io::save_npy_array<double>(cube, {1, 1, 1}, std::vector<double>{1.0});
  io::save_npy<double>(wide, flowmatch::Matrix<double>::Zero(2, 3));
  io::save_npy_vector<double>(huge, flowmatch::Vector<double>::Constant(2, 1e300));

  CHECK_THROWS_AS(io::load_npy_batch<double>(labels), io::format_error);
  CHECK_THROWS_WITH(io::load_npy_batch<double>(labels), Contains("integer dtype '<i8'"));
  CHECK_THROWS_AS(io::load_npy_vector<double>(labels), io::format_error);
  CHECK_THROWS_AS(io::load_npy_labels(wide), io::format_error);
  CHECK_THROWS_WITH(io::load_npy_labels(wide), Contains("float dtype '<f8'"));
  CHECK_THROWS_AS(io::load_npy_batch<double>(cube), io::format_error);
  CHECK_THROWS_WITH(io::load_npy_batch<double>(cube), Contains("(1, 1, 1)"));
  CHECK_THROWS_AS(io::load_npy_vector<double>(wide), io::format_error);
  CHECK_THROWS_WITH(io::load_npy_vector<double>(wide), Contains("(3, 2)"));
  CHECK_THROWS_AS(io::load_npy_labels(cube), io::format_error);
  // 1e300 is a valid double but overflows float.
  CHECK(io::load_npy_vector<double>(huge)(0) == 1e300);
  CHECK_THROWS_AS(io::load_npy_vector<float>(huge), io::format_error);
  CHECK_THROWS_AS(io::load_npy_batch<float>(huge), io::format_error);
  // The largest float and values that round to it are accepted.
  io::save_npy_vector<double>(huge, flowmatch::Vector<double>::Constant(
                                        1, static_cast<double>(std::numeric_limits<float>::max())));
  CHECK(io::load_npy_vector<float>(huge)(0) == std::numeric_limits<float>::max());
}

TEST_CASE("npy serializer and writers reject invalid arguments", "[npy]") {
  io::NpyArray array;
  array.shape = {2, 2};
  array.values = {1, 2, 3};
  CHECK_THROWS_AS(io::serialize_npy(array), std::invalid_argument);
  array.values.push_back(4);
  CHECK_THROWS_AS(io::serialize_npy(array, 4), std::invalid_argument);
  CHECK_THROWS_AS(io::serialize_npy(array, -1), std::invalid_argument);
  array.integers = {1};
  CHECK_THROWS_AS(io::serialize_npy(array), std::invalid_argument);  // integers for a float type
  array.integers.clear();
  array.shape = {-2, -2};
  CHECK_THROWS_WITH(io::serialize_npy(array), Contains("(-2, -2)"));
  array.shape = {2, 2};
  array.type = io::NpyType::f4;
  array.values[3] = 1e39;
  CHECK_THROWS_WITH(io::serialize_npy(array), Contains("too large for dtype f4"));
  array.type = io::NpyType::i4;
  array.values.clear();
  array.integers = {0, 0, 0, 1LL << 31};
  CHECK_THROWS_WITH(io::serialize_npy(array), Contains("does not fit dtype i4"));
  array.shape.assign(65, 1);
  array.integers = {0};
  CHECK_THROWS_WITH(io::serialize_npy(array), Contains("at most 64"));

  ScratchDirectory scratch;
  CHECK_THROWS_AS(io::save_npy_array<double>(scratch.file("a.npy"), {2, 2}, std::vector<double>(3)),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::save_npy_array<double>(scratch.file("a.npy"), {-1}, std::vector<double>{}),
                  std::invalid_argument);
  CHECK(scratch.entry_count() == 0);
}

TEST_CASE("corrupt npy files throw format_error", "[npy]") {
  const std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  const Bytes two = raw({1.0, 2.0});
  const auto header_of = [&](const std::string& text) { return npy_padded(1, text, two); };
  REQUIRE(io::parse_npy(header_of(dict)).values == std::vector<double>{1.0, 2.0});

  struct Case {
    const char* what;
    Bytes bytes;
    const char* message;
  };
  Bytes bad_magic = header_of(dict);
  bad_magic[1] = 'n';
  Bytes bad_version = header_of(dict);
  bad_version[6] = 4;
  Bytes bad_minor = header_of(dict);
  bad_minor[7] = 1;
  Bytes long_header = header_of(dict);
  long_header[8] = 0xFF;  // header length 0xFF76 > file
  const Bytes valid = header_of(dict);
  const std::vector<Case> cases = {
      {"empty file", {}, "bad magic"},
      {"bad magic", bad_magic, "bad magic"},
      {"truncated before the version", Bytes(valid.begin(), valid.begin() + 7), "version"},
      {"unsupported version", bad_version, "version 4.0"},
      {"unsupported minor version", bad_minor, "version 1.1"},
      {"truncated header length", Bytes(valid.begin(), valid.begin() + 9), "header length"},
      {"truncated header", Bytes(valid.begin(), valid.begin() + 40), "beyond the end"},
      {"header length beyond the file", long_header, "beyond the end"},
      {"oversized header", npy_file(2, std::string(2'000'000, ' ') + "\n", {}), "exceeds"},
      {"empty header", npy_file(1, "", {}), "not terminated"},
      {"unterminated header", npy_file(1, dict + "    ", two), "not terminated"},
      {"missing key", header_of("{'descr': '<f8', 'shape': (2,), }"),
       "missing key 'fortran_order'"},
      {"missing descr", header_of("{'fortran_order': False, 'shape': (2,)}"),
       "missing key 'descr'"},
      {"missing shape", header_of("{'descr': '<f8', 'fortran_order': False}"),
       "missing key 'shape'"},
      {"unknown key", header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
       "unknown key 'x'"},
      {"duplicate key",
       header_of("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, "
                 "'shape': (2,)}"),
       "duplicate key 'descr'"},
      {"unknown dtype", header_of("{'descr': '<u1', 'fortran_order': False, 'shape': (2,), }"),
       "unsupported dtype '<u1'"},
      {"native-order dtype", header_of("{'descr': '=f8', 'fortran_order': False, 'shape': (2,)}"),
       "unsupported dtype '=f8'"},
      {"negative shape", header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (-2,), }"),
       "non-negative"},
      {"shape entry beyond int64",
       header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775808,), }"),
       "64-bit"},
      {"overflowing shape product",
       header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
       "overflows"},
      {"element bytes overflow",
       header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }"),
       "overflows"},
      {"leading zero", header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (02,), }"),
       "leading zeros"},
      {"one-element tuple without comma",
       header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (2), }"), "expected ','"},
      {"shape as a list", header_of("{'descr': '<f8', 'fortran_order': False, 'shape': [2], }"),
       "unexpected character"},
      {"fortran_order not a bool",
       header_of("{'descr': '<f8', 'fortran_order': 0, 'shape': (2,), }"), "True or False"},
      {"lower-case bool", header_of("{'descr': '<f8', 'fortran_order': false, 'shape': (2,), }"),
       "unexpected name 'false'"},
      {"non-dict header", header_of("[1, 2]"), "unexpected character with code 91"},
      {"a set, not a dict", header_of("('descr', '<f8')"), "expected '{'"},
      {"unterminated dict", header_of("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), "),
       "found the end of the header"},
      {"missing colon", header_of("{'descr' '<f8', 'fortran_order': False, 'shape': (2,), }"),
       "expected ':'"},
      {"missing comma", header_of("{'descr': '<f8' 'fortran_order': False, 'shape': (2,), }"),
       "expected ',' or '}'"},
      {"misplaced quote", header_of("{'descr: '<f8', 'fortran_order': False}"),
       "unexpected character with code 60"},
      {"string to the end", header_of("{'descr': '<f8"), "unterminated string"},
      {"escape in a string", header_of("{'descr': '<f\\x38', 'fortran_order': False}"),
       "unsupported character"},
      {"text after the dict", header_of(dict + " x"), "unexpected name 'x'"},
      {"a second dict", header_of(dict + "{}"), "only spaces"},
      {"newline inside the header", header_of("{'descr': '<f8',\n'fortran_order': False}"),
       "unexpected character with code 10"},
      {"data too short", npy_padded(1, dict, raw({1.0})), "data too short"},
      {"trailing data", npy_padded(1, dict, raw({1.0, 2.0, 3.0})), "trailing data"},
      {"half an element", npy_padded(1, dict, Bytes(12, 0)), "data too short"},
  };
  for (const Case& test : cases) {
    CAPTURE(test.what);
    CHECK_THROWS_AS(io::parse_npy(test.bytes), io::format_error);
    CHECK_THROWS_WITH(io::parse_npy(test.bytes), Contains("buffer: ") && Contains(test.message));
  }
}

TEST_CASE("npy errors name the file and the byte offset", "[npy]") {
  ScratchDirectory scratch;
  const std::string path = scratch.file("bad.npy");
  write_bytes(path, npy_padded(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                               raw({1.0, 2.0})));
  // The unknown key 'x' starts at byte 10 + 56.
  CHECK_THROWS_WITH(io::read_npy(path), Contains(path + ": header byte 66: unknown key 'x'"));
}

TEST_CASE("npy file errors throw io_error and never leave partial files", "[npy]") {
  ScratchDirectory scratch;
  CHECK_THROWS_AS(io::read_npy(scratch.file("missing.npy")), io::io_error);
  CHECK_THROWS_WITH(io::read_npy(scratch.file("missing.npy")),
                    Contains("missing.npy") && Contains("No such file"));
  CHECK_THROWS_AS(io::load_npy_batch<double>(scratch.file("missing.npy")), io::io_error);
  CHECK_THROWS_AS(io::load_npy_labels(scratch.file("missing.npy")), io::io_error);
  CHECK_THROWS_AS(io::read_npy(scratch.file("")), io::io_error);  // a directory

  const flowmatch::Matrix<double> batch = flowmatch::Matrix<double>::Ones(2, 2);
  CHECK_THROWS_AS(io::save_npy(scratch.file("no/such/dir.npy"), batch), io::io_error);
  // The target is a non-empty directory: renaming over it fails after the data were written.
  fs::create_directories(scratch.file("target/inner"));
  CHECK_THROWS_AS(io::save_npy(scratch.file("target"), batch), io::io_error);
  CHECK(scratch.entry_count() == 1);  // only the directory itself, no temporary file

  // Overwriting an existing file replaces it completely.
  const std::string path = scratch.file("a.npy");
  io::save_npy<double>(path, flowmatch::Matrix<double>::Ones(3, 50));
  io::save_npy(path, batch);
  CHECK(io::load_npy_batch<double>(path) == batch);
  CHECK(scratch.entry_count() == 2);
}

TEST_CASE("the fixture npy files have the documented shapes", "[npy][fixture]") {
  const auto shape_of = [](const std::string& name) {
    const io::NpyArray array = io::read_npy(kFixtureDir + name);
    CHECK(array.type == io::NpyType::f8);
    CHECK_FALSE(array.fortran_order);
    return array.shape;
  };
  using Shape = std::vector<std::int64_t>;
  CHECK(shape_of("points.npy") == Shape{16, 2});
  CHECK(shape_of("times.npy") == Shape{16});
  CHECK(shape_of("velocity.npy") == Shape{16, 2});
  CHECK(shape_of("divergence.npy") == Shape{16});
  CHECK(shape_of("x0.npy") == Shape{64, 2});
  CHECK(shape_of("samples_midpoint_h0.1.npy") == Shape{64, 2});
  CHECK(shape_of("samples_dopri5_tol1e-10.npy") == Shape{64, 2});

  const flowmatch::Matrix<double> points = io::load_npy_batch<double>(kFixtureDir + "points.npy");
  CHECK(points.rows() == 2);
  CHECK(points.cols() == 16);
  const flowmatch::Vector<double> times = io::load_npy_vector<double>(kFixtureDir + "times.npy");
  CHECK(times.size() == 16);
  CHECK(times.minCoeff() >= 0.0);
  CHECK(times.maxCoeff() <= 1.0);
  // Element (i, j) of the file is the double at data offset 8 (2 i + j) after the 128-byte
  // header (checked on the raw bytes, independently of the parser).
  const Bytes bytes = read_bytes(kFixtureDir + "points.npy");
  REQUIRE(bytes.size() == 128 + 16 * 2 * 8);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 2; ++j) {
      double value = 0.0;
      std::memcpy(&value, bytes.data() + 128 + 8 * (2 * i + j), 8);
      CHECK(points(j, i) == value);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------------------------

TEST_CASE("safetensors round trip in F64 and F32 with metadata", "[safetensors]") {
  std::mt19937_64 generator(7);
  std::normal_distribution<double> normal;
  io::SafeTensors file;
  file.metadata = {{"activation", "silu"}, {"note", "ünïcødé \"quoted\""}, {"", ""}};
  io::Tensor weights{io::DType::F64, {3, 4}, {}};
  io::Tensor bias{io::DType::F32, {4}, {}};
  for (int i = 0; i < 12; ++i) weights.values.push_back(normal(generator));
  for (int i = 0; i < 4; ++i) bias.values.push_back(normal(generator));
  bias.values[3] = 0.1;  // not a float: stored as the nearest float
  file.tensors["layer.weight"] = weights;
  file.tensors["layer.bias"] = bias;
  file.tensors["empty"] = io::Tensor{io::DType::F32, {0, 5}, {}};
  file.tensors["scalar"] = io::Tensor{io::DType::F64, {}, {-0.5}};

  const Bytes bytes = io::serialize_safetensors(file);
  // The header is padded so that the data buffer starts 8-byte aligned.
  CHECK((bytes[0] | (bytes[1] << 8)) % 8 == 0);
  const io::SafeTensors back = io::parse_safetensors(bytes);
  CHECK(back.metadata == file.metadata);
  REQUIRE(back.tensors.size() == 4);
  CHECK(back.tensors.at("layer.weight").dtype == io::DType::F64);
  CHECK(back.tensors.at("layer.weight").shape == weights.shape);
  CHECK(back.tensors.at("layer.weight").values == weights.values);
  const io::Tensor& bias_back = back.tensors.at("layer.bias");
  CHECK(bias_back.dtype == io::DType::F32);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(bias_back.values[i] == static_cast<double>(static_cast<float>(bias.values[i])));
  }
  CHECK(bias_back.values[3] != 0.1);
  CHECK_THAT(bias_back.values[3], Catch::Matchers::WithinRel(0.1, 6e-8));
  CHECK(back.tensors.at("empty").shape == std::vector<std::int64_t>{0, 5});
  CHECK(back.tensors.at("empty").values.empty());
  CHECK(back.tensors.at("scalar").values == std::vector<double>{-0.5});

  ScratchDirectory scratch;
  io::write_safetensors(scratch.file("model.safetensors"), file);
  CHECK(read_bytes(scratch.file("model.safetensors")) == bytes);
  CHECK(io::read_safetensors(scratch.file("model.safetensors")).metadata == file.metadata);
  CHECK(scratch.entry_count() == 1);
}

TEST_CASE("F16 and BF16 tensors decode bit-exactly", "[safetensors]") {
  const double inf = std::numeric_limits<double>::infinity();
  // binary16: sign, 5 exponent bits (bias 15), 10 fraction bits.
  const std::vector<std::uint16_t> half_bits = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF,
                                                0x3555, 0x8000, 0x7C00, 0xFC00, 0x7E00};
  const std::vector<double> half_values = {1.0,
                                           -2.0,
                                           std::ldexp(1.0, -24),         // smallest subnormal
                                           1023 * std::ldexp(1.0, -24),  // largest subnormal
                                           std::ldexp(1.0, -14),         // smallest normal
                                           65504.0,                      // largest finite
                                           1365.0 / 4096.0,              // 0x155 fraction, e = 13
                                           -0.0,
                                           inf,
                                           -inf,
                                           0.0 /* NaN, checked below */};
  // bfloat16: the upper half of binary32 (8 exponent bits, bias 127, 7 fraction bits).
  const std::vector<std::uint16_t> bf16_bits = {0x3F80, 0xC000, 0x4049, 0x0001,
                                                0x7F7F, 0xFF80, 0x7FC0};
  const std::vector<double> bf16_values = {1.0,
                                           -2.0,
                                           3.140625,                    // 1.5703125 · 2
                                           std::ldexp(1.0, -133),       // smallest subnormal
                                           255 * std::ldexp(1.0, 120),  // largest finite
                                           -inf,
                                           0.0 /* NaN */};
  Bytes data;
  for (const auto bits : half_bits) append(data, raw<std::uint16_t>({bits}));
  for (const auto bits : bf16_bits) append(data, raw<std::uint16_t>({bits}));
  const std::string header = R"({"h":{"dtype":"F16","shape":[11],"data_offsets":[0,22]},)"
                             R"("b":{"shape":[7],"dtype":"BF16","data_offsets":[22,36]}})";
  const io::SafeTensors file = io::parse_safetensors(safetensors_file(header, data));
  const io::Tensor& half = file.tensors.at("h");
  const io::Tensor& bf16 = file.tensors.at("b");
  CHECK(half.dtype == io::DType::F16);
  CHECK(bf16.dtype == io::DType::BF16);
  for (std::size_t i = 0; i + 1 < half_values.size(); ++i) {
    CAPTURE(i);
    CHECK(std::bit_cast<std::uint64_t>(half.values[i]) ==
          std::bit_cast<std::uint64_t>(half_values[i]));
  }
  CHECK(std::isnan(half.values.back()));
  for (std::size_t i = 0; i + 1 < bf16_values.size(); ++i) {
    CAPTURE(i);
    CHECK(bf16.values[i] == bf16_values[i]);
  }
  CHECK(std::isnan(bf16.values.back()));

  // Read only: writing F16 or BF16 is refused.
  io::SafeTensors copy = file;
  CHECK_THROWS_WITH(io::serialize_safetensors(copy), Contains("only F32 and F64"));
}

TEST_CASE("tensors convert to and from Eigen matrices in C order", "[safetensors]") {
  const io::Tensor tensor{io::DType::F32, {2, 3}, {1, 2, 3, 4, 5, 6}};
  const flowmatch::Matrix<double> matrix = io::tensor_matrix<double>(tensor);
  REQUIRE(matrix.rows() == 2);
  REQUIRE(matrix.cols() == 3);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) CHECK(matrix(i, j) == tensor.values[3 * i + j]);
  }
  CHECK(io::tensor_matrix<float>(tensor) == matrix.cast<float>());

  const io::Tensor made = io::make_tensor(matrix, io::DType::F64);
  CHECK(made.shape == tensor.shape);
  CHECK(made.values == tensor.values);
  flowmatch::Matrix<double> tenth(1, 2);
  tenth << 0.1, -1e-3;
  const io::Tensor rounded = io::make_tensor(tenth, io::DType::F32);
  CHECK(rounded.values[0] == static_cast<double>(0.1f));
  CHECK(rounded.values[1] == static_cast<double>(-1e-3f));

  const io::Tensor bias{io::DType::F64, {3}, {0.5, -0.25, 8}};
  const flowmatch::Vector<double> vector = io::tensor_vector<double>(bias);
  CHECK(io::make_vector_tensor(vector, io::DType::F64).values == bias.values);
  CHECK(io::make_vector_tensor(vector.transpose(), io::DType::F64).shape ==
        std::vector<std::int64_t>{3});
  CHECK(io::tensor_vector<float>(bias) == vector.cast<float>());

  CHECK_THROWS_AS(io::tensor_matrix<double>(bias, "0.bias"), std::invalid_argument);
  CHECK_THROWS_WITH(io::tensor_matrix<double>(bias, "0.bias"),
                    Contains("0.bias") && Contains("(3,)"));
  CHECK_THROWS_AS(io::tensor_vector<double>(tensor), std::invalid_argument);
  CHECK_THROWS_AS(io::tensor_vector<double>(io::Tensor{io::DType::F64, {4}, {1, 2}}),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::tensor_matrix<double>(io::Tensor{io::DType::F64, {-1, -1}, {1}}),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::tensor_vector<float>(io::Tensor{io::DType::F64, {1}, {1e300}}),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::make_tensor(matrix, io::DType::F16), std::invalid_argument);
  CHECK_THROWS_AS(io::make_tensor(tenth * 1e300, io::DType::F32), std::invalid_argument);
  CHECK_THROWS_AS(io::make_vector_tensor(matrix, io::DType::F64), std::invalid_argument);
  CHECK_THROWS_AS(io::make_vector_tensor(vector, io::DType::BF16), std::invalid_argument);
}

TEST_CASE("safetensors serializer rejects what it cannot write", "[safetensors]") {
  const auto with = [](const std::string& name, io::Tensor tensor) {
    io::SafeTensors file;
    file.tensors[name] = std::move(tensor);
    return file;
  };
  CHECK_THROWS_AS(io::serialize_safetensors(with("__metadata__", {io::DType::F64, {1}, {1}})),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::serialize_safetensors(with("w", {io::DType::F16, {1}, {1}})),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::serialize_safetensors(with("w", {io::DType::F64, {2}, {1}})),
                  std::invalid_argument);
  CHECK_THROWS_AS(io::serialize_safetensors(with("w", {io::DType::F64, {-1}, {}})),
                  std::invalid_argument);
  CHECK_THROWS_WITH(io::serialize_safetensors(with("w", {io::DType::F32, {1}, {1e39}})),
                    Contains("too large for F32"));
  CHECK_THROWS_AS(io::serialize_safetensors(with("\xff", {io::DType::F64, {1}, {1}})),
                  std::invalid_argument);
  ScratchDirectory scratch;
  CHECK_THROWS_AS(io::write_safetensors(scratch.file("x"), with("w", {io::DType::BF16, {}, {1}})),
                  std::invalid_argument);
  CHECK(scratch.entry_count() == 0);
}

TEST_CASE("corrupt safetensors files throw format_error", "[safetensors]") {
  const Bytes eight = raw({1.0});
  const auto one = [&](const std::string& entry) {
    return safetensors_file(R"({"t":)" + entry + "}", eight);
  };
  const std::string good = R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})";
  REQUIRE(io::parse_safetensors(one(good)).tensors.at("t").values == std::vector<double>{1.0});

  struct Case {
    const char* what;
    Bytes bytes;
    const char* message;
  };
  const auto length_then = [](std::uint64_t length, const Bytes& rest) {
    Bytes out = raw<std::uint64_t>({length});
    append(out, rest);
    return out;
  };
  const std::vector<Case> cases = {
      {"empty file", {}, "shorter than the 8-byte header length"},
      {"truncated length", Bytes{2, 0, 0}, "shorter than the 8-byte"},
      {"header length above the limit", length_then(100'000'001, repeat(' ', 16)),
       "not a safetensors file (header length 100000001 at byte 0 exceeds the limit"},
      {"header length near 2^64", length_then(~std::uint64_t{0} - 3, repeat(' ', 16)),
       "not a safetensors file (header length 18446744073709551612 at byte 0 exceeds"},
      {"header length beyond the file", length_then(40, Bytes{'{', '}'}),
       "not a safetensors file (header length 40 at byte 0 extends beyond the end: 2 bytes"},
      {"empty header", safetensors_file("", {}), "invalid JSON"},
      {"invalid JSON", safetensors_file(R"({"t": )", {}), "invalid JSON"},
      {"trailing garbage", safetensors_file("{} x", {}), "invalid JSON"},
      {"NUL padding", safetensors_file(std::string("{}\0\0", 4), {}), "NUL byte at header byte 10"},
      {"text after NUL", safetensors_file(std::string("{}\0x", 4), {}), "NUL byte"},
      {"number too large for a double",
       one(R"({"dtype":"F64","shape":[1e400],"data_offsets":[0,8]})"), "invalid JSON"},
      {"header not an object", safetensors_file("[1, 2]", {}),
       "not a safetensors file (header byte 8 is '[', expected '{'"},
      {"header opening with a letter after spaces", safetensors_file("  x", {}),
       "not a safetensors file (header byte 10 is 'x'"},
      {"header opening with a binary byte", safetensors_file("\x93{}", {}),
       "not a safetensors file (header byte 8 is 0x93"},
      {"tensor not an object", one("[1]"), "is a array"},
      {"metadata not an object", safetensors_file(R"({"__metadata__": "x"})", {}),
       "expected an object of strings"},
      {"metadata value not a string", safetensors_file(R"({"__metadata__": {"a": 1}})", {}),
       "entry 'a' is a number"},
      {"duplicate tensor names",
       safetensors_file(R"({"t":{"dtype":"F64","shape":[0],"data_offsets":[0,0]},)"
                        R"("t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                        eight),
       "duplicate key 't'"},
      {"duplicate field", one(R"({"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,8]})"),
       "duplicate key 'dtype'"},
      {"duplicate metadata key", safetensors_file(R"({"__metadata__":{"a":"1","a":"2"}})", {}),
       "duplicate key 'a'"},
      {"nesting too deep", one(R"({"dtype":"F64","shape":[[1]],"data_offsets":[0,8]})"),
       "nested deeper"},
      {"unknown dtype", one(R"({"dtype":"F17","shape":[1],"data_offsets":[0,8]})"),
       "unknown dtype 'F17'"},
      {"unsupported dtype", one(R"({"dtype":"I64","shape":[1],"data_offsets":[0,8]})"),
       "unsupported dtype 'I64'"},
      {"dtype not a string", one(R"({"dtype":8,"shape":[1],"data_offsets":[0,8]})"),
       "'dtype' is not a string"},
      {"missing dtype", one(R"({"shape":[1],"data_offsets":[0,8]})"), "missing field 'dtype'"},
      {"missing shape", one(R"({"dtype":"F64","data_offsets":[0,8]})"), "missing field 'shape'"},
      {"missing offsets", one(R"({"dtype":"F64","shape":[1]})"), "missing field 'data_offsets'"},
      {"unknown field", one(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8],"x":0})"),
       "unknown field 'x'"},
      {"shape not an array", one(R"({"dtype":"F64","shape":1,"data_offsets":[0,8]})"),
       "'shape' is not an array"},
      {"negative shape", one(R"({"dtype":"F64","shape":[-1],"data_offsets":[0,8]})"),
       "non-negative integer"},
      {"fractional shape", one(R"({"dtype":"F64","shape":[1.0],"data_offsets":[0,8]})"),
       "non-negative integer"},
      {"shape entry a string", one(R"({"dtype":"F64","shape":["1"],"data_offsets":[0,8]})"),
       "holds string"},
      {"shape entry beyond int64",
       one(R"({"dtype":"F64","shape":[9223372036854775808],"data_offsets":[0,8]})"),
       "non-negative integer"},
      {"overflowing shape product",
       one(R"({"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]})"), "overflows"},
      {"overflowing byte size",
       one(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})"), "overflows"},
      {"one offset", one(R"({"dtype":"F64","shape":[1],"data_offsets":[8]})"),
       "not an array of two integers"},
      {"three offsets", one(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8,8]})"),
       "not an array of two integers"},
      {"negative offset", one(R"({"dtype":"F64","shape":[1],"data_offsets":[-8,0]})"),
       "non-negative integer"},
      {"offset beyond uint64",
       one(R"({"dtype":"F64","shape":[1],"data_offsets":[0,18446744073709551616]})"),
       "non-negative integer"},
      {"begin after end", one(R"({"dtype":"F64","shape":[0],"data_offsets":[8,0]})"),
       "begin > end"},
      {"size mismatch", one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,8]})"), "need 4"},
      {"huge offsets",
       one(R"({"dtype":"F64","shape":[1],"data_offsets":[18446744073709551608,18446744073709551615]})"),
       "span 7 bytes"},
      {"gap before the first tensor",
       safetensors_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
       "expected 0 (gap)"},
      {"overlapping tensors",
       safetensors_file(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        eight),
       "(overlap)"},
      {"data buffer longer than the tensors",
       safetensors_file(R"({"t":)" + good + "}", raw({1.0, 2.0})),
       "cover 8 bytes of the data buffer, which holds 16"},
      {"data buffer shorter than the tensors",
       safetensors_file(R"({"t":)" + good + "}", raw({1.0f})), "which holds 4"},
      {"data without tensors", safetensors_file("{}", eight), "which holds 8"},
  };
  for (const Case& test : cases) {
    CAPTURE(test.what);
    CHECK_THROWS_AS(io::parse_safetensors(test.bytes), io::format_error);
    CHECK_THROWS_WITH(io::parse_safetensors(test.bytes),
                      Contains("buffer: ") && Contains(test.message));
  }
}

TEST_CASE("safetensors accepts edge cases of a valid layout", "[safetensors]") {
  // No tensors at all; whitespace around the JSON; zero-size tensors sharing an offset.
  CHECK(io::parse_safetensors(safetensors_file(" { }  ", {})).tensors.empty());
  const io::SafeTensors file = io::parse_safetensors(
      safetensors_file(R"({"z1":{"dtype":"F64","shape":[0,3],"data_offsets":[8,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                       R"("z0":{"dtype":"BF16","shape":[2,0],"data_offsets":[0,0]},)"
                       R"("a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})",
                       [] {
                         Bytes data = raw({-3.5});
                         const Bytes tail = raw({0.75f});
                         append(data, tail);
                         return data;
                       }()));
  CHECK(file.tensors.size() == 4);
  CHECK(file.tensors.at("a").values == std::vector<double>{-3.5});
  CHECK(file.tensors.at("b").values == std::vector<double>{0.75});
  CHECK(file.tensors.at("z1").values.empty());
}

TEST_CASE("files of other kinds are reported as not safetensors files", "[safetensors]") {
  ScratchDirectory scratch;
  // What the first 8 bytes of @p bytes give as a header length (little-endian host).
  const auto length_of = [](const Bytes& bytes) {
    std::uint64_t length = 0;
    std::memcpy(&length, bytes.data(), sizeof length);
    return length;
  };
  std::mt19937_64 generator(20240611);
  Bytes noise(256);
  for (std::uint8_t& byte : noise) byte = static_cast<std::uint8_t>(generator());
  Bytes text;
  append(text, std::string("x,y\n0.25,-1.5\n3.0,4.0\n"));
  struct Case {
    const char* name;
    Bytes bytes;
  };
  const std::vector<Case> cases = {
      {"points.csv", text},
      {"points.npy", read_bytes(kFixtureDir + "points.npy")},
      {"noise.bin", noise},
  };
  for (const Case& test : cases) {
    CAPTURE(test.name);
    REQUIRE(test.bytes.size() >= 8);
    const std::string path = scratch.file(test.name);
    write_bytes(path, test.bytes);
    CHECK_THROWS_AS(io::read_safetensors(path), io::format_error);
    CHECK_THROWS_WITH(io::read_safetensors(path),
                      StartsWith(path + ": not a safetensors file (header length " +
                                 std::to_string(length_of(test.bytes)) + " at byte 0 exceeds"));
  }
  // A plausible length, but a header that is not a JSON object.
  const std::string path = scratch.file("list.json");
  write_bytes(path, safetensors_file("[\"w\"]", {}));
  CHECK_THROWS_AS(io::read_safetensors(path), io::format_error);
  CHECK_THROWS_WITH(io::read_safetensors(path),
                    Equals(path + ": not a safetensors file (header byte 8 is '[', expected '{' " +
                           "to open the JSON header)"));
}

TEST_CASE("safetensors file errors throw io_error", "[safetensors]") {
  ScratchDirectory scratch;
  CHECK_THROWS_AS(io::read_safetensors(scratch.file("missing.safetensors")), io::io_error);
  CHECK_THROWS_WITH(io::read_safetensors(scratch.file("missing.safetensors")),
                    Contains("missing.safetensors"));
  CHECK_THROWS_AS(io::write_safetensors(scratch.file("no/dir/x.safetensors"), {}), io::io_error);
  write_bytes(scratch.file("bad.safetensors"), {1, 2, 3});
  CHECK_THROWS_WITH(io::read_safetensors(scratch.file("bad.safetensors")),
                    Contains(scratch.file("bad.safetensors") + ": byte 0"));
}

TEST_CASE("the PyTorch fixture model has the documented tensors and metadata",
          "[safetensors][fixture]") {
  const std::string path = kFixtureDir + "model.safetensors";
  const io::SafeTensors file = io::read_safetensors(path);
  const std::map<std::string, std::string> metadata = {
      {"activation", "silu"}, {"input_order", "x,t"}, {"dim", "2"},
      {"cond_dim", "0"},      {"hidden", "32"},       {"layers", "2"}};
  CHECK(file.metadata == metadata);
  using Shape = std::vector<std::int64_t>;
  const std::map<std::string, Shape> shapes = {{"0.weight", {32, 3}},  {"0.bias", {32}},
                                               {"2.weight", {32, 32}}, {"2.bias", {32}},
                                               {"4.weight", {2, 32}},  {"4.bias", {2}}};
  REQUIRE(file.tensors.size() == shapes.size());
  for (const auto& [name, shape] : shapes) {
    CAPTURE(name);
    const io::Tensor& tensor = file.tensors.at(name);
    CHECK(tensor.dtype == io::DType::F32);
    CHECK(tensor.shape == shape);
    CHECK(std::all_of(tensor.values.begin(), tensor.values.end(),
                      [](double v) { return std::isfinite(v) && std::abs(v) < 1.0; }));
  }
  // The first weight is the float at the start of the data buffer (read here from the raw
  // bytes: 8-byte length n, n header bytes, then 0.weight at data offset 0).
  const Bytes bytes = read_bytes(path);
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  float first = 0.0f;
  std::memcpy(&first, bytes.data() + 8 + header_length, 4);
  const flowmatch::Matrix<double> weight = io::tensor_matrix<double>(file.tensors.at("0.weight"));
  CHECK(weight(0, 0) == static_cast<double>(first));
  float second = 0.0f;  // row 0, column 1 in C order
  std::memcpy(&second, bytes.data() + 8 + header_length + 4, 4);
  CHECK(weight(0, 1) == static_cast<double>(second));

  // Rewriting it keeps every tensor and the metadata.
  const io::SafeTensors again = io::parse_safetensors(io::serialize_safetensors(file));
  CHECK(again.metadata == file.metadata);
  for (const auto& [name, tensor] : file.tensors) {
    CHECK(again.tensors.at(name).values == tensor.values);
  }
}

// ---------------------------------------------------------------------------------------------
// .npy row ranges
// ---------------------------------------------------------------------------------------------

TEST_CASE("npy row ranges equal the columns of the whole batch", "[npy][rows]") {
  ScratchDirectory scratch;
  // Array element (i, j) = 10 i + j + 0.25 for N = 5 samples in d = 3 dimensions.
  const auto element = [](int i, int j) { return 10.0 * i + j + 0.25; };
  std::vector<double> c_order, fortran_order;
  std::vector<float> c_order_float;
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 3; ++j) {
      c_order.push_back(element(i, j));
      c_order_float.push_back(static_cast<float>(element(i, j)));
    }
  }
  for (int j = 0; j < 3; ++j) {
    for (int i = 0; i < 5; ++i) fortran_order.push_back(element(i, j));
  }
  const auto bytes_of = [](const auto& values, bool big_endian) {
    Bytes out;
    for (const auto value : values) append(out, raw({value}, big_endian));
    return out;
  };
  write_bytes(scratch.file("c.npy"),
              npy_padded(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 3), }",
                         bytes_of(c_order, false)));
  write_bytes(scratch.file("c_float.npy"),
              npy_padded(2, "{'descr': '>f4', 'fortran_order': False, 'shape': (5, 3), }",
                         bytes_of(c_order_float, true)));
  write_bytes(scratch.file("fortran.npy"),
              npy_padded(1, "{'descr': '>f8', 'fortran_order': True, 'shape': (5, 3), }",
                         bytes_of(fortran_order, true)));
  write_bytes(scratch.file("vector.npy"),
              npy_padded(3, "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }",
                         bytes_of(std::vector<double>{1.5, -2.0, 3.25, 0.0, 7.0}, false)));
  for (const std::string name : {"c.npy", "c_float.npy", "fortran.npy", "vector.npy"}) {
    CAPTURE(name);
    const std::string path = scratch.file(name);
    const flowmatch::Matrix<double> whole = io::load_npy_batch<double>(path);
    const flowmatch::Matrix<float> whole_float = io::load_npy_batch<float>(path);
    const flowmatch::Index count = whole.cols();
    REQUIRE(count == 5);
    for (flowmatch::Index first = 0; first <= count; ++first) {
      for (flowmatch::Index rows = 0; first + rows <= count; ++rows) {
        CAPTURE(first, rows);
        const flowmatch::Matrix<double> slice = io::load_npy_batch_rows<double>(path, first, rows);
        REQUIRE(slice.rows() == whole.rows());
        REQUIRE(slice.cols() == rows);
        CHECK(slice == whole.middleCols(first, rows));
        CHECK(io::load_npy_batch_rows<float>(path, first, rows) ==
              whole_float.middleCols(first, rows));
      }
    }
  }
  // The whole batch holds the values written (so the slices are not merely self-consistent).
  const flowmatch::Matrix<double> whole = io::load_npy_batch<double>(scratch.file("fortran.npy"));
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 3; ++j) CHECK(whole(j, i) == element(i, j));
  }
}

TEST_CASE("npy headers are read without the elements", "[npy][rows]") {
  ScratchDirectory scratch;
  const std::string path = scratch.file("points.npy");
  write_bytes(path, npy_padded(2, "{'descr': '>f4', 'fortran_order': True, 'shape': (4, 2), }",
                               repeat(0, 4 * 2 * 4)));
  const io::NpyHeader header = io::read_npy_header(path);
  CHECK(header.type == io::NpyType::f4);
  CHECK(header.byte_order == std::endian::big);
  CHECK(header.fortran_order);
  CHECK(header.shape == std::vector<std::int64_t>{4, 2});
  const io::NpyHeader fixture = io::read_npy_header(kFixtureDir + "x0.npy");
  CHECK(fixture.shape == std::vector<std::int64_t>{64, 2});
  CHECK(fixture.type == io::NpyType::f8);
}

TEST_CASE("npy row ranges reject requests outside the file and bad files", "[npy][rows]") {
  ScratchDirectory scratch;
  const std::string path = scratch.file("points.npy");
  io::save_npy<double>(path, flowmatch::Matrix<double>::Ones(2, 4));
  for (const auto& [first, rows] : std::vector<std::pair<flowmatch::Index, flowmatch::Index>>{
           {-1, 1}, {0, -1}, {0, 5}, {3, 2}, {4, 1}, {5, 0}, {1, 4}}) {
    CAPTURE(first, rows);
    CHECK_THROWS_AS(io::load_npy_batch_rows<double>(path, first, rows), std::invalid_argument);
  }
  CHECK_THROWS_WITH(io::load_npy_batch_rows<double>(path, 3, 2),
                    Contains("first_row and row_count are 3 and 2") && Contains("the 4 rows of"));
  CHECK(io::load_npy_batch_rows<double>(path, 4, 0).cols() == 0);

  // The file errors of the whole-file loader, found from the header alone.
  CHECK_THROWS_AS(io::load_npy_batch_rows<double>(scratch.file("missing.npy"), 0, 0), io::io_error);
  CHECK_THROWS_AS(io::read_npy_header(scratch.file("missing.npy")), io::io_error);
  const std::string labels = scratch.file("labels.npy");
  write_bytes(labels, npy_padded(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                                 raw<std::int64_t>({1, 2})));
  CHECK_THROWS_AS(io::load_npy_batch_rows<double>(labels, 0, 1), io::format_error);
  const std::string cube = scratch.file("cube.npy");
  write_bytes(cube, npy_padded(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1), }",
                               raw({1.0})));
  CHECK_THROWS_WITH(io::load_npy_batch_rows<double>(cube, 0, 1),
                    Contains("is not a batch of points"));
  // A file one element short: the size check on the header catches it before any row is read.
  const std::string truncated = scratch.file("truncated.npy");
  write_bytes(truncated,
              npy_padded(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                         raw({1.0, 2.0, 3.0})));
  CHECK_THROWS_AS(io::load_npy_batch_rows<double>(truncated, 0, 1), io::format_error);
  CHECK_THROWS_WITH(io::read_npy_header(truncated), Contains("data too short"));
  write_bytes(truncated, Bytes{0x93, 'N', 'U', 'M'});
  CHECK_THROWS_WITH(io::read_npy_header(truncated), Contains("bad magic string"));
  CHECK_THROWS_AS(io::read_npy_header(scratch.file("")), io::io_error);  // a directory

  // Only the rows read are converted: a value too large for float in row 2 (element 4 of the
  // file) fails the whole load and the rows that include it, not the others.
  const std::string huge = scratch.file("huge.npy");
  write_bytes(huge, npy_padded(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), }",
                               raw({0.0, 1.0, 2.0, 3.0, 1e300, 5.0, 6.0, 7.0})));
  CHECK_THROWS_AS(io::load_npy_batch<float>(huge), io::format_error);
  CHECK_THROWS_WITH(io::load_npy_batch_rows<float>(huge, 1, 2), Contains("element 4"));
  CHECK(io::load_npy_batch_rows<float>(huge, 0, 2) ==
        io::load_npy_batch<double>(huge).leftCols(2).cast<float>());
  CHECK(io::load_npy_batch_rows<float>(huge, 3, 1) ==
        io::load_npy_batch<double>(huge).rightCols(1).cast<float>());
}

}  // namespace test_io
