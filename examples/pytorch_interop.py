#!/usr/bin/env python3
"""Train a flow-matching velocity network with PyTorch and sample it with flowmatch.

The script
  1. trains nn.Sequential(Linear(3, 64), SiLU, Linear(64, 64), SiLU, Linear(64, 2)) on eight
     Gaussian blobs with the flow-matching loss of the straight path (input [x, t]);
  2. saves it as safetensors in the layout flowmatch's Mlp reads (io/mlp_safetensors.hpp):
     tensors 0.weight, 0.bias, 2.weight, ... in float32 and the __metadata__ keys activation,
     input_order, time_embedding, dim and cond_dim; the file is written with struct and json;
  3. draws standard-normal noise, saves it as noise.npy and carries it from t = 0 to t = 1 with a
     fixed-step method in float64 (the float32 weights widened exactly);
  4. runs the C++ example pytorch_interop on the model and the noise, with the same method and
     step, and checks that its samples agree with PyTorch's.

Usage: python3 examples/pytorch_interop.py PATH/TO/pytorch_interop [--work DIR] [--steps N]
                                            [--method midpoint|euler|rk4] [--step-size H]
"""
import argparse
import copy
import json
import math
import pathlib
import struct
import subprocess
import sys

import numpy as np
import torch
from torch import nn

# Both sides evaluate the same weights in float64 with the same method and steps; only the order
# of the floating-point sums differs, which moves O(1) results by ~1e-15 per step. 1e-10 leaves
# a wide margin and is still far below what a float32 evaluation (or a wrong weight, input order
# or time) would give: the script prints the float32 difference for comparison.
TOLERANCE = 1e-10


def make_network(hidden=64):
    return nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, 2))


def eight_blobs(count, generator):
    """Points around the eight unit-circle directions at radius 2.5, spread 0.2."""
    angle = torch.randint(0, 8, (count,), generator=generator) * (2 * math.pi / 8)
    centres = 2.5 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + 0.2 * torch.randn(count, 2, generator=generator)


def train(network, steps, generator):
    """Flow matching on x_t = (1 − t)·x0 + t·x1 with target velocity x1 − x0."""
    optimiser = torch.optim.Adam(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for step in range(1, steps + 1):
        x1 = eight_blobs(256, generator)
        x0 = torch.randn(256, 2, generator=generator)
        t = torch.rand(256, 1, generator=generator)
        xt = (1 - t) * x0 + t * x1
        loss = ((network(torch.cat([xt, t], dim=1)) - (x1 - x0)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 500 == 0 or step == steps:
            print(f"step {step}: loss {loss.item():.4f}")


def save_safetensors(path, network, metadata):
    """The state_dict as F32 tensors: 8-byte little-endian header length, JSON header (padded
    with spaces to a multiple of 8 bytes), then the tensors' bytes back to back."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, tensor in network.state_dict().items():
        data = tensor.detach().cpu().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)))
        file.write(text)
        for data in blobs:
            file.write(data)


def sample(network, x0, method, step_size):
    """x0 carried from t = 0 to 1 in ceil(1/h) equal steps (as flowmatch splits the interval)."""
    steps = max(1, math.ceil(1 / step_size - 1e-9))
    h = 1.0 / steps

    def velocity(t, x):
        return network(torch.cat([x, torch.full((x.shape[0], 1), t, dtype=x.dtype)], dim=1))

    x = x0
    with torch.no_grad():
        for k in range(steps):
            t = k * h
            if method == "euler":
                x = x + h * velocity(t, x)
            elif method == "midpoint":
                x = x + h * velocity(t + h / 2, x + h / 2 * velocity(t, x))
            else:  # rk4
                k1 = velocity(t, x)
                k2 = velocity(t + h / 2, x + h / 2 * k1)
                k3 = velocity(t + h / 2, x + h / 2 * k2)
                k4 = velocity(t + h, x + h * k3)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("program", help="the pytorch_interop executable built by CMake")
    parser.add_argument("--work", default="pytorch_interop_work", help="folder for the files")
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--method", default="midpoint", choices=["euler", "midpoint", "rk4"])
    parser.add_argument("--step-size", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()

    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    network = make_network()
    train(network, args.steps, generator)
    model_path = work / "model.safetensors"
    save_safetensors(model_path, network, {"activation": "silu", "input_order": "x,t",
                                           "time_embedding": "raw", "dim": "2", "cond_dim": "0"})

    noise = torch.randn(args.samples, 2, generator=generator, dtype=torch.float64)
    noise_path = work / "noise.npy"
    np.save(noise_path, noise.numpy())
    torch_samples = sample(copy.deepcopy(network).double(), noise, args.method,
                           args.step_size).numpy()
    single_samples = sample(network, noise.float(), args.method, args.step_size).numpy()
    np.save(work / "samples_torch.npy", torch_samples)

    cpp_path = work / "samples_flowmatch.npy"
    subprocess.run([args.program, str(model_path), str(noise_path), str(cpp_path), args.method,
                    repr(args.step_size)], check=True)
    cpp_samples = np.load(cpp_path)

    difference = np.abs(cpp_samples - torch_samples).max()
    single_difference = np.abs(single_samples.astype(np.float64) - torch_samples).max()
    radius = np.linalg.norm(torch_samples, axis=1)
    print(f"{args.samples} samples, {args.method} with h = {args.step_size}: "
          f"mean radius {radius.mean():.3f} (data 2.5)")
    print(f"largest |flowmatch - PyTorch| (float64): {difference:.3e}  (tolerance {TOLERANCE:g})")
    print(f"for comparison, PyTorch float32 vs float64: {single_difference:.3e}")
    if cpp_samples.shape != torch_samples.shape or not difference <= TOLERANCE:
        print("the samples disagree", file=sys.stderr)
        return 1
    print("flowmatch and PyTorch agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
