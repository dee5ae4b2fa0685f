#!/usr/bin/env python3
"""Entropic OT: flowmatch's sinkhorn against POT's ot.sinkhorn on the same problems.

Build the benchmark program, then run this script with a Python that has numpy and POT
(Debian: python3-numpy, python3-pot):

    cmake -S . -B build -DFLOWMATCH_BUILD_BENCHMARKS=ON
    cmake --build build --target sinkhorn_bench
    /usr/bin/python3 tests/bench/sinkhorn_vs_pot.py --bench build/tests/bench/sinkhorn_bench

Workloads (fixed seeds), written to --work (a temporary directory by default) as
NAME_x0.npy and NAME_x1.npy (float64, [N, d]):
  eight_gaussians_N  2-D: N standard normal points against N points of the eight-Gaussian
                     mixture (means 5·(cos kπ/4, sin kπ/4), variance 0.1);
  mixture32_N        32-D: N standard normal points against N points of a ten-component
                     Gaussian mixture (means drawn from N(0, 4I), standard deviation 0.5);
for N in --sizes (1024 and 4096), in double and in float, with ε = F · mean_ij C_ij for F in
--epsilons (1, 0.1, 0.01, 0.001) and C the squared Euclidean cost (ot.dist on the POT side,
squared_euclidean_cost in the benchmark program, in the precision of the case).

For each case:
1. POT: ot.sinkhorn(a, b, M, reg) with uniform a, b and its defaults (numItermax 1000,
   stopThr 1e-9 on the L2 norm of the column-marginal error, tested every 10 iterations).
   The plain method ('sinkhorn', kernel exp(-M/reg)) underflows for small ε: when it warns
   of numerical errors, returns a non-finite plan, or a plan whose marginals are off by more
   than 0.5 (an all-zero plan), the case uses method='sinkhorn_log' instead, and says so.
   When POT stops at numItermax with an error that stopped decreasing before the end (float
   rounding), it is run again with stopThr at that smallest error, so that its time is that
   of reaching it. Its time is the median wall time of the ot.sinkhorn call over the repeats
   (fewer for long runs, see --budget).
2. The marginal error of a plan π is max(Σ_i |Σ_j π_ij − 1/N|, Σ_j |Σ_i π_ij − 1/N|), summed in
   float64 from the returned plan, the same way for both (POT ends on a row update, flowmatch
   on a column update: each has one marginal exact to rounding, and the other carries the
   error).
3. flowmatch: `sinkhorn_bench --points-dir` on the same files, filtered to the case, with
   --tolerance set to POT's marginal error (flowmatch stops on its row error, which is its
   marginal error by that definition) and --max-iterations 100000. Its time is the median
   wall time over the repeats (Google Benchmark repetitions).

The table gives both times, iterations and errors, their ratio POT / flowmatch (above 1,
flowmatch is faster), the relative difference of the transport costs <C, π>, and for N ≤ 1024
the L1 distance between the two plans. A case where flowmatch does not reach POT's error is
marked FAIL, and the script then exits with status 1.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import ot

DTYPES = {"double": np.float64, "float": np.float32}


def eight_gaussians(n, rng):
    angle = rng.integers(0, 8, n) * np.pi / 4
    means = 5.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return means + np.sqrt(0.1) * rng.standard_normal((n, 2))


def mixture32(n, rng):
    means = 2.0 * rng.standard_normal((10, 32))
    return means[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, 32))


def write_workloads(work, sizes):
    names = []
    for seed, (kind, dim, target) in enumerate(
            [("eight_gaussians", 2, eight_gaussians), ("mixture32", 32, mixture32)]):
        for n in sizes:
            rng = np.random.default_rng(1000 * seed + n)
            name = f"{kind}_{n}"
            np.save(work / f"{name}_x0.npy", rng.standard_normal((n, dim)))
            np.save(work / f"{name}_x1.npy", target(n, rng))
            names.append((name, n, dim))
    return names


def marginal_errors(plan):
    plan = np.asarray(plan, dtype=np.float64)
    rows = np.abs(plan.sum(axis=1) - 1.0 / plan.shape[0]).sum()
    columns = np.abs(plan.sum(axis=0) - 1.0 / plan.shape[1]).sum()
    return rows, columns


def run_pot(a, M, reg, method, stop_threshold=1e-9):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        plan, log = ot.sinkhorn(a, a, M, reg, method=method, stopThr=stop_threshold, log=True)
        seconds = time.perf_counter() - start
    messages = [str(w.message) for w in caught]
    return plan, log, seconds, messages


def plain_failed(plan, messages):
    if any("numerical errors" in m for m in messages):
        return "numerical errors"
    if not np.all(np.isfinite(plan)):
        return "non-finite plan"
    if max(marginal_errors(plan)) > 0.5:
        return "plan of mass %.3g" % float(np.asarray(plan, dtype=np.float64).sum())
    return None


def time_pot(a, M, reg, method, budget, repeats):
    """POT's plan and median time, its method as used and a note on how it was run."""
    plan, log, seconds, messages = run_pot(a, M, reg, method)
    note = []
    if method == "sinkhorn":
        failure = plain_failed(plan, messages)
        if failure:
            note.append("plain: " + failure)
            method = "sinkhorn_log"
            plan, log, seconds, messages = run_pot(a, M, reg, method)
    stop_threshold = 1e-9
    errors = [float(e) for e in log["err"]]
    if log["niter"] >= 999 and errors:
        best = int(np.argmin(errors))
        if best < 0.9 * len(errors):
            stop_threshold = errors[best] * (1 + 1e-9)
            note.append("stopThr %.3g" % stop_threshold)
            plan, log, seconds, messages = run_pot(a, M, reg, method, stop_threshold)
    times = [seconds]
    for _ in range(min(repeats, int(budget / max(seconds, 1e-9))) - 1):
        times.append(run_pot(a, M, reg, method, stop_threshold)[2])
    return plan, log, float(np.median(times)), method, note


