#!/usr/bin/python3
"""A TorchScript model sampled by flowmatch in C++ against the same loop in Python.

Build the benchmark program and train the digits model, then run this script with Debian's
python3-torch (and libopenblas0-pthread; see the README):

    cmake -S . -B build -DFLOWMATCH_BUILD_BENCHMARKS=ON
    cmake --build build -j2 --target torchscript_bench
    /usr/bin/python3 examples/digits/train_digits.py --out digits_out
    /usr/bin/python3 tests/bench/torchscript_vs_python.py --bench build/tests/bench/torchscript_bench \\
        --model digits_out/digits_model.pt

Both sides run the same file, forward(x [N, 1, 8, 8], t [N], c int64 [N]) with the labels
n mod 10, on the same number of LibTorch threads (--threads), and time the computation only
(the model is loaded and warmed up first); each time is the shortest of --repeats runs (on a
shared machine, the run least disturbed by other work).

1. Sampling at equal NFE: flowmatch::sample with the fixed-step method (--method, midpoint or
   euler, --steps K) through ConditionalTorchScriptField, against a Python loop of the same
   method over torch.jit.load(model) under torch.inference_mode, from standard-normal noise.
   The ratio is Python's time over flowmatch's: above 1, flowmatch is faster.
2. The exact divergence (C++ only): one call of the field's divergence at --divergence-n
   samples over one vector-Jacobian product (one forward and one backward pass) at the same
   samples, in "backward-pass equivalents", with the default allocator and with
   flowmatch::retain_freed_memory(); the design bound is d + 1 = 65. The script exits with
   status 1 if the latter exceeds it.
"""
import argparse
import json
import subprocess
import sys
import time

import torch


def python_sampling(module, n, steps, method, repeats):
    """The shortest time of a fixed-step loop over the module, and the mean of its samples."""
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(n, 1, 8, 8, generator=generator)
    labels = torch.arange(n, dtype=torch.int64) % 10
    h = 1.0 / steps

    def run():
        with torch.inference_mode():
            x = noise
            for k in range(steps):
                t = torch.full((n,), k * h)
                if method == "euler":
                    x = x + h * module(x, t, labels)
                else:
                    half = x + (0.5 * h) * module(x, t, labels)
                    x = x + h * module(half, t + 0.5 * h, labels)
            return x

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), float(result.mean())


def run_bench(args, extra):
    """Runs the benchmark program on the model with the common settings and @p extra; returns
    its JSON output."""
    command = [args.bench, args.model, "--steps", str(args.steps), "--method", args.method,
               "--threads", str(args.threads), "--repeats", str(args.repeats)] + extra
    return json.loads(subprocess.run(command, check=True, capture_output=True,
                                     text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", required=True, help="the torchscript_bench program")
    parser.add_argument("--model", required=True, help="the digits model (TorchScript)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--method", choices=["midpoint", "euler"], default="midpoint")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--divergence-n", type=int, default=256)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    module = torch.jit.load(args.model).eval()
    evaluations = args.steps * (2 if args.method == "midpoint" else 1)
    print(f"{args.method}, {args.steps} steps ({evaluations} evaluations), {args.threads} "
          f"thread(s), fastest of {args.repeats} runs")
    print(f"{'N':>6} {'flowmatch (s)':>14} {'Python (s)':>11} {'ratio':>6}")
    for n in args.sizes:
        measured = run_bench(args, ["--n", str(n), "--skip-divergence"])
        python_time, python_mean = python_sampling(module, n, args.steps, args.method,
                                                   args.repeats)
        print(f"{n:>6} {measured['sampling_seconds']:>14.4f} {python_time:>11.4f} "
              f"{python_time / measured['sampling_seconds']:>6.2f}   (sample means "
              f"{measured['sample_mean']:.3f} and {python_mean:.3f})")

    failed = False
    for retain in (False, True):
        measured = run_bench(args, ["--n", "1", "--divergence-n",
                                    str(args.divergence_n)] + (["--retain-memory"] if retain
                                                               else []))
        bound = measured["dim"] + 1
        equivalents = measured["backward_pass_equivalents"]
        print(f"exact divergence at N = {measured['divergence_n']}"
              f"{', retain_freed_memory()' if retain else ''}: "
              f"{measured['divergence_seconds'] * 1e3:.1f} ms against "
              f"{measured['vjp_seconds'] * 1e3:.2f} ms for one forward and backward pass "
              f"(forward alone {measured['forward_seconds'] * 1e3:.2f} ms): "
              f"{equivalents:.1f} backward-pass equivalents (bound d + 1 = {bound})")
        if retain and equivalents > bound:
            print("FAIL: the exact divergence costs more than d + 1 backward passes")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
