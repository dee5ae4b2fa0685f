/// @file conditional_field.hpp
/// @brief The ConditionalVelocityField concept: u_t(x | c) with one condition per sample.
///
/// A conditional field maps a time t, a d×N batch x and a k×N condition matrix c (column i is
/// the condition of sample i: a one-hot label, an embedding, any feature vector) to a d×N batch
/// of velocities. Like an unconditional field it is callable in place, `field(t, x, c, out)`, or
/// returning, `field(t, x, c)`. A designated null condition (by convention the all-zeros column)
/// stands for "no condition". The concepts and evaluate_conditional_velocity are defined, with
/// every other capability of the field protocol, in capabilities.hpp.
#pragma once

#include "flowmatch/field/capabilities.hpp"
