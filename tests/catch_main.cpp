// The test executables' shared main. The tests check correctness only: no Catch2 benchmarks.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
