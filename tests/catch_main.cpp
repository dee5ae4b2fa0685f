// The test executables' shared main (CATCH_CONFIG_ENABLE_BENCHMARKING comes from CMake).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
