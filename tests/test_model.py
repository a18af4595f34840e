"""The model's contract: bad input is refused without changing state, the guard, predict purity, diagnostics."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn import (
    GRU, LRU, RTRL, SGD, Adam, CrossEntropy, Elman, Leaky, LogLoss, OnlineRNN, Readout, TruncatedBPTT,
)


def make(**kw):
    args = dict(n_inputs=2, layers=(Elman(4, "relu"),), readout=Readout(1), learner=RTRL(), optimizer=Adam(0.01), seed=0)
    args.update(kw)
    return OnlineRNN(**args)


def snapshot(model):
    arrays, header = model.state_dict()
    return {k: v.copy() for k, v in arrays.items()}, header


def assert_same(a, b):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k], err_msg=k)
    assert a[1] == b[1]


@pytest.mark.parametrize("build, word", [
    (lambda: Elman(0), "units"),
    (lambda: Elman(3, "swish"), "activation"),
    (lambda: Leaky(3, beta=0.0), "beta"),
    (lambda: Leaky(3, beta=1.5), "beta"),
    (lambda: Leaky(3, beta=(0.5, 0.5)), "beta"),
    (lambda: Elman(3, gain=-0.5), "gain"),
    (lambda: Leaky(3, gain=float("nan")), "gain"),
    (lambda: Readout(0), "outputs"),
    (lambda: Readout(2, "tanh"), "output activation"),
    (lambda: TruncatedBPTT(3, 4), "h_prime"),
    (lambda: TruncatedBPTT(0), "h"),
    (lambda: make(n_inputs=0), "n_inputs"),
    (lambda: make(layers=()), "layers"),
    (lambda: make(layers=("tanh",)), "layers must be cells .*Elman.*Leaky"),
    (lambda: make(loss=LogLoss()), "sigmoid"),
    (lambda: make(readout=Readout(2, "identity"), loss=CrossEntropy()), "softmax"),
    (lambda: make(clip_norm=-1.0), "clip_norm"),
    (lambda: make(optimizer="adam"), "optimizer"),
    (lambda: make(learner="rtrl"), "learner"),
])
def test_bad_construction_names_the_argument(build, word):
    with pytest.raises(ValueError, match=word):
        build()


BAD_NUMBERS = [
    ([1.0], [0.0], "x must have 2"),
    ([1.0, float("nan")], [0.0], "x must be finite"),
    ([1.0, float("inf")], None, "x must be finite"),
    ([1.0, 2.0], [float("nan")], "y must be finite"),
    ([1.0, 2.0], [1.0, 2.0], "y must have 1"),
]


@pytest.mark.parametrize("x, y, word, arrays", [
    *[(*case, False) for case in BAD_NUMBERS], (["a", 1.0], [0.0], "x must be", False),
    *[(np.array(x), None if y is None else np.array(y), word, True) for x, y, word in BAD_NUMBERS],
])
def test_bad_input_raises_and_changes_nothing(x, y, word, arrays):
    """Lists take the checked path; float64 vectors of the right width go straight to a compiled step,
    which must refuse a value that is not finite (tanh(inf) is finite: the state would not show it)."""
    model = make()
    for t in range(5):
        model.step([t, -t], [0.5])
    before = snapshot(model)
    with pytest.raises(ValueError, match=word):
        model.step(x, y)
    assert_same(before, snapshot(model))


def test_masked_targets_may_be_unknown():
    model = make(readout=Readout(2))
    before = snapshot(model)
    result = model.step([0.1, 0.2], [float("nan"), 1.0], mask=[False, True])
    assert np.isfinite(result.loss) and model.counters["updates"] == 1
    with pytest.raises(ValueError, match="y must be finite"):
        model.step([0.1, 0.2], [float("nan"), 1.0], mask=[True, True])
    with pytest.raises(ValueError, match="mask must have 2"):
        model.step([0.1, 0.2], [0.0, 1.0], mask=[True])
    assert before[1]["counters"]["steps"] == 0


def test_crossentropy_target_must_be_a_distribution():
    model = make(readout=Readout(3, "softmax"), loss=CrossEntropy())
    with pytest.raises(ValueError, match="probability"):
        model.step([0.0, 1.0], [0.5, 0.9, 0.0])


def test_non_finite_gradient_applies_no_update_and_is_counted():
    model = make(layers=(Elman(4, "identity"),), optimizer=SGD(0.0))
    for t in range(3):
        model.step([0.1, 0.2], [0.3])
    model.params["U0"][...] = np.eye(4) * 1e200  # the next step overflows
    before = snapshot(model)
    result = model.step([1e150, 1e150], [0.0])
    after = snapshot(model)
    assert model.counters["skipped"] == 1
    for name in ("U0", "W0", "b0", "V", "c", "optimizer.count"):
        np.testing.assert_array_equal(before[0][name], after[0][name])
    assert np.isfinite(model.network.stack.hidden(0)).all()
    assert result.loss is None or not np.isfinite(result.loss)


def test_large_gradient_guard_keeps_optimiser_state(monkeypatch):
    # the numpy path's learner is poisoned; the compiled step's guard has its own test (test_kernels.py)
    model = make(optimizer=Adam(0.1), kernels=False)
    for t in range(4):
        model.step([0.1 * t, 0.2], [0.3])
    before = snapshot(model)

    def poisoned(net, delta, grad):  # a learner that produces a NaN gradient
        grad[...] = np.nan
        return True

    monkeypatch.setattr(model.learner, "step", poisoned)
    model.step([0.5, 0.5], [1.0])
    after = snapshot(model)
    assert model.counters["skipped"] == 1 and model.counters["updates"] == before[1]["counters"]["updates"]
    for name in ("U0", "W0", "V", "optimizer.m", "optimizer.s", "optimizer.count"):
        np.testing.assert_array_equal(before[0][name], after[0][name])


def test_predict_is_pure_and_reused_by_step():
    a, b = make(), make()
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.normal(size=2), rng.normal(size=1)
        before = snapshot(a)
        p = a.predict(x)
        assert_same(before, snapshot(a))  # predicting changes nothing
        np.testing.assert_array_equal(p, a.step(x, y).prediction)
        b.step(x, y)
    assert_same(snapshot(a), snapshot(b))


def test_steps_without_target_advance_the_state_but_do_not_learn():
    model = make(layers=(Elman(4, "tanh"),))
    params = {k: v.copy() for k, v in model.params.items()}
    h0 = model.network.stack.hidden(0).copy()
    model.step([1.0, -1.0])
    assert model.counters["updates"] == 0
    assert not np.array_equal(h0, model.network.stack.hidden(0))
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, params[k])


def test_diagnostics_after_a_step():
    model = make(layers=(Elman(6),), clip_norm=1e-3)
    for t in range(10):
        model.step([np.sin(t), np.cos(t)], [1.0])
    d = model.diagnostics()
    assert d["steps"] == 10 and d["updates"] == 10 and d["clipped_updates"] == 10
    assert d["grad_norm"] > d["grad_norm_clipped"] == pytest.approx(1e-3)
    assert d["hidden_norm"] == pytest.approx(np.linalg.norm(model.network.stack.hidden(0)))
    assert 0.0 <= d["saturated_fraction"] <= 1.0
    assert d["sensitivity_norm"] > 0 and d["jacobian_norm"] > 0
    assert d["gradient_regime"] in ("vanishing", "stable", "exploding")
    assert np.isclose(np.linalg.norm(np.concatenate([g.ravel() for g in model.gradient.values()])), 1e-3)
    model.params["U0"][...] = np.eye(6) * 10.0  # a large recurrent gain with unsaturated units explodes
    model.network.stack.layers[0].record["D"][...] = 1.0
    assert model.diagnostics()["gradient_regime"] == "exploding"


@pytest.mark.parametrize("feedback", [False, True])
def test_rollout_equals_stepping_a_copy_without_targets(feedback):
    import copy

    model = make(layers=(Elman(5), Leaky(3, beta=0.4)), readout=Readout(2), target_feedback=feedback)
    rng = np.random.default_rng(2)
    for _ in range(30):
        model.step(rng.normal(size=2), rng.normal(size=2))
    before = snapshot(model)
    xs = rng.normal(size=(6, 2))
    seen = []

    def next_input(k, previous):
        seen.append(None if previous is None else previous.copy())
        return xs[k]

    path = model.rollout(next_input, 6)
    twin = copy.deepcopy(model)
    expected = np.array([twin.step(x).prediction for x in xs])
    np.testing.assert_allclose(path, expected, rtol=1e-12, atol=1e-14)
    assert seen[0] is None and np.array_equal(seen[3], path[2])
    assert_same(before, snapshot(model))  # the live model did not move
    with pytest.raises(ValueError, match="horizon"):
        model.rollout(next_input, 0)


def test_recurrent_gain_scales_the_initial_orthogonal_u():
    unit = OnlineRNN(1, (Elman(6), Leaky(4, beta=0.5)), seed=3)
    scaled = OnlineRNN(1, (Elman(6, gain=0.25), Leaky(4, beta=0.5, gain=0.0)), seed=3)
    np.testing.assert_allclose(np.linalg.svd(unit.params["U0"], compute_uv=False), 1.0)
    np.testing.assert_allclose(scaled.params["U0"], 0.25 * unit.params["U0"])
    assert not scaled.params["U1"].any()
    assert scaled.config()["layers"][0]["gain"] == 0.25


def _finite_difference_jacobian(model, l, h_prev, x_in, eps=1e-6):
    """dh_t/dh_{t-1} of layer l by central differences of h_t = (1 - beta) h + beta tanh(U h + W x + b)."""
    p = model.params
    U, W, b = p[f"U{l}"], p[f"W{l}"], p[f"b{l}"]
    beta = model.network.stack.cells[l].beta_vector()
    beta = np.ones(len(h_prev)) if beta is None else beta

    def h_new(h):
        return (1.0 - beta) * h + beta * np.tanh(U @ h + W @ x_in + b)

    J = np.empty((len(h_prev), len(h_prev)))
    for j in range(len(h_prev)):
        d = np.zeros(len(h_prev))
        d[j] = eps
        J[:, j] = (h_new(h_prev + d) - h_new(h_prev - d)) / (2 * eps)
    return J


@pytest.mark.parametrize("layers", [
    (Leaky(5, "tanh", beta=0.3),),
    (Elman(4, "tanh"), Leaky(3, "tanh", beta=(0.2, 0.5, 0.9))),
    (Leaky(3, "tanh", beta=0.6), Elman(4, "tanh")),
], ids=["leaky", "elman-then-leaky", "leaky-then-elman"])
def test_jacobian_norm_and_regime_equal_finite_differences_of_the_step(layers):
    """diagnostics' ||J|| against dh_t/dh_{t-1} measured by finite differences of the step itself."""
    model = make(layers=layers)
    rng = np.random.default_rng(4)
    st = model.network.stack
    for _ in range(15):
        model.step(rng.normal(size=2), rng.normal(size=1))
    h_prev = [st.hidden(l).copy() for l in range(len(layers))]
    x = rng.normal(size=2)
    model.step(x)  # no target: the weights of this step are still the model's weights
    norms = []
    for l in range(len(layers)):
        x_in = x if l == 0 else st.hidden(l - 1)  # the input of layer l at the newest step
        J = _finite_difference_jacobian(model, l, h_prev[l], x_in)
        np.testing.assert_allclose(st.recurrent_jacobian(l), J, atol=1e-7)
        norms.append(np.linalg.norm(J, 2))
    d = model.diagnostics()
    assert d["jacobian_norm"] == pytest.approx(max(norms), rel=1e-6)

    # where the leak decides the regime: U = 0 leaves J = (1 - beta) I, a slow but stable decay
    slow = make(layers=(Leaky(4, "tanh", beta=0.1),))
    slow.params["U0"][...] = 0.0
    h_prev = slow.network.stack.hidden(0).copy()
    slow.step(x)
    J = _finite_difference_jacobian(slow, 0, h_prev, x)
    np.testing.assert_allclose(J, 0.9 * np.eye(4), atol=1e-8)
    assert slow.diagnostics()["jacobian_norm"] == pytest.approx(0.9)
    assert slow.diagnostics()["gradient_regime"] == "stable"  # 0.9 ** 10 = 0.35: not vanishing