def run_flowmatch(bench, work, name, scalar, fraction, tolerance, repeats, save_plans):
    command = [
        str(bench), "--points-dir", str(work), "--epsilons", fraction,
        "--tolerance", repr(tolerance), "--max-iterations", "100000",
        f"--benchmark_filter=^sinkhorn/{name}/{scalar}/eps:{fraction}/",
        f"--benchmark_repetitions={repeats}", "--benchmark_report_aggregates_only=true",
        "--benchmark_format=json"]
    if save_plans:
        command += ["--save-plans", str(work)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    for entry in json.loads(output)["benchmarks"]:
        if entry.get("aggregate_name", "median") == "median":
            return entry
    raise RuntimeError(f"no result for {name}/{scalar}/eps:{fraction}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", required=True, help="path of the sinkhorn_bench program")
    parser.add_argument("--work", help="directory for the point files (default: temporary)")
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--epsilons", default="1,0.1,0.01,0.001",
                        help="ε as fractions of the mean cost")
    parser.add_argument("--scalars", default="double,float")
    parser.add_argument("--workloads", default="eight_gaussians,mixture32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of POT timing per case beyond the first run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        work = pathlib.Path(args.work or temporary)
        work.mkdir(parents=True, exist_ok=True)
        sizes = [int(s) for s in args.sizes.split(",")]
        kinds = args.workloads.split(",")
        workloads = [w for w in write_workloads(work, sizes) if w[0].rsplit("_", 1)[0] in kinds]
        header = ("workload", "type", "eps/mean", "POT method", "POT it", "POT err", "POT ms",
                  "fm it", "fm err", "fm ms", "POT/fm", "dcost", "dplan")
        row_format = "{:<21} {:<6} {:>8} {:<12} {:>6} {:>9} {:>9} {:>6} {:>9} {:>9} {:>7} " \
                     "{:>8} {:>8}"
        print(row_format.format(*header), flush=True)
        failures = 0
        notes = []
        for name, n, dim in workloads:
            x0 = np.load(work / f"{name}_x0.npy")
            x1 = np.load(work / f"{name}_x1.npy")
            for scalar in args.scalars.split(","):
                dtype = DTYPES[scalar]
                M = ot.dist(x0.astype(dtype), x1.astype(dtype))
                a = np.full(n, 1.0 / n, dtype=dtype)
                for fraction in args.epsilons.split(","):
                    reg = float(fraction) * float(M.astype(np.float64).mean())
                    plan, log, pot_seconds, method, note = time_pot(
                        a, M, reg, "sinkhorn", args.budget, args.repeats)
                    pot_error = max(marginal_errors(plan))
                    pot_plan = np.asarray(plan, dtype=np.float64)
                    pot_cost = float((pot_plan * M.astype(np.float64)).sum())
                    save_plans = n <= 1024
                    fm = run_flowmatch(args.bench, work, name, scalar, fraction, pot_error,
                                       args.repeats, save_plans)
                    fm_error = max(fm["row_error"], fm["column_error"])
                    fm_ms = fm["real_time"]
                    distance = ""
                    if save_plans:
                        fm_plan = np.load(work / f"{name}_{scalar}_eps:{fraction}.npy").T
                        distance = "%.1e" % np.abs(fm_plan - pot_plan).sum()
                    ok = fm_error <= pot_error and abs(fm["epsilon"] / reg - 1) < 1e-5
                    failures += not ok
                    case = f"{name}/{scalar}/{fraction}"
                    if note:
                        notes.append(f"{case}: " + "; ".join(note))
                    print(row_format.format(
                        name, scalar, fraction, method, log["niter"] + 1, "%.2e" % pot_error,
                        "%.2f" % (1e3 * pot_seconds), int(fm["iterations"]), "%.2e" % fm_error,
                        "%.2f" % fm_ms, "%.1f" % (1e3 * pot_seconds / fm_ms),
                        "%.0e" % abs(fm["transport_cost"] / pot_cost - 1), distance)
                        + ("" if ok else "  FAIL"), flush=True)
        for note in notes:
            print(note)
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
