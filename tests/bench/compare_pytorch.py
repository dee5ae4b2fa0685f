#!/usr/bin/env python3
"""The flowmatch command-line tool against PyTorch on the same weights, in one run.

Each workload writes a model (random PyTorch initialisation, saved as safetensors) and its
inputs, runs `flowmatch` as a user would (a whole process: start-up, file reading, thread
start-up and writing included) and the same computation in PyTorch (the computation only:
models and inputs already in memory), both in float32 on --threads threads, and prints the
median wall time of each over --repeats runs and their ratio (PyTorch time / flowmatch time:
above 1, flowmatch is faster).

PyTorch runs in a child process twice, once as the environment is and once with
OPENBLAS_NUM_THREADS=1 (OpenBLAS's own threads slow small products down), and the faster of the
two counts. Install libopenblas0-pthread: without it PyTorch falls back to the reference BLAS
and is many times slower, which would flatter flowmatch. The BLAS in use is printed.

PyTorch side: a plain loop over torch operations. Sampling is the explicit midpoint method
(x ← x + h·u(t + h/2, x + h/2·u(t, x))); the exact log-likelihood integrates [x, log-det] from
t = 1 to 0 with the midpoint method and the divergence by d reverse-mode passes (one per
coordinate, torch.autograd.grad), the way PyTorch flow-matching code computes it; training is
torch.optim.Adam on the conditional flow-matching loss of the straight path.

Workloads (names for --only):
  sample16k  2-D, [x, t] -> 4x128 SiLU -> 2, midpoint 50 steps, N = 16384
  sample1k   the same, N = 1024
  loglik     32-D, [x, t] -> 3x256 SiLU -> 32, exact divergence, midpoint 100 steps, N = 1024
  train      2-D data, 4x128 SiLU, batch 1024, Adam, independent coupling, steps per second

Usage: python3 tests/bench/compare_pytorch.py --flowmatch build/examples/flowmatch
       [--only sample16k,loglik] [--repeats 5] [--threads 2] [--work DIR]
"""
import argparse
import json
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn


def make_network(dim, hidden, layers):
    modules = [nn.Linear(dim + 1, hidden), nn.SiLU()]
    for _ in range(layers - 1):
        modules += [nn.Linear(hidden, hidden), nn.SiLU()]
    modules.append(nn.Linear(hidden, dim))
    return nn.Sequential(*modules)


def save_safetensors(path, network, dim):
    """The state_dict as F32 tensors in the layout flowmatch reads (io/mlp_safetensors.hpp)."""
    header = {"__metadata__": {"activation": "silu", "input_order": "x,t",
                               "time_embedding": "raw", "dim": str(dim), "cond_dim": "0"}}
    blobs = []
    offset = 0
    for name, tensor in network.state_dict().items():
        data = tensor.detach().contiguous().numpy().astype("<f4").tobytes()
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


def velocity(network, t, x):
    return network(torch.cat([x, torch.full((x.shape[0], 1), t, dtype=x.dtype)], dim=1))


def torch_sample(network, x0, steps):
    h = 1.0 / steps
    x = x0
    with torch.no_grad():
        for k in range(steps):
            t = k * h
            x = x + h * velocity(network, t + h / 2, x + h / 2 * velocity(network, t, x))
    return x