def test_loading_a_state_drops_the_forward_pass_a_predict_cached(tmp_path):
    """predict caches its forward pass for the next step; a load in between must not let the
    step reuse it: the step after the load is the loaded model's step, bit for bit."""
    rng = np.random.default_rng(6)
    a, b = make(seed=0), make(seed=1)
    for _ in range(10):
        x, y = rng.normal(size=2), rng.normal(size=1)
        a.step(x, y)
        b.step(x, -y)
    b.save(tmp_path / "b.npz")
    x, y = rng.normal(size=2), rng.normal(size=1)
    for load in (lambda m: m.load_state_dict(*b.state_dict()), lambda m: m.load(tmp_path / "b.npz")):
        model = make(seed=0)
        model.load_state_dict(*a.state_dict())
        model.predict(x)  # caches a's forward pass for x
        load(model)
        twin = make(seed=2)
        twin.load_state_dict(*b.state_dict())
        got, want = model.step(x, y), twin.step(x, y)
        np.testing.assert_array_equal(got.prediction, want.prediction)
        assert got.loss == want.loss
        assert_same(snapshot(model), snapshot(twin))


# ----- learner specifications: repr, equality, hashing, configs and the registry ----------------------


def test_learner_specs_repr_compare_hash_and_round_trip_their_config():
    from streamrnn import EpochwiseBPTT
    from streamrnn.learners import from_config

    specs = [RTRL(), TruncatedBPTT(8, 2), EpochwiseBPTT()]
    assert [repr(s) for s in specs] == ["RTRL()", "TruncatedBPTT(h=8, h_prime=2)", "EpochwiseBPTT()"]
    assert TruncatedBPTT(8, 2) == TruncatedBPTT(8, 2) and hash(TruncatedBPTT(8, 2)) == hash(TruncatedBPTT(8, 2))
    assert TruncatedBPTT(8, 2) != TruncatedBPTT(8, 1) and RTRL() != EpochwiseBPTT() and RTRL() != "RTRL"
    assert len({TruncatedBPTT(8, 2), TruncatedBPTT(8, 2), TruncatedBPTT(4, 2), RTRL(), RTRL()}) == 3
    same_config = type("NotRTRL", (RTRL,), {"name": ""})()  # an unregistered subclass: the same config, another type
    assert same_config.config() == RTRL().config() and same_config != RTRL()
    for spec in specs:
        assert from_config(spec.config()) == spec
    with pytest.raises(ValueError, match=r"^learner kind must be one of \[.*'RTRL'.*\], got None$"):
        from_config({})
    with pytest.raises(ValueError, match=r"^learner kind must be one of \[.*'TruncatedBPTT'.*\], got 'LSTM'$"):
        from_config({"kind": "LSTM"})


