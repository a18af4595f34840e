"""Model-health metrics for Prometheus, computed at scrape time.

``DiagnosticsCollector`` is a prometheus_client custom collector: each scrape
asks its source for ``(name, diagnostics)`` pairs and turns every diagnostic
into a metric with a ``model`` label naming the estimator.  Nothing runs on
the hot path.  The source is either estimators -- found anywhere inside river
pipelines, unions, wrappers and ensembles -- or any callable returning the
pairs (the daemon passes its own).

Metric names are ``streamrnn_<diagnostic>`` in base units; the counters
(``steps``, ``updates``, ``skipped_updates``, ``clipped_updates``) end in
``_total``, the fraction of saturated units is ``_ratio``.  A hybrid model's
diagnostics hold its network's figures under ``rnn`` (published as above)
and its aggregation ``weights``, published as ``streamrnn_component_weight``
with a ``component`` label.  A numeric
diagnostic the table below does not know becomes a gauge of its own name, so
a source can add figures without changing this module.
"""

from __future__ import annotations

import collections
import inspect
import numbers
import re
from typing import Callable, Iterable, Iterator, Mapping

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "streamrnn_"

#: diagnostic key -> (metric name without prefix, kind, help)
METRICS = {
    "steps": ("steps", "counter", "Events the model has stepped through."),
    "updates": ("updates", "counter", "Parameter updates applied."),
    "skipped_updates": ("skipped_updates", "counter", "Steps whose update was skipped as non-finite."),
    "clipped_updates": ("clipped_updates", "counter", "Updates whose gradient was clipped."),
    "loss": ("loss", "gauge", "Loss of the newest step that had a target."),
    "hidden_norm": ("hidden_norm", "gauge", "Euclidean norm of the hidden state."),
    "saturated_fraction": ("saturated_ratio", "gauge", "Fraction of hidden units in saturation."),
    "grad_norm": ("grad_norm", "gauge", "Global gradient norm of the newest update, before clipping."),
    "grad_norm_clipped": ("grad_norm_clipped", "gauge", "Global gradient norm of the newest update, after clipping."),
    "jacobian_norm": ("jacobian_norm", "gauge", "Largest spectral norm of the recurrent Jacobian dh_t/dh_{t-1}."),
    "sensitivity_norm": ("sensitivity_norm", "gauge", "Frobenius norm of the RTRL sensitivities dh/dtheta."),
    "prediction": ("prediction", "gauge", "Newest network output, per output unit."),
    "gradient_regime": ("gradient_regime", "gauge", "1 for the current gradient regime, 0 for the others."),
    "weights": ("component_weight", "gauge",
                "Aggregation weight of each component one step ahead (rnn: the share of the network's correction)."),
    "bounded_values": ("bounded_values", "counter", "Values bounded before learning, as far outside all seen."),
}
REGIMES = ("vanishing", "stable", "exploding")

Pairs = Iterable[tuple[str, Mapping]]


# ----- finding estimators --------------------------------------------------------


def _children(obj) -> Iterator[tuple[str, object]]:
    """(name, part) for the parts of a river composite: pipeline steps, union members,
    a wrapper's model, ensemble members and estimator-valued parameters."""
    from river import base

    if isinstance(obj, Mapping):
        yield from ((str(k), v) for k, v in obj.items())
        return
    if isinstance(obj, (list, tuple, collections.UserList)):
        yield from ((str(i), v) for i, v in enumerate(obj))
        return
    if not isinstance(obj, base.Base):
        return
    for attr in ("steps", "transformers"):  # compose.Pipeline, compose.TransformerUnion
        parts = getattr(obj, attr, None)
        if isinstance(parts, Mapping):
            yield from ((str(k), v) for k, v in parts.items())
    if isinstance(obj, base.Wrapper):
        yield type(obj).__name__, obj._wrapped_model
    if isinstance(obj, collections.UserList):  # river ensembles are lists of models
        yield from ((str(i), v) for i, v in enumerate(obj))
    for name, param in inspect.signature(type(obj)).parameters.items():
        if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            value = getattr(obj, name, None)
            if isinstance(value, (base.Base, list, tuple, Mapping)) and not isinstance(value, str):
                yield name, value


