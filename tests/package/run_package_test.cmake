# Builds and runs a consumer project against flowmatch. Invoked by ctest with -D arguments:
# MODE (install: install BUILD_DIR into a scratch prefix and use find_package;
# subdirectory: add_subdirectory(FLOWMATCH_SOURCE_DIR)), BUILD_DIR, FLOWMATCH_SOURCE_DIR,
# CONSUMER_DIR (tests/package/consumer) and WORK_DIR (scratch); with TORCH_DATA_DIR (the
# TorchScript fixtures), the consumer also builds and runs its LibTorch program.
file(REMOVE_RECURSE "${WORK_DIR}")

function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "step failed: ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

if(MODE STREQUAL "install")
  set(prefix "${WORK_DIR}/prefix")
  run_step(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
  set(how "-DCMAKE_PREFIX_PATH=${prefix}")
else()
  set(how "-DFLOWMATCH_SOURCE_DIR=${FLOWMATCH_SOURCE_DIR}")
endif()
if(TORCH_DATA_DIR)
  list(APPEND how -DWITH_TORCH=ON)
endif()
run_step(${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build" ${how}
         -DCMAKE_BUILD_TYPE=Release)
run_step(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("${WORK_DIR}/build/consumer")
if(TORCH_DATA_DIR)
  run_step("${WORK_DIR}/build/torch_consumer" "${TORCH_DATA_DIR}/mlp_float32.pt"
           "${TORCH_DATA_DIR}/mlp_x0.npy" "${TORCH_DATA_DIR}/mlp_velocity_t0.3.npy")
endif()
message(STATUS "consumer built and ran (${MODE})")