def test_learners_register_by_name_once_and_list_their_settings():
    from streamrnn.learners import REGISTRY, Learner

    class Probe(Learner):
        name = "probe-for-the-test"

        def __init__(self, size: int = 3, scale=0.5, *rest, flag: bool = False, **extra):
            pass

    try:
        assert REGISTRY["probe-for-the-test"] is Probe
        assert Probe.settings() == {"size": (int, 3), "scale": (object, 0.5), "flag": (bool, False)}
        with pytest.raises(ValueError, match=r"^a learner named 'rtrl' is registered already \(<class '.*\.RTRL'>\)$"):
            type("AnotherRTRL", (Learner,), {"name": "rtrl"})
        assert REGISTRY["rtrl"] is RTRL
    finally:
        REGISTRY.pop("probe-for-the-test", None)
    assert RTRL.settings() == {} and TruncatedBPTT.settings() == {"h": (int, 10), "h_prime": (int, 1)}


def test_a_misshapen_learner_array_is_named_with_both_shapes():
    model = make()
    bound = model.learner.bind(model.network)
    with pytest.raises(ValueError, match=r"^learner array 'S0' has shape \(1,\), expected \(4, \d+\)$"):
        bound.load_state_arrays({"S0": np.zeros(1)})
    with pytest.raises(ValueError, match=r"^learner state is missing array 'S0'$"):
        bound.load_state_arrays({})


