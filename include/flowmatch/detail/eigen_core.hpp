/// @file eigen_core.hpp
/// @brief Eigen's core module, included so that GCC 12's AVX-512 intrinsics stay warning-free.
///
/// GCC up to 12 defines `_mm512_undefined_pd()` and its kin in <immintrin.h> by a deliberately
/// self-initialised variable, which `-Wuninitialized` and `-Wmaybe-uninitialized` report as
/// uninitialized wherever Eigen's AVX-512 packet code inlines them (compiled with
/// `-march=native` on an AVX-512 machine). The diagnostics are classified by the location of
/// the intrinsic's definition, so the intrinsics header is included here, first, with those
/// two warnings off inside it only; every other location keeps them.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ <= 12 && \
    (defined(__x86_64__) || defined(__i386__))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <Eigen/Core>
