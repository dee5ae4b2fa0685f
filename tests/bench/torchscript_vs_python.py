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
shared machine, the run least disturbed by other work), and for sampling the shortest over
--rounds rounds that run flowmatch and Python in turn.

1. Sampling at equal NFE: flowmatch::sample with the fixed-step method (--method, midpoint or
   euler, --steps K) through ConditionalTorchScriptField, against a Python loop of the same
   method over torch.jit.load(model) under torch.inference_mode, from standard-normal noise.
   The ratio is Python's time over flowmatch's: above 1, flowmatch is faster. With
   --retain-memory, both sides run with the allocator settings of
   flowmatch::retain_freed_memory() (Python through ctypes' mallopt).
2. The exact divergence (C++ only): one call of the field's divergence at --divergence-n
   samples over one vector-Jacobian product (one forward and one backward pass) at the same
   samples, in "backward-pass equivalents", with the default allocator and with
   flowmatch::retain_freed_memory(); the design bound is d + 1 = 65. The script exits with
   status 1 if the latter exceeds it.
"""
import argparse
import ctypes
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


def retain_freed_memory():
    """What flowmatch::retain_freed_memory() does, for this process: glibc's malloc keeps freed
    memory rather than returning it to the system (mallopt M_MMAP_THRESHOLD = 32 MiB,
    M_TRIM_THRESHOLD = 1 GiB)."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if libc.mallopt(m_mmap_threshold, 32 << 20) != 1 or libc.mallopt(m_trim_threshold,
                                                                    1 << 30) != 1:
        raise RuntimeError("mallopt failed")


def run_bench(args, extra):
    """Runs the benchmark program on the model with the common settings and @p extra; returns
    its JSON output."""
    command = [args.bench, args.model, "--steps", str(args.steps), "--method", args.method,
               "--threads", str(args.threads), "--repeats", str(args.repeats)] + extra
    if args.retain_memory:
        command.append("--retain-memory")
    return json.loads(subprocess.run(command, check=True, capture_output=True,
                                     text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", required=True, help="the torchscript_bench program")
    parser.add_argument("--model", required=True, help="the digits model (TorchScript)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--method", choices=["midpoint", "euler"], default="midpoint")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of sampling, flowmatch and Python in turn")
    parser.add_argument("--divergence-n", type=int, default=256)
    parser.add_argument("--retain-memory", action="store_true",
                        help="sampling on both sides with retain_freed_memory()'s settings")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.retain_memory:
        retain_freed_memory()
    module = torch.jit.load(args.model).eval()
    evaluations = args.steps * (2 if args.method == "midpoint" else 1)
    print(f"{args.method}, {args.steps} steps ({evaluations} evaluations), {args.threads} "
          f"thread(s), fastest of {args.rounds} x {args.repeats} runs"
          f"{', retain_freed_memory() on both sides' if args.retain_memory else ''}")
    print(f"{'N':>6} {'flowmatch (s)':>14} {'Python (s)':>11} {'ratio':>6}")
    for n in args.sizes:
        flowmatch_time = python_time = float("inf")
        for _ in range(args.rounds):
            measured = run_bench(args, ["--n", str(n), "--skip-divergence"])
            flowmatch_time = min(flowmatch_time, measured["sampling_seconds"])
            seconds, python_mean = python_sampling(module, n, args.steps, args.method,
                                                   args.repeats)
            python_time = min(python_time, seconds)
        print(f"{n:>6} {flowmatch_time:>14.4f} {python_time:>11.4f} "
              f"{python_time / flowmatch_time:>6.2f}   (sample means "
              f"{measured['sample_mean']:.3f} and {python_mean:.3f})")

    failed = False
    for retain in (False, True):
        settings = argparse.Namespace(**vars(args))
        settings.retain_memory = retain
        measured = run_bench(settings, ["--n", "1", "--divergence-n", str(args.divergence_n)])
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