def test_epochwise_bptt_state_its_names_an_integer_length_and_an_empty_sequence_learns_nothing():
    from streamrnn import EpochwiseBPTT

    model = make(learner=EpochwiseBPTT(), optimizer=SGD(0.1))
    rng = np.random.default_rng(1)
    for _ in range(20):  # past the tape's first 16 rows
        model.step(rng.normal(size=2), rng.normal(size=1))
    arrays = model.state_dict()[0]
    assert arrays["learner.length"].dtype == np.int64 and int(arrays["learner.length"]) == 20
    model.end_sequence()
    updates, params = model.counters["updates"], {k: v.copy() for k, v in model.params.items()}
    model.end_sequence()  # nothing recorded since: no update, not the last gradient again
    assert model.counters["updates"] == updates
    assert all(np.array_equal(v, params[k]) for k, v in model.params.items())

    bound = EpochwiseBPTT().bind(model.network)  # the learner alone: end_sequence forgets the sequence
    grad = np.zeros_like(model.grad)
    bound.step(model.network, np.ones(1), grad)
    assert bound.end_sequence(model.network, grad) and int(bound.state_arrays()["length"]) == 0
    assert not bound.end_sequence(model.network, grad)
    with pytest.raises(ValueError, match=r"^learner state is missing array 'length'$"):
        bound.load_state_arrays({})


