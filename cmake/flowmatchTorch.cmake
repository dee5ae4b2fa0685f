# The optional LibTorch component: the INTERFACE target flowmatch::torch (headers
# flowmatch/interop/torch.hpp and torch_denoiser.hpp), which runs TorchScript models as velocity
# fields and as denoisers of discrete flow matching.
#
# FLOWMATCH_WITH_TORCH selects it:
#   AUTO (default)  the target exists when find_package(Torch) succeeds (Debian: libtorch-dev);
#   ON              LibTorch is required: configuring fails without it;
#   OFF             LibTorch is not looked for.
# Without the component, the core library, its tests, examples and tool build as before.
include_guard(GLOBAL)

set(FLOWMATCH_WITH_TORCH AUTO CACHE STRING
  "Build the LibTorch component flowmatch::torch: AUTO (when LibTorch is found), ON or OFF")
set_property(CACHE FLOWMATCH_WITH_TORCH PROPERTY STRINGS AUTO ON OFF)

string(TOUPPER "${FLOWMATCH_WITH_TORCH}" flowmatch_with_torch)
if(flowmatch_with_torch STREQUAL "AUTO")
  find_package(Torch QUIET)
elseif(FLOWMATCH_WITH_TORCH)
  find_package(Torch REQUIRED)
endif()

# LibTorch 1.13's headers do not compile with Clang in C++20 (libstdc++'s std::vector of the
# incomplete c10::IValue in ATen/core/List.h); GCC compiles them.
if((Torch_FOUND OR TORCH_FOUND) AND CMAKE_CXX_COMPILER_ID MATCHES "Clang"
   AND Torch_VERSION VERSION_LESS 2.0)
  string(CONCAT flowmatch_torch_clang_message "LibTorch ${Torch_VERSION}'s headers do not "
    "compile with ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} in C++20; use GCC")
  if(flowmatch_with_torch STREQUAL "AUTO")
    message(STATUS "flowmatch: flowmatch::torch not built: ${flowmatch_torch_clang_message}")
    set(Torch_FOUND FALSE)
    set(TORCH_FOUND FALSE)
  else()
    message(FATAL_ERROR "FLOWMATCH_WITH_TORCH=ON: ${flowmatch_torch_clang_message}")
  endif()
  unset(flowmatch_torch_clang_message)
endif()

if(Torch_FOUND OR TORCH_FOUND)
  add_library(flowmatch_torch INTERFACE)
  add_library(flowmatch::torch ALIAS flowmatch_torch)
  set_target_properties(flowmatch_torch PROPERTIES EXPORT_NAME torch)
  target_link_libraries(flowmatch_torch INTERFACE flowmatch ${TORCH_LIBRARIES})
  # LibTorch's headers are third-party code: as system headers, their warnings do not break the
  # -Werror builds of the targets that include them. Installed, the target finds them through
  # LibTorch's own imported target `torch` (whose include directories a consumer sees as system
  # headers); the package configuration looks for LibTorch first.
  target_include_directories(flowmatch_torch SYSTEM INTERFACE
    $<BUILD_INTERFACE:${TORCH_INCLUDE_DIRS}>)
  message(STATUS "flowmatch: LibTorch ${Torch_VERSION} found, flowmatch::torch enabled")
elseif(NOT flowmatch_with_torch STREQUAL "AUTO" OR NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(STATUS "flowmatch: LibTorch not found or disabled (FLOWMATCH_WITH_TORCH), "
    "flowmatch::torch not built")
endif()
unset(flowmatch_with_torch)