def velocity_and_divergence(network, t, x):
    """u(t, x) and its exact divergence, one reverse pass per coordinate."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = velocity(network, t, x)
        divergence = torch.zeros(x.shape[0], dtype=x.dtype)
        for i in range(x.shape[1]):
            divergence += torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i]
    return u.detach(), divergence.detach()


def torch_loglik(network, x1, steps):
    """log p_1(x1): [x, ℓ] from t = 1 to 0 with d/dt ℓ = −div u, then log N(x(0)) − ℓ(0)."""
    h = -1.0 / steps
    x = x1
    log_det = torch.zeros(x.shape[0], dtype=x.dtype)
    for k in range(steps):
        t = 1.0 + k * h
        u, div = velocity_and_divergence(network, t, x)
        u_mid, div_mid = velocity_and_divergence(network, t + h / 2, x + h / 2 * u)
        x = x + h * u_mid
        log_det = log_det + h * div_mid
    dim = x.shape[1]
    log_p0 = -0.5 * (x * x).sum(dim=1) - 0.5 * dim * np.log(2 * np.pi)
    return log_p0 + log_det


def torch_train(network, data, batch, steps, lr, generator):
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    for _ in range(steps):
        x1 = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]
        x0 = torch.randn(batch, data.shape[1], generator=generator)
        t = torch.rand(batch, 1, generator=generator)
        xt = (1 - t) * x0 + t * x1
        loss = ((network(torch.cat([xt, t], dim=1)) - (x1 - x0)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_tool(arguments):
    def call():
        subprocess.run(arguments, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return call


def checkerboard(count, generator):
    x = torch.rand(count, generator=generator) * 4 - 2
    y = torch.rand(count, generator=generator) * 2 - 2 + ((x.floor() % 2) * 2)
    return torch.stack([x, y], dim=1)


def blas_library():
    """The BLAS shared library this process has loaded (PyTorch's matrix products run there)."""
    with open("/proc/self/maps") as maps:
        names = {line.split()[-1] for line in maps if "blas" in line.split()[-1]}
    return ", ".join(sorted(names)) or "none found"


def torch_timings(args, work):
    """PyTorch's median times of the selected workloads, in this process (see --torch-only)."""
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    selected = args.only.split(",")
    times = {}
    sampler = load_network(work / "sampler.safetensors.pt")
    for name, count in (("sample16k", 16384), ("sample1k", 1024)):
        if name in selected:
            noise = torch.from_numpy(np.load(work / f"noise_{count}.npy"))
            torch_sample(sampler, noise, 50)
            times[name] = median_time(lambda: torch_sample(sampler, noise, 50), args.repeats)
    if "loglik" in selected:
        network = load_network(work / "loglik.safetensors.pt")
        data = torch.from_numpy(np.load(work / "loglik_data.npy"))
        times["loglik"] = median_time(lambda: torch_loglik(network, data, 100),
                                      max(1, args.repeats // 2))
    if "train" in selected:
        data = torch.from_numpy(np.load(work / "train_data.npy"))
        network = make_network(2, 128, 4)
        torch_train(network, data, 1024, 10, 1e-3, generator)  # warm-up
        times["train"] = median_time(
            lambda: torch_train(network, data, 1024, args.train_steps, 1e-3, generator),
            args.repeats)
    times["blas"] = blas_library()
    return times


def load_network(path):
    return torch.load(path)


# PyTorch's matrix products run in OpenBLAS's own threads, its other operations in PyTorch's;
# depending on the shapes, one BLAS thread or as many as PyTorch's can be faster. Both are
# tried, and the faster is PyTorch's figure.
TORCH_ENVIRONMENTS = ({}, {"OPENBLAS_NUM_THREADS": "1"})


def best_torch_timings(args, work):
    best = {}
    for extra in TORCH_ENVIRONMENTS:
        environment = dict(os.environ, **extra)
        output = subprocess.run([sys.executable, __file__, "--torch-only", "--work", str(work),
                                 "--only", args.only, "--repeats", str(args.repeats),
                                 "--threads", str(args.threads),
                                 "--train-steps", str(args.train_steps)],
                                env=environment, check=True, capture_output=True, text=True)
        timings = json.loads(output.stdout)
        label = " ".join(f"{key}={value}" for key, value in extra.items()) or "default"
        for name, value in timings.items():
            if name != "blas" and (name not in best or value < best[name][0]):
                best[name] = (value, label)
        best["blas"] = timings["blas"]
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flowmatch", help="the flowmatch executable")
    parser.add_argument("--work", default="compare_pytorch_work", help="folder for the files")
    parser.add_argument("--only", default="sample16k,sample1k,loglik,train")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--torch-only", action="store_true",
                        help="(internal) time PyTorch on the files of --work, print JSON")
    args = parser.parse_args()
    work = pathlib.Path(args.work)
    if args.torch_only:
        print(json.dumps(torch_timings(args, work)))
        return 0
    if not args.flowmatch:
        parser.error("--flowmatch is required")
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    tool = [args.flowmatch]
    common = ["--precision", "float", "--threads", str(args.threads)]
    selected = args.only.split(",")
    rows = []

    # Models, inputs and a check that both sides compute the same thing.
    sampler = make_network(2, 128, 4)
    save_safetensors(work / "sampler.safetensors", sampler, 2)
    torch.save(sampler, work / "sampler.safetensors.pt")
    commands = {}
    for name, count in (("sample16k", 16384), ("sample1k", 1024)):
        if name not in selected:
            continue
        noise = torch.randn(count, 2, generator=generator)
        np.save(work / f"noise_{count}.npy", noise.numpy())
        out_path = work / f"samples_{count}.npy"
        commands[name] = tool + ["sample", "--model", str(work / "sampler.safetensors"),
                                 "--noise", str(work / f"noise_{count}.npy"),
                                 "--out", str(out_path), "--method", "midpoint",
                                 "--step-size", "0.02"] + common
        run_tool(commands[name])()
        gap = np.abs(np.load(out_path) - torch_sample(sampler, noise, 50).numpy()).max()
        rows.append((name, f"sample midpoint 50 steps N={count}", f"max gap {gap:.1e}"))
    if "loglik" in selected:
        network = make_network(32, 256, 3)
        save_safetensors(work / "loglik.safetensors", network, 32)
        torch.save(network, work / "loglik.safetensors.pt")
        data = torch.randn(1024, 32, generator=generator)
        np.save(work / "loglik_data.npy", data.numpy())
        out_path = work / "loglik.npy"
        commands["loglik"] = tool + ["loglik", "--model", str(work / "loglik.safetensors"),
                                     "--data", str(work / "loglik_data.npy"),
                                     "--out", str(out_path), "--method", "midpoint",
                                     "--step-size", "0.01"] + common
        run_tool(commands["loglik"])()
        gap = np.abs(np.load(out_path) - torch_loglik(network, data, 100).numpy()).max()
        rows.append(("loglik", "loglik exact d=32 midpoint 100 steps N=1024",
                     f"max gap {gap:.1e}"))
    if "train" in selected:
        np.save(work / "train_data.npy", checkerboard(100000, generator).numpy())
        steps = args.train_steps
        commands["train"] = tool + ["train", "--data", str(work / "train_data.npy"),
                                    "--out", str(work / "trained.safetensors"),
                                    "--hidden", "128,128,128,128", "--batch", "1024",
                                    "--lr", "1e-3", "--steps", str(steps)] + common
        rows.append(("train", f"train batch 1024, {steps} steps", ""))

    ours = {name: median_time(run_tool(command), args.repeats)
            for name, command in commands.items()}
    theirs = best_torch_timings(args, work)

    print(f"PyTorch {torch.__version__}, BLAS: {theirs['blas']}, {args.threads} threads")
    print(f"{'workload':46} {'flowmatch':>10} {'PyTorch':>10} {'ratio':>7}")
    for name, label, note in rows:
        their_time, environment = theirs[name]
        if name == "train":
            note = (f"{args.train_steps / ours[name]:.0f} vs "
                    f"{args.train_steps / their_time:.0f} steps/s")
        print(f"{label:46} {ours[name]:9.3f}s {their_time:9.3f}s {their_time / ours[name]:6.2f}x"
              f"  {note} (PyTorch: {environment})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
