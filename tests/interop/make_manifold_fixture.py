#!/usr/bin/env python3
"""Train a velocity network on the sphere S² with PyTorch and write it, with reference outputs
computed in PyTorch in float64, as the fixture tests/data/sphere_torch/.

The network is nn.Sequential(Linear(4, 32), SiLU, Linear(32, 32), SiLU, Linear(32, 3)) with input
[x (3 values), t (1 value)], the layout of include/flowmatch/io/mlp_safetensors.hpp. It is
trained briefly with the Riemannian conditional flow-matching loss: x0 uniform on S², x1 from a
von Mises–Fisher-like cluster (a normal perturbation of a mean direction, normalised), the point
x_t = exp_{x0}(t·log_{x0}(x1)) on their geodesic, the target its velocity
−θ·sin(tθ)·x0 + cos(tθ)·v with v = log_{x0}(x1), θ = |v|, and the loss the mean squared norm of
P_{x_t} u(x_t, t) − target, where P_x w = w − ⟨x, w⟩·x.

Files written (float64 arrays, C order, one point per row):
  model.safetensors   F32 tensors 0.weight, 0.bias, 2.weight, 2.bias, 4.weight, 4.bias and the
                      __metadata__ activation=silu, input_order=x,t, time_embedding=raw, dim=3,
                      cond_dim=0, manifold=sphere (the manifold the command-line tool reads)
  points.npy [8, 3], times.npy [8], velocity.npy [8, 3]: the tangent-projected velocity
                      P_x u(x, t) at each (t, x)
  x0.npy [16, 3]      starting points at t = 0, uniform on S²
  euler_h0.05.npy     x0 carried to t = 1 by projected Euler, 20 steps of 0.05
  rk4_h0.1.npy        the same by projected RK4, 10 steps of 0.1

The solves reproduce flowmatch's projection stepping (manifold/integrate.hpp) operation for
operation: each stage point is π(x + h·Σ a_ij·k_j) with π(y) = y/|y|, each stage velocity is
k_i = P_{Y_i} u(t + c_i·h, Y_i), and the step ends at π(x + h·Σ b_i·k_i); the float32 weights
are widened exactly to float64 before evaluation. The model file is written by
save_safetensors of examples/pytorch_interop.py.

Usage: /usr/bin/python3 tests/interop/make_manifold_fixture.py [--out tests/data/sphere_torch]
"""
import argparse
import copy
import pathlib
import sys

import numpy as np
import torch
from torch import nn

# The safetensors writer of the Euclidean example: the same layout, other metadata.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))
from pytorch_interop import save_safetensors  # noqa: E402

HIDDEN = 32
MEAN_DIRECTION = (0.0, 0.6, 0.8)
SPREAD = 0.3


def make_network():
    return nn.Sequential(nn.Linear(4, HIDDEN), nn.SiLU(), nn.Linear(HIDDEN, HIDDEN), nn.SiLU(),
                         nn.Linear(HIDDEN, 3))


def normalise(x):
    return x / x.norm(dim=1, keepdim=True)


def uniform_sphere(count, generator, dtype=torch.float32):
    return normalise(torch.randn(count, 3, generator=generator, dtype=dtype))


def cluster(count, generator):
    mean = torch.tensor(MEAN_DIRECTION)
    return normalise(mean + SPREAD * torch.randn(count, 3, generator=generator))


def project_tangent(x, w):
    return w - (x * w).sum(dim=1, keepdim=True) * x


def geodesic(x0, x1, t):
    """The point x_t and velocity of the geodesic from x0 (t = 0) to x1 (t = 1)."""
    w = project_tangent(x0, x1)
    sine = w.norm(dim=1, keepdim=True)
    cosine = (x0 * x1).sum(dim=1, keepdim=True)
    angle = torch.atan2(sine, cosine)
    v = angle / sine.clamp_min(1e-12) * w  # log_{x0}(x1), |v| = angle
    point = torch.cos(t * angle) * x0 + torch.sin(t * angle) / sine.clamp_min(1e-12) * w
    velocity = -angle * torch.sin(t * angle) * x0 + torch.cos(t * angle) * v
    return normalise(point), velocity