def test_learner_state_layouts_are_declared_for_every_array_from_the_known_kinds():
    from streamrnn import EpochwiseBPTT

    for learner in (RTRL(), TruncatedBPTT(4, 2), EpochwiseBPTT()):
        model = make(learner=learner, layers=(Elman(3), Leaky(2, beta=0.5)))
        layouts = model.learner.layouts()
        assert set(layouts) == set(model.learner.state_arrays()), learner
        assert set(layouts.values()) <= {"theta", "inputs0", "outputs", "fixed"}, layouts
    tape = model.learner._tape
    assert tape.layouts("t.") == {"t.vr": "fixed", "t.delta": "outputs", "t.v0": "inputs0", "t.D0": "fixed",
                                  "t.v1": "fixed", "t.D1": "fixed"}


def test_backprop_of_several_losses_is_the_sum_of_each_ones_and_a_new_sequence_starts_clean():
    from streamrnn import EpochwiseBPTT
    from streamrnn.learners.tape import backprop

    model = make(learner=EpochwiseBPTT(), optimizer=SGD(0.0))
    rng = np.random.default_rng(2)
    for _ in range(4):
        model.step(rng.normal(size=2), rng.normal(size=1))
    net, tape = model.network, model.learner._tape
    order = [3, 2, 1, 0]
    both, first, second = (np.zeros_like(model.grad) for _ in range(3))
    backprop(net, tape, order, 2, both)  # the losses at rows 3 and 2
    backprop(net, tape, order, 1, first)
    backprop(net, tape, order[1:], 1, second)
    np.testing.assert_allclose(both, first + second, rtol=1e-12, atol=1e-14)

    bound = EpochwiseBPTT().bind(net)  # the learner alone, no reset between sequences
    fresh = EpochwiseBPTT().bind(net)
    long, short = np.zeros_like(model.grad), np.zeros_like(model.grad)
    for _ in range(5):
        net.forward(rng.normal(size=2))
        bound.step(net, np.ones(1), long)
    bound.end_sequence(net, long)
    x = rng.normal(size=2)
    net.forward(x)
    bound.step(net, np.ones(1), long)
    fresh.step(net, np.ones(1), short)
    assert bound.end_sequence(net, long) and fresh.end_sequence(net, short)
    np.testing.assert_array_equal(long, short)  # the old sequence's rows add nothing