def find_estimators(obj, path: str = "") -> Iterator[tuple[str, object]]:
    """(path, estimator) for every streamrnn estimator inside ``obj``, each once."""
    from .estimators.base import RNNEstimator

    seen: set[int] = set()

    def walk(o, p, depth):
        if id(o) in seen or depth > 20:
            return
        seen.add(id(o))
        if isinstance(o, RNNEstimator):
            yield p, o
            return
        for name, child in _children(o):
            yield from walk(child, f"{p}/{name}" if p else name, depth + 1)

    yield from walk(obj, path, 0)


def estimator_diagnostics(models) -> Callable[[], Pairs]:
    """A source for ``DiagnosticsCollector``: the diagnostics of the estimators in ``models``.

    ``models`` is an estimator or pipeline, a list of them, or a dict naming them.
    A named model holding one estimator is labelled by its name, one holding
    several by name/path (pipeline step names, wrapper names); unnamed ones by
    the estimator's class name, then "#2", "#3"... for the next of a class.
    """
    roots = list(models.items()) if isinstance(models, Mapping) else [("", m) for m in (
        models if isinstance(models, (list, tuple)) else [models]
    )]

    def source():
        out, used = [], collections.Counter()
        for name, root in roots:
            found = list(find_estimators(root))
            for path, est in found:
                if not name:
                    label = type(est).__name__
                else:
                    label = name if len(found) == 1 else f"{name}/{path}"
                used[label] += 1
                out.append((label if used[label] == 1 else f"{label}#{used[label]}", est.diagnostics))
        return out

    return source


# ----- the collector --------------------------------------------------------------


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    return float(v)


def _metric_name(key: str) -> str:
    return PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", str(key))


class DiagnosticsCollector:
    """Publish the diagnostics of streamrnn models to Prometheus at scrape time.

    Parameters
    ----------
    models
        What to publish: an estimator, a river pipeline or wrapper holding estimators,
        a list of those, a dict ``{name: model}``, or a callable returning
        ``(name, diagnostics mapping)`` pairs.
    registry
        Where to register (``prometheus_client.REGISTRY`` by default); None to not register.
    metrics
        More ``{diagnostic key: (metric name without prefix, "counter" or "gauge", help)}``
        to add to (or override in) ``METRICS``, for sources with figures of their own.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> from river import datasets, preprocessing
    >>> from streamrnn import DiagnosticsCollector, RNNRegressor
    >>> model = preprocessing.StandardScaler() | RNNRegressor(seed=1)
    >>> registry = CollectorRegistry()
    >>> _ = DiagnosticsCollector({"approval": model}, registry=registry)
    >>> for x, y in datasets.TrumpApproval().take(50):
    ...     model.learn_one(x, y)
    >>> registry.get_sample_value("streamrnn_steps_total", {"model": "approval"})
    50.0
    """

    def __init__(self, models, registry=REGISTRY, metrics: Mapping | None = None):
        self.source = models if callable(models) else estimator_diagnostics(models)
        self.metrics = {**METRICS, **(metrics or {})}
        if registry is not None:
            registry.register(self)

    def collect(self):
        families: dict[str, object] = {}

        def family(key: str):
            if key not in families:
                name, kind, doc = self.metrics.get(key, (None, "gauge", f"streamrnn diagnostic {key!r}."))
                name = PREFIX + name if name else _metric_name(key)
                labels = ["model"] + (["output"] if key == "prediction" else []) + (
                    ["regime"] if key == "gradient_regime" else []) + (["component"] if key == "weights" else [])
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                families[key] = cls(name, doc, labels=labels)
            return families[key]

        for model, diags in self.source():
            network = diags.get("rnn")
            if isinstance(network, Mapping):  # a hybrid model: its network's figures, then its own
                diags = {**network, **{k: v for k, v in diags.items() if k != "rnn"}}
            for key, v in diags.items():
                if key == "weights" and isinstance(v, Mapping):
                    for component, w in v.items():
                        if _number(w) is not None:
                            family(key).add_metric([model, str(component)], float(w))
                elif key == "gradient_regime":
                    for regime in REGIMES:
                        family(key).add_metric([model, regime], 1.0 if v == regime else 0.0)
                elif key == "prediction":
                    for i, p in enumerate(v or ()):
                        if _number(p) is not None:
                            family(key).add_metric([model, str(i)], float(p))
                elif _number(v) is not None:
                    family(key).add_metric([model], _number(v))
        return [f for f in families.values() if f.samples]
