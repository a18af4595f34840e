"""DiagnosticsCollector: estimators' health on a private registry, read back at scrape time."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from river import compose, datasets, preprocessing

from streamrnn import DiagnosticsCollector, RNNClassifier, RNNRegressor, RTRL
from streamrnn.metrics import find_estimators

TRUMP = list(datasets.TrumpApproval().take(40))


def test_collector_reads_an_estimator_inside_a_pipeline_at_scrape_time():
    model = preprocessing.StandardScaler() | RNNRegressor(seed=0, learner=RTRL(), clip_norm=0.01)
    registry = CollectorRegistry()
    DiagnosticsCollector({"approval": model}, registry=registry)
    assert registry.get_sample_value("streamrnn_steps_total", {"model": "approval"}) is None  # nothing yet
    for x, y in TRUMP:
        model.learn_one(x, y)
    value = lambda name, **labels: registry.get_sample_value(name, {"model": "approval", **labels})
    diags = model["RNNRegressor"].diagnostics
    network = diags["rnn"]  # the network's own figures; it starts learning at the second event
    assert value("streamrnn_steps_total") == diags["steps"] == 40.0
    assert value("streamrnn_updates_total") == network["updates"] == 39.0
    assert value("streamrnn_clipped_updates_total") > 0
    assert value("streamrnn_skipped_updates_total") == 0.0
    for component, weight in diags["weights"].items():  # whom the model trusts, per component
        assert value("streamrnn_component_weight", component=component) == weight
    assert sum(value("streamrnn_component_weight", component=c) for c in ("last", "mean", "linear",
                                                                          "linear_change")) == pytest.approx(1.0)
    diags = network
    assert value("streamrnn_grad_norm") >= value("streamrnn_grad_norm_clipped") == pytest.approx(0.01)
    assert value("streamrnn_hidden_norm") == diags["hidden_norm"]
    assert 0.0 <= value("streamrnn_saturated_ratio") <= 1.0
    assert value("streamrnn_jacobian_norm") == diags["jacobian_norm"]
    assert value("streamrnn_sensitivity_norm") == diags["sensitivity_norm"] > 0
    assert value("streamrnn_prediction", output="0") == diags["prediction"][0]
    regimes = {r: value("streamrnn_gradient_regime", regime=r) for r in ("vanishing", "stable", "exploding")}
    assert sorted(regimes.values()) == [0.0, 0.0, 1.0] and regimes[diags["gradient_regime"]] == 1.0
    model.learn_one(*TRUMP[0])
    assert value("streamrnn_steps_total") == 41.0  # computed when scraped, not when registered


def test_estimators_are_found_inside_wrappers_unions_and_lists():
    scaled = preprocessing.TargetStandardScaler(regressor=RNNRegressor(seed=0))
    union = compose.Pipeline(
        compose.TransformerUnion(preprocessing.StandardScaler(), preprocessing.MinMaxScaler()),
        RNNClassifier(seed=0),
    )
    assert [type(e).__name__ for _, e in find_estimators(scaled)] == ["RNNRegressor"]
    assert [type(e).__name__ for _, e in find_estimators([union, scaled])] == ["RNNClassifier", "RNNRegressor"]
    registry = CollectorRegistry()
    DiagnosticsCollector([scaled, union, RNNRegressor()], registry=registry)
    for x, y in TRUMP[:5]:
        scaled.learn_one(x, y)
        union.learn_one(x, y > 43.8)
    assert registry.get_sample_value("streamrnn_steps_total", {"model": "RNNRegressor"}) == 5.0
    assert registry.get_sample_value("streamrnn_steps_total", {"model": "RNNClassifier"}) == 5.0
    # an unused estimator has no diagnostics yet, and a second one of a class gets its own label
    assert registry.get_sample_value("streamrnn_steps_total", {"model": "RNNRegressor#2"}) is None


def test_a_callable_source_and_extra_diagnostics():
    registry = CollectorRegistry()
    source = lambda: [("daemon", {"steps": 7, "queue_depth": 3, "checkpoints": 2, "gradient_regime": "exploding"})]
    DiagnosticsCollector(source, registry=registry, metrics={"checkpoints": ("checkpoints", "counter", "Saved.")})
    value = lambda name, **labels: registry.get_sample_value(name, {"model": "daemon", **labels})
    assert value("streamrnn_steps_total") == 7.0
    assert value("streamrnn_queue_depth") == 3.0  # an unknown figure becomes a gauge of its name
    assert value("streamrnn_checkpoints_total") == 2.0
    assert value("streamrnn_gradient_regime", regime="exploding") == 1.0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_exposition_passes_promtool():
    models = {"approval": RNNRegressor(seed=0, learner=RTRL()), "phishing": RNNClassifier(seed=0)}
    registry = CollectorRegistry()
    DiagnosticsCollector(models, registry=registry)
    for x, y in TRUMP:
        models["approval"].learn_one(x, y)
        models["phishing"].learn_one(x, y > 43.8)
    exposition = generate_latest(registry)
    result = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
