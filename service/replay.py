"""``streamrnn replay FILE``: a recorded stream through the daemon's own worker, offline.

FILE is JSON lines (the protocol's events), CSV, or ``river:NAME`` (a series
bundled with river: waterflow, trump, airline).  CSV columns map to events:
``key`` and ``id`` when present; with a ``y`` column each row is a supervised
event whose features are the other numeric columns; otherwise each row is a
forecasting event of the ``value`` column, or of every numeric column.
Columns that are not numbers in the first row (dates, labels) are left out.

The same settings as ``streamrnn serve`` apply (``--config``, environment,
``--set``), with no checkpoints and no metrics server.  A progress bar goes
to stderr; at the end a table compares the error of the online network with
the persistence baseline (the key's previous target, or its newest value for
forecasts, one step ahead), on the same events.  ``--plot FILE.png`` draws
predictions against targets and the rolling loss; it needs matplotlib, which
streamrnn does not install (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import config as config_module
from .protocol import ForecastEvent, ProtocolError, SupervisedEvent, parse

ROLLING = 100  # events in the rolling mean of the plotted loss


def csv_events(text: str):
    """Protocol events from CSV text (see the module docstring)."""
    rows = csv.DictReader(io.StringIO(text))
    numeric = None
    for row in rows:
        if numeric is None:
            numeric = [c for c, v in row.items() if c not in ("key", "id") and _is_number(v)]
        values = {c: float(row[c]) for c in numeric if _is_number(row[c])}
        common = {k: row[k] for k in ("key", "id") if row.get(k)}
        if "y" in numeric:
            y = values.pop("y", None)
            yield SupervisedEvent(x=values, y=y, **common)
        elif "value" in numeric:
            yield ForecastEvent(value=values["value"], **common)
        else:
            yield ForecastEvent(value=[values[c] for c in numeric] if len(numeric) > 1 else values[numeric[0]],
                                **common)


def _is_number(text) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def read_events(spec: str):
    """(events, count): parsed events (or ProtocolErrors for bad JSON lines) from a file or river:NAME."""
    if spec.startswith("river:"):
        from .sources import series_lines

        data = series_lines(spec[len("river:"):])
    else:
        data = Path(spec).read_bytes()
    if spec.lower().endswith(".csv"):
        events = list(csv_events(data.decode("utf-8-sig")))
        return events, len(events)
    lines = [line for line in data.split(b"\n") if line.strip()]
    return (_parse(line) for line in lines), len(lines)


def _parse(line: bytes):
    try:
        return parse(line)
    except ProtocolError as err:
        return err


class Scores:
    """Absolute errors of the network and of persistence on the same one-step targets."""

    def __init__(self):
        self.model, self.persistence, self.losses = [], [], []
        self.predictions, self.targets = [], []
        self._previous: dict = {}  # key -> (one-step forecast or None, newest target/value)

    def add(self, event, reply: dict) -> None:
        key = reply["key"]
        before = self._previous.get(key)
        if isinstance(event, SupervisedEvent):
            if event.y is not None:
                y = np.ravel(event.y)
                if before is not None:
                    self._score(np.ravel(reply["prediction"]), before[1], y)
                self._previous[key] = (None, y)
        else:
            value = np.ravel(event.value)
            if before is not None and before[0] is not None:
                self._score(before[0], before[1], value)
            self._previous[key] = (np.ravel(reply["forecast"][0]), value)
        if reply.get("loss") is not None:
            self.losses.append(reply["loss"])

    def _score(self, prediction, persistence, target) -> None:
        self.model.append(float(np.mean(np.abs(prediction - target))))
        self.persistence.append(float(np.mean(np.abs(persistence - target))))
        self.predictions.append(float(prediction[0]))
        self.targets.append(float(target[0]))

    def table(self) -> str:
        rows = ["| model | MAE | RMSE | scored events |", "|---|---:|---:|---:|"]
        for name, errors in (("streamrnn", self.model), ("persistence (previous value)", self.persistence)):
            e = np.array(errors)
            mae = f"{e.mean():.4f}" if len(e) else "-"
            rmse = f"{math.sqrt(np.mean(e ** 2)):.4f}" if len(e) else "-"
            rows.append(f"| {name} | {mae} | {rmse} | {len(e)} |")
        return "\n".join(rows)


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, out=sys.stderr, width: int = 30):
        self.total, self.out, self.width = max(total, 1), out, width
        self.started = self.drawn = time.perf_counter()

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.drawn < 0.1:
            return
        self.drawn = now
        filled = int(self.width * done / self.total)
        rate = done / max(now - self.started, 1e-9)
        self.out.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} events"
                       f"  {rate:,.0f}/s ")
        self.out.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.out.write("\n")


def plot(scores: Scores, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=False)
    top.plot(scores.targets, label="target", lw=1)
    top.plot(scores.predictions, label="streamrnn (one step ahead)", lw=1)
    top.legend()
    top.set_title("predictions against targets")
    losses = np.array(scores.losses)
    if len(losses):
        k = min(ROLLING, len(losses))
        bottom.plot(np.convolve(losses, np.ones(k) / k, mode="valid"), lw=1)
    bottom.set_title(f"rolling loss ({ROLLING} events)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    from .serve import assignments

    p = argparse.ArgumentParser(prog="streamrnn replay", description=__doc__.splitlines()[0])
    p.add_argument("file", help="JSON lines, CSV, or river:NAME")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[])
    p.add_argument("--plot", metavar="PNG", help="draw predictions and the rolling loss (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        config = config_module.load(args.config, overrides=assignments(args.set) | {"checkpoint.enabled": False})
    except config_module.ConfigError as err:
        print(f"streamrnn replay: {err}", file=sys.stderr)
        return 2
    try:
        events, total = read_events(args.file)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        print(f"streamrnn replay: cannot read {args.file}: {err}", file=sys.stderr)
        return 1
    from threadpoolctl import threadpool_limits

    from .server import build_worker
    from .store import MemoryStore

    threadpool_limits(1)
    worker = build_worker(config, MemoryStore())
    scores, progress = Scores(), (None if args.quiet else Progress(total))
    rejected, done = 0, 0
    started = time.perf_counter()
    for event in events:
        done += 1
        try:
            if isinstance(event, ProtocolError):
                raise event
            reply = worker.respond(event)
        except ProtocolError as err:
            rejected += 1
            worker.stats.reject(err.code)
            continue
        if "error" not in reply and isinstance(event, (SupervisedEvent, ForecastEvent)):
            scores.add(event, reply)
        if progress:
            progress.update(done)
    elapsed = time.perf_counter() - started
    if progress:
        progress.close(done)
    print(f"\n{scores.table()}\n")
    print(f"{done} events ({rejected} rejected) in {elapsed:.2f} s, {1e6 * elapsed / max(done, 1):.0f} us per event; "
          f"mean loss {np.mean(scores.losses) if scores.losses else float('nan'):.4g}")
    if args.plot:
        try:
            plot(scores, args.plot)
        except ImportError:
            print("streamrnn replay: --plot needs matplotlib, which is not installed (pip install matplotlib)",
                  file=sys.stderr)
            return 1
        print(f"plot written to {args.plot}")
    return 0