def test_truncated_bptt_updates_every_h_prime_steps_that_had_a_target_and_starts_afresh_after_a_reset():
    with pytest.raises(ValueError, match=r"^h must be an integer >= 1, got 0$"):
        TruncatedBPTT(0)
    with pytest.raises(ValueError, match=r"^h_prime must be an integer >= 1, got 0$"):
        TruncatedBPTT(3, 0)
    assert TruncatedBPTT() == TruncatedBPTT(10, 1)

    def update_steps(model, targets):
        rng = np.random.default_rng(4)
        steps = []
        for t, has_target in enumerate(targets):
            before = model.counters["updates"]
            model.step(rng.normal(size=2), rng.normal(size=1) if has_target else None)
            if model.counters["updates"] > before:
                steps.append(t)
        return steps

    model = make(learner=TruncatedBPTT(5, 3), optimizer=SGD(0.01))
    # no target in the first three steps: nothing due; then one every third step
    assert update_steps(model, [False] * 3 + [True] * 9) == [5, 8, 11]
    counters = model.state_dict()[0]["learner.counters"]
    assert counters.dtype == np.int64 and counters.tolist()[1:] == [5, 0, 0]  # the window full, nothing pending
    model.reset_state()
    assert model.state_dict()[0]["learner.counters"].tolist() == [-1, 0, 0, 0]
    twin = make(learner=TruncatedBPTT(5, 3), optimizer=SGD(0.01))
    twin.load_state_dict(*model.state_dict())
    rng = np.random.default_rng(5)
    for _ in range(3):  # after the reset, as a fresh learner at the same weights: the same gradient
        x, y = rng.normal(size=2), rng.normal(size=1)
        model.step(x, y)
    fresh = make(learner=TruncatedBPTT(5, 3), optimizer=SGD(0.01))
    fresh.load_state_dict(*twin.state_dict())
    rng = np.random.default_rng(5)
    for _ in range(3):
        fresh.step(rng.normal(size=2), rng.normal(size=1))
    np.testing.assert_array_equal(model.gradient["U0"], fresh.gradient["U0"])


@pytest.mark.parametrize("layers", [(Elman(5),), (Elman(4), GRU(3)), (LRU(4),)], ids=["elman", "stack", "lru"])
def test_a_repeated_first_draw_is_copied_and_equals_drawing_again(layers, monkeypatch):
    """Models of one layout and seed start from one draw (made once per process); the copy equals a
    fresh draw, weights and generator alike, and another seed, gain or layout draws its own."""
    from streamrnn import network

    monkeypatch.setattr(network, "_INITIAL", {})
    drawn = OnlineRNN(3, layers, seed=11)
    assert len(network._INITIAL) == 1
    copied = OnlineRNN(3, layers, seed=11)
    assert len(network._INITIAL) == 1
    np.testing.assert_array_equal(copied.network.theta, drawn.network.theta)
    assert copied._rng is None  # a copied draw makes no generator until one is asked for
    assert copied.rng_state == drawn.rng.bit_generator.state == drawn.rng_state
    assert copied.rng.bit_generator.state == drawn.rng.bit_generator.state
    np.testing.assert_array_equal(copied.rng.standard_normal(4), drawn.rng.standard_normal(4))
    x = np.array([0.3, -0.1, 0.2])
    np.testing.assert_array_equal(copied.step(x, [0.5]).prediction, drawn.step(x, [0.5]).prediction)
    other = OnlineRNN(3, layers, seed=12)
    assert len(network._INITIAL) == 2 and not np.array_equal(other.network.theta, drawn.network.theta)


