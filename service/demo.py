"""`streamrnn demo`: stream a real series through an online RNN and compare with persistence.

The series is river's bundled WaterFlow (1,268 hourly readings).  Each event
the network sees the standardised newest value and predicts the next change,
so that its forecast is the newest value plus a learned correction, and zero
output is exactly persistence.  It learns from each value when it arrives:
one pass, one update per event.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

import streamrnn as sr


class RunningScale:
    """Welford's running mean and variance, to standardise a stream as it comes."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, y: float) -> None:
        self.n += 1
        d = y - self.mean
        self.mean += d / self.n
        self.m2 += d * (y - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n > 1 and self.m2 > 0 else 1.0


def load_series(name: str) -> np.ndarray:
    from river import datasets

    series = {"waterflow": datasets.WaterFlow, "trump": datasets.TrumpApproval, "airline": datasets.AirlinePassengers}
    return np.array([float(y) for _, y in series[name]()])


def run(series: np.ndarray, model: sr.OnlineRNN, out=sys.stderr, every: int = 100) -> dict:
    scale = RunningScale()
    errors_rnn, errors_last = [], []
    started = time.perf_counter()
    previous = None
    for t, y in enumerate(series):
        if previous is not None:
            # the forecast of y made after seeing previous; then learn from y
            x = [(previous - scale.mean) / scale.std]
            guess = previous + model.predict(x)[0] * scale.std
            errors_rnn.append(abs(guess - y))
            errors_last.append(abs(previous - y))
            model.step(x, [(y - previous) / scale.std])
        scale.update(y)
        previous = y
        if out is not None and (t + 1) % every == 0:
            out.write(
                f"\r  {t + 1:>6}/{len(series)} events   MAE so far: rnn {np.mean(errors_rnn):.4f}"
                f"  persistence {np.mean(errors_last):.4f}"
            )
            out.flush()
    if out is not None:
        out.write("\n")
    elapsed = time.perf_counter() - started
    return {
        "events": len(errors_rnn),
        "mae_rnn": float(np.mean(errors_rnn)),
        "mae_persistence": float(np.mean(errors_last)),
        "us_per_event": 1e6 * elapsed / max(1, len(errors_rnn)),
    }


def default_model(seed: int = 0) -> sr.OnlineRNN:
    return sr.OnlineRNN(
        1, (sr.Elman(16),), sr.Readout(1), sr.SquaredError(), sr.RTRL(), sr.Adam(3e-4),
        clip_norm=1.0, seed=seed,
    )


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="streamrnn demo", description=__doc__.splitlines()[0])
    parser.add_argument("--series", choices=["waterflow", "trump", "airline"], default="waterflow")
    args = parser.parse_args(argv)
    series = load_series(args.series)
    print(f"streamrnn demo: {args.series}, {len(series)} events, Elman(16) + exact RTRL + Adam", file=sys.stderr)
    result = run(series, default_model())
    print(f"\n| model | MAE |\n|---|---|\n| streamrnn online RNN | {result['mae_rnn']:.4f} |"
          f"\n| persistence (last value) | {result['mae_persistence']:.4f} |")
    print(f"\n{result['events']} one-pass updates, {result['us_per_event']:.0f} us per event")
    return 0
