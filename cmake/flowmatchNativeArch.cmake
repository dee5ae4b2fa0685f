# flowmatch_target_native_arch(<target> [PRIVATE|PUBLIC|INTERFACE])
#
# Compiles <target> for the processor of the machine that builds it (-march=native), so that
# Eigen, and with it every flowmatch kernel, uses the widest vector instructions the machine
# has (AVX2 and FMA, AVX-512) instead of the SSE2 baseline of x86-64. The scope defaults to
# PRIVATE. Where the compiler does not accept -march=native, the target is left unchanged and a
# warning says so.
#
# Every translation unit linked into one program should be compiled with the same
# architecture flags: Eigen's alignment of fixed-size objects depends on them.
include_guard(GLOBAL)
include(CheckCXXCompilerFlag)

function(flowmatch_target_native_arch target)
  set(scope PRIVATE)
  if(ARGC GREATER 1)
    set(scope ${ARGV1})
  endif()
  check_cxx_compiler_flag(-march=native FLOWMATCH_COMPILER_ACCEPTS_MARCH_NATIVE)
  if(FLOWMATCH_COMPILER_ACCEPTS_MARCH_NATIVE)
    target_compile_options(${target} ${scope} -march=native)
  else()
    message(WARNING "flowmatch_target_native_arch: ${CMAKE_CXX_COMPILER_ID} does not accept "
      "-march=native; ${target} is built for the compiler's default architecture")
  endif()
endfunction()
