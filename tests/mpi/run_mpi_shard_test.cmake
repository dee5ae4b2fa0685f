# The sharded example must write the same bytes on 2 ranks as on 1 rank, for noise, sample,
# encode and loglik with a fixed-step method, and velocity. Run by ctest as
#   cmake -DMPIEXEC=... -DNUMPROC_FLAG=-n -DPROGRAM=mpi_shard -DMODEL=model.safetensors
#         -DWORK_DIR=dir -P run_mpi_shard_test.cmake
# The 1-rank runs use 2 threads, so the comparison covers the thread count as well. 998 rows
# are not a multiple of the 256-row chunks: the last chunk is short and the ranks' shares
# differ (512 and 486 rows). Runs on 5 ranks leave a rank without rows. A split that ignored
# the chunks (499 rows per rank) would change the last bits of some velocities: Eigen's product
# kernels take columns in groups of 4, and rows 496 to 498 would fall into a partial group on
# rank 0. An integration with a small step can round such a change away; one evaluation cannot.
foreach(variable MPIEXEC NUMPROC_FLAG PROGRAM MODEL WORK_DIR)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "run_mpi_shard_test.cmake needs -D${variable}=...")
  endif()
endforeach()
set(rows 998)
set(dim 2)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# run(<ranks> <output> <arguments>...): mpi_shard on <ranks> ranks writing WORK_DIR/<output>;
# fails unless it succeeds and reports all the rows on that many ranks.
function(run ranks output)
  execute_process(
    COMMAND ${MPIEXEC} ${NUMPROC_FLAG} ${ranks} ${PROGRAM} ${ARGN} --out ${WORK_DIR}/${output}
    RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(ranks EQUAL 1)
    set(expected "${rows} rows on 1 rank ")
  else()
    set(expected "${rows} rows on ${ranks} ranks ")
  endif()
  string(FIND "${out}" "${expected}" found)
  if(NOT status EQUAL 0 OR found EQUAL -1 OR NOT EXISTS ${WORK_DIR}/${output})
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "mpi_shard ${command} on ${ranks} ranks failed (${status}):\n${out}\n${err}")
  endif()
endfunction()

# same(<first> <second> <bytes>): WORK_DIR/<first> and WORK_DIR/<second> are identical files
# of <bytes> bytes.
function(same first second bytes)
  file(SIZE ${WORK_DIR}/${first} size)
  if(NOT size EQUAL bytes)
    message(FATAL_ERROR "${first} has ${size} bytes, expected ${bytes}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK_DIR}/${first}
    ${WORK_DIR}/${second} RESULT_VARIABLE differ)
  if(NOT differ EQUAL 0)
    message(FATAL_ERROR "${second} differs from ${first}")
  endif()
  message(STATUS "${first} and ${second} hold the same ${bytes} bytes")
endfunction()

# A 128-byte header (numpy's alignment for these shapes), then the float64 elements.
math(EXPR batch_bytes "128 + ${rows} * ${dim} * 8")
math(EXPR vector_bytes "128 + ${rows} * 8")

run(1 noise_1.npy noise --dim ${dim} --rows ${rows} --seed 2026)
run(2 noise_2.npy noise --dim ${dim} --rows ${rows} --seed 2026)
same(noise_1.npy noise_2.npy ${batch_bytes})

set(model_options --model ${MODEL} --method midpoint --steps 10)
run(1 samples_1.npy sample --in ${WORK_DIR}/noise_1.npy ${model_options} --threads 2)
run(2 samples_2.npy sample --in ${WORK_DIR}/noise_1.npy ${model_options})
run(5 samples_5.npy sample --in ${WORK_DIR}/noise_1.npy ${model_options})
same(samples_1.npy samples_2.npy ${batch_bytes})
same(samples_1.npy samples_5.npy ${batch_bytes})

run(1 encoded_1.npy encode --in ${WORK_DIR}/samples_1.npy ${model_options} --threads 2)
run(2 encoded_2.npy encode --in ${WORK_DIR}/samples_1.npy ${model_options})
same(encoded_1.npy encoded_2.npy ${batch_bytes})

run(1 log_density_1.npy loglik --in ${WORK_DIR}/samples_1.npy ${model_options} --threads 2)
run(2 log_density_2.npy loglik --in ${WORK_DIR}/samples_1.npy ${model_options})
same(log_density_1.npy log_density_2.npy ${vector_bytes})

run(1 velocity_1.npy velocity --in ${WORK_DIR}/noise_1.npy --model ${MODEL} --time 0.4 --threads 2)
run(2 velocity_2.npy velocity --in ${WORK_DIR}/noise_1.npy --model ${MODEL} --time 0.4)
run(5 velocity_5.npy velocity --in ${WORK_DIR}/noise_1.npy --model ${MODEL} --time 0.4)
same(velocity_1.npy velocity_2.npy ${batch_bytes})
same(velocity_1.npy velocity_5.npy ${batch_bytes})

# The outputs are not trivially equal: sampling moved the points.
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK_DIR}/noise_1.npy
  ${WORK_DIR}/samples_1.npy RESULT_VARIABLE differ)
if(differ EQUAL 0)
  message(FATAL_ERROR "sampling returned its input unchanged")
endif()

# A time outside [0, 1] is refused before any work, with the reason, and nothing is written.
execute_process(
  COMMAND ${MPIEXEC} ${NUMPROC_FLAG} 2 ${PROGRAM} velocity --in ${WORK_DIR}/noise_1.npy
    --model ${MODEL} --time 1.5 --out ${WORK_DIR}/refused.npy
  RESULT_VARIABLE status OUTPUT_QUIET ERROR_VARIABLE err)
string(FIND "${err}" "--time is '1.5', expected a time in [0, 1]" found)
if(status EQUAL 0 OR found EQUAL -1 OR EXISTS ${WORK_DIR}/refused.npy)
  message(FATAL_ERROR "velocity --time 1.5 was not refused as expected (${status}):\n${err}")
endif()
