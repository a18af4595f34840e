"""What a river user's event costs: predict_one + learn_one on TrumpApproval, against river's linear model.

    python benchmarks/estimator_speed.py              # 9 rounds (about a minute)
    python benchmarks/estimator_speed.py --rounds 3

Each round runs every estimator once over the 1,001 events of river's
TrumpApproval, progressively (predict, then learn), in turn, so that a slow
moment of the shared machine falls on all of them; the table gives the median
per-event cost over rounds, and the median (and range) over rounds of its
ratio to ``StandardScaler | LinearRegression`` measured in the same round.
The goal of the speed issue is ``RNNRegressor()`` <= 2 x that pipeline.  BLAS
runs on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from river import datasets, linear_model, preprocessing
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrnn import RNNRegressor  # noqa: E402

ESTIMATORS = {
    "StandardScaler | LinearRegression (river)": lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(),
    "RNNRegressor() (the defaults)": lambda: RNNRegressor(),
    "RNNRegressor(hidden_size=0) (no network)": lambda: RNNRegressor(hidden_size=0),
}


def per_event(make, data) -> float:
    model = make()
    start = time.perf_counter()
    for x, y in data:
        model.predict_one(x)
        model.learn_one(x, y)
    return (time.perf_counter() - start) / len(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()
    threadpool_limits(1)
    data = list(datasets.TrumpApproval())
    per_event(ESTIMATORS["RNNRegressor() (the defaults)"], data[:50])  # compiled kernels loaded outside the clock
    times = {name: [] for name in ESTIMATORS}
    for _ in range(args.rounds):
        for name, make in ESTIMATORS.items():
            times[name].append(per_event(make, data))
    base = times["StandardScaler | LinearRegression (river)"]
    print(f"\nTrumpApproval ({len(data):,} events), predict_one + learn_one, {args.rounds} rounds\n")
    print("| estimator | µs/event (median) | ÷ StandardScaler \\| LinearRegression, median of the rounds' ratios "
          "| lowest–highest round |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        # each round's ratio pairs runs made moments apart: the machine's speed drifts between rounds
        ratios = [v / b for v, b in zip(values, base)]
        print(f"| {name.replace('|', chr(92) + '|')} | {statistics.median(values) * 1e6:,.1f} "
              f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |")
    print("\nGoal: RNNRegressor() <= 2.00 x StandardScaler | LinearRegression.")


if __name__ == "__main__":
    main()
