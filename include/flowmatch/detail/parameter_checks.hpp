/// @file parameter_checks.hpp
/// @brief Former name of the argument checks (internal): includes detail/validate.hpp, which
/// holds every check and their message grammar.
#pragma once

#include "flowmatch/detail/validate.hpp"