def velocity_field(network, t, x):
    """P_x u(x, t) for a batch x and one time t."""
    u = network(torch.cat([x, torch.full((x.shape[0], 1), t, dtype=x.dtype)], dim=1))
    return project_tangent(x, u)


def train(network, steps, generator):
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    for step in range(1, steps + 1):
        x0 = uniform_sphere(256, generator)
        x1 = cluster(256, generator)
        t = torch.rand(256, 1, generator=generator)
        xt, target = geodesic(x0, x1, t)
        predicted = project_tangent(xt, network(torch.cat([xt, t], dim=1)))
        loss = ((predicted - target) ** 2).sum(dim=1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == steps:
            print(f"step {step}: loss {loss.item():.4f}")


# Explicit Runge-Kutta tableaus: stage weights a_ij (j < i), combination b_i, nodes c_i.
TABLEAUS = {
    "euler": ([[]], [1.0], [0.0]),
    "rk4": ([[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6],
            [0.0, 0.5, 0.5, 1.0]),
}


def solve_projected(network, x0, method, steps):
    """x0 from t = 0 to 1 in `steps` equal steps with projection stepping; the last step ends
    on t = 1 exactly, as flowmatch's grid does."""
    weights, combination, nodes = TABLEAUS[method]
    h = 1.0 / steps
    x = x0.clone()
    with torch.no_grad():
        for k in range(steps):
            t = k * h
            length = 1.0 - t if k + 1 == steps else h
            slopes = []
            for i in range(len(combination)):
                if i == 0:
                    stage = x
                else:
                    increment = torch.zeros_like(x)
                    for j, a in enumerate(weights[i]):
                        if a != 0.0:
                            increment = increment + (length * a) * slopes[j]
                    stage = normalise(x + increment)
                slopes.append(velocity_field(network, t + nodes[i] * length, stage))
            increment = torch.zeros_like(x)
            for i, b in enumerate(combination):
                increment = increment + (length * b) * slopes[i]
            x = normalise(x + increment)
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] /
                                             "data" / "sphere_torch"))
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    network = make_network()
    train(network, args.steps, generator)
    save_safetensors(out / "model.safetensors", network,
                     {"activation": "silu", "input_order": "x,t", "time_embedding": "raw",
                      "dim": "3", "cond_dim": "0", "manifold": "sphere"})

    exact = copy.deepcopy(network).double()  # the float32 weights, widened exactly
    points = uniform_sphere(8, generator, torch.float64)
    times = torch.linspace(0.0, 1.0, 8, dtype=torch.float64)
    with torch.no_grad():
        velocity = torch.cat([velocity_field(exact, float(times[n]), points[n:n + 1])
                              for n in range(points.shape[0])])
    np.save(out / "points.npy", points.numpy())
    np.save(out / "times.npy", times.numpy())
    np.save(out / "velocity.npy", velocity.numpy())

    x0 = uniform_sphere(16, generator, torch.float64)
    np.save(out / "x0.npy", x0.numpy())
    euler = solve_projected(exact, x0, "euler", 20)
    rk4 = solve_projected(exact, x0, "rk4", 10)
    np.save(out / "euler_h0.05.npy", euler.numpy())
    np.save(out / "rk4_h0.1.npy", rk4.numpy())

    mean = torch.tensor(MEAN_DIRECTION, dtype=torch.float64)
    print(f"mean cosine to the cluster direction: x0 {(x0 @ mean).mean():.3f}, "
          f"rk4 samples {(rk4 @ mean).mean():.3f}")
    print(f"largest |Euler - RK4|: {(euler - rk4).abs().max():.3e}")


if __name__ == "__main__":
    main()