def test_the_first_draws_kept_are_bounded(monkeypatch):
    from streamrnn import network

    monkeypatch.setattr(network, "_INITIAL", {})
    for seed in range(network._INITIAL_KEPT + 5):
        OnlineRNN(1, (Elman(2),), seed=seed)
    assert len(network._INITIAL) == network._INITIAL_KEPT


def test_a_big_theta_or_another_generator_is_drawn_every_time(monkeypatch):
    """Only a small theta's draw from a numpy Generator is kept; a RandomState draws as it always did."""
    from streamrnn import network

    monkeypatch.setattr(network, "_INITIAL", {})
    big = network.Network(4, (Elman(300),), Readout(1))
    assert big.theta.nbytes > network._INITIAL_BYTES
    big.init_params(np.random.default_rng(0))
    small = network.Network(4, (Elman(3),), Readout(1))
    small.init_params(np.random.RandomState(0))
    assert not network._INITIAL
    again = network.Network(4, (Elman(3),), Readout(1))
    again.init_params(np.random.RandomState(0))
    np.testing.assert_array_equal(again.theta, small.theta)


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("learner", [lambda: RTRL(), lambda: TruncatedBPTT(5, 1)])
def test_models_sharing_a_scratch_step_as_models_with_their_own_buffers(kernels, learner):
    """Models that step one at a time may share their gradient buffers and the compiled step's working arrays
    (a daemon's keys): interleaved, each equals a model with buffers of its own, bit for bit, on both paths."""
    import pickle

    from streamrnn.hybrid.regressor import HybridRegressor
    from streamrnn.model import Scratch

    scratch = Scratch()

    def pair(seed):
        return [OnlineRNN(2, (Elman(6),), learner=learner(), clip_norm=0.5, seed=seed, kernels=kernels, scratch=s)
                for s in (scratch, None)]

    nets = [pair(seed) for seed in range(3)]
    hybrids = [[HybridRegressor(2, layers=(Elman(5),), learner=learner(), seed=seed, kernels=kernels, scratch=s)
                for s in (scratch, None)] for seed in range(3)]
    assert nets[0][0].grad is nets[1][0].grad and nets[0][1].grad is not nets[1][1].grad
    rng = np.random.default_rng(0)
    for t in range(60):
        for i in rng.permutation(3):
            x, y = rng.normal(size=2), rng.normal(size=1)
            shared, own = nets[i]
            a, b = shared.step(x, y if t % 5 else None), own.step(x, y if t % 5 else None)
            assert np.array_equal(a.prediction, b.prediction) and a.loss == b.loss
            shared_h, own_h = hybrids[i]
            z, dx = rng.normal(size=2), rng.normal(size=2)
            assert shared_h.predict(z, dx) == own_h.predict(z, dx)
            shared_h.learn(z, dx, float(y[0]))
            own_h.learn(z, dx, float(y[0]))
    for shared, own in nets:
        for name, value in own.state_dict()[0].items():
            assert np.array_equal(shared.state_dict()[0][name], value), name
        assert shared.counters == own.counters and shared.counters["updates"] > 40
    for shared_h, own_h in hybrids:
        a, b = {}, {}
        shared_h.state_into(a, "")
        own_h.state_into(b, "")
        assert a.keys() == b.keys() and len(a) > 30 and all(np.array_equal(a[k], b[k]) for k in a), \
            [k for k in a if not np.array_equal(a[k], b[k])]
    copy = pickle.loads(pickle.dumps(nets[0][0]))  # a copy steps on buffers of its own
    assert copy.grad is not nets[0][0].grad and copy._applied is not nets[0][0]._applied
