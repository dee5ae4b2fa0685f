#!/usr/bin/env python3
"""Exact minibatch OT: flowmatch's solve_assignment against POT's ot.emd on the same problems.

Build the benchmark program, then run this script with a Python that has numpy and POT
(Debian: python3-numpy, python3-pot):

    cmake -S . -B build -DFLOWMATCH_BUILD_BENCHMARKS=ON
    cmake --build build --target exact_ot_bench
    /usr/bin/python3 tests/bench/exact_ot_vs_pot.py --bench build/tests/bench/exact_ot_bench

For N in {1024, 4096} and d in {2, 32} the script writes two point clouds x0, x1 ([N, d],
float64) to x0_N{N}_d{d}.npy and x1_N{N}_d{d}.npy in --work (a temporary directory by
default), times ot.emd(a, b, M) with uniform a, b and M = ot.dist(x0, x1) (squared Euclidean),
the computation only, and runs `exact_ot_bench --points-dir` on the same files, which times
solve_assignment on the same cost in double and in float (the cost built from the points in
that precision). Both sides report the median over --repeats runs of the CPU time of the
process (steadier than wall time on a shared machine; both solvers are single-threaded) and
of the wall time. The table gives the ratio POT / flowmatch (above 1, flowmatch is faster).

Both must find the same optimal cost Σ_i C_iσ(i): to a relative 1e-9 in double, and in float,
whose costs are rounded to 24 bits, to a relative 1e-5. A disagreement is reported and makes
the script exit with status 1.

Sources are standard normal; --target sets the targets: normal (standard normal, the default),
shifted (standard normal + 3 in every coordinate) or checkerboard (2-D: uniform on the black
squares of a 4x4 board on [-4, 4]^2; in 32-D the checkerboard in the first two coordinates and
standard normal in the others).
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import ot

SIZES = (1024, 4096)
DIMS = (2, 32)
TOLERANCE = {"double": 1e-9, "float": 1e-5}


def target_points(kind, n, d, rng):
    if kind == "normal":
        return rng.standard_normal((n, d))
    if kind == "shifted":
        return rng.standard_normal((n, d)) + 3.0
    points = rng.standard_normal((n, d))
    # Black squares of a 4x4 board of side 2 on [-4, 4]^2: (column + row) even.
    column = rng.integers(0, 4, n)
    row = 2 * rng.integers(0, 2, n) + column % 2
    points[:, 0] = -4.0 + 2.0 * (column + rng.random(n))
    points[:, 1] = -4.0 + 2.0 * (row + rng.random(n))
    return points


def write_points(work, kind, seed):
    rng = np.random.default_rng(seed)
    for n in SIZES:
        for d in DIMS:
            np.save(work / f"x0_N{n}_d{d}.npy", rng.standard_normal((n, d)))
            np.save(work / f"x1_N{n}_d{d}.npy", target_points(kind, n, d, rng))


def time_pot(work, n, d, repeats):
    """Median CPU and wall seconds of ot.emd, and the optimal Σ_i C_iσ(i)."""
    x0 = np.load(work / f"x0_N{n}_d{d}.npy")
    x1 = np.load(work / f"x1_N{n}_d{d}.npy")
    cost = ot.dist(x0, x1)
    weights = np.full(n, 1.0 / n)
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        _, log = ot.emd(weights, weights, cost, numItermax=100_000_000, log=True)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
        if log["warning"] is not None:
            sys.exit(f"ot.emd at N = {n}, d = {d}: {log['warning']}")
    # The plan has mass 1/N on each assigned pair.
    return statistics.median(cpu), statistics.median(wall), n * log["cost"]


def run_flowmatch(bench, work, repeats):
    """{(type, N, d): (median CPU seconds, median wall seconds, total cost)}."""
    command = [str(bench), "--points-dir", str(work), "--benchmark_format=json",
               f"--benchmark_repetitions={repeats}", "--benchmark_report_aggregates_only=true",
               "--benchmark_min_time=0.1"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    results = {}
    for entry in json.loads(output)["benchmarks"]:
        # The median of the repetitions, or the single run when there is one.
        if entry["run_type"] == "aggregate" and entry["aggregate_name"] != "median":
            continue
        _, scalar, size, dim = entry["run_name"].split("/")
        key = (scalar, int(size.split(":")[1]), int(dim.split(":")[1]))
        unit = scale[entry["time_unit"]]
        results[key] = (entry["cpu_time"] * unit, entry["real_time"] * unit, entry["total_cost"])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", required=True, help="path of the exact_ot_bench program")
    parser.add_argument("--work", help="directory for the point files (default: temporary)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--target", choices=("normal", "shifted", "checkerboard"),
                        default="normal", help="distribution of the target cloud x1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        work = pathlib.Path(args.work or temporary)
        work.mkdir(parents=True, exist_ok=True)
        write_points(work, args.target, args.seed)
        pot = {(n, d): time_pot(work, n, d, args.repeats) for n in SIZES for d in DIMS}
        flowmatch = run_flowmatch(args.bench, work, args.repeats)

    print(f"targets: {args.target}; median of {args.repeats} runs; times in ms; "
          "ratio = POT / flowmatch (CPU time; wall time in the last column)")
    header = (f"{'workload':<22}{'POT':>10}{'flowmatch':>11}{'ratio':>8}"
              f"{'POT wall':>10}{'fm wall':>9}{'wall ratio':>11}  optimal cost")
    print(header)
    print("-" * len(header))
    failures = []
    for scalar in ("double", "float"):
        for n in SIZES:
            for d in DIMS:
                pot_cpu, pot_wall, pot_cost = pot[(n, d)]
                fm_cpu, fm_wall, fm_cost = flowmatch[(scalar, n, d)]
                error = abs(fm_cost - pot_cost) / abs(pot_cost)
                if error > TOLERANCE[scalar]:
                    failures.append(f"{scalar} N={n} d={d}: flowmatch {fm_cost!r}, "
                                    f"POT {pot_cost!r}, relative difference {error:.2e}")
                print(f"{f'{scalar} N={n} d={d}':<22}{pot_cpu * 1e3:>10.1f}{fm_cpu * 1e3:>11.1f}"
                      f"{pot_cpu / fm_cpu:>8.2f}{pot_wall * 1e3:>10.1f}{fm_wall * 1e3:>9.1f}"
                      f"{pot_wall / fm_wall:>11.2f}  {fm_cost:.10g} (rel. diff. {error:.1e})")
    if failures:
        print("optimal costs disagree:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
