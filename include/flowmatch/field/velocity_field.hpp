/// @file velocity_field.hpp
/// @brief The VelocityField concept and evaluate_velocity.
///
/// Defined, with every other capability of the field protocol, in capabilities.hpp; this header
/// is the short name to include for plain fields.
#pragma once

#include "flowmatch/field/capabilities.hpp"
