/// @file manifolds.hpp
/// @brief Every header of manifold/: Riemannian flow matching (the Manifold concept, the
/// sphere, flat torus, Euclidean space and products, the geodesic path, the tangent adapter,
/// the integrators, the Riemannian divergence, log-likelihoods and training).
#pragma once

#include "flowmatch/manifold/divergence.hpp"
#include "flowmatch/manifold/euclidean.hpp"
#include "flowmatch/manifold/flat_torus.hpp"
#include "flowmatch/manifold/geodesic_path.hpp"
#include "flowmatch/manifold/integrate.hpp"
#include "flowmatch/manifold/log_likelihood.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/manifold/product.hpp"
#include "flowmatch/manifold/sphere.hpp"
#include "flowmatch/manifold/tangent_field.hpp"
#include "flowmatch/manifold/training.hpp"
