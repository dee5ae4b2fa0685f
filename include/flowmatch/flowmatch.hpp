/// @file flowmatch.hpp
/// @brief Umbrella header: every part of flowmatch that needs only Eigen and Boost.
///
/// The safetensors headers (io/safetensors.hpp, io/mlp_safetensors.hpp) also need
/// nlohmann-json and are included separately (CMake target flowmatch::safetensors).
#pragma once

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/field/conditional_field.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/nn/activation.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/time_embedding.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/path/schedule_transform.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/linear_vp.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/scheduler/scheduler.hpp"
#include "flowmatch/scheduler/vp.hpp"
#include "flowmatch/solver/integrate.hpp"
