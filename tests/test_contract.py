"""One contract for every registered cell x learner (``streamrnn.cells.CELLS`` x ``streamrnn.learners.REGISTRY``).

For each pair, on a single layer and on a two-layer stack, in float64:

* exact learners (RTRL, BPTT whose window covers the stream, epochwise BPTT) give
  the same gradient as full BPTT to 1e-9, and that gradient equals central finite
  differences of the loss computed by running the model forward;
* the approximations (SnAp-1, UORO) keep a pinned cosine similarity to the exact
  gradient, or refuse a cell they are not defined for with an error naming it;
* a checkpoint round trip continues bit for bit; growing inputs and outputs keeps
  the model's function; bad cell arguments name the argument.

A cell or learner added to the registries is picked up here without editing
this file, except for classifying a new learner as exact or approximate.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from streamrnn import SGD, Adam, OnlineRNN, Readout, SquaredError
from streamrnn.cells import CELLS
from streamrnn.grow import grow_inputs, grow_outputs
from streamrnn.learners import REGISTRY

N_IN, T = 3, 12
#: how each registered learner is checked: exact ones against full BPTT, approximations by a cosine floor
EXACT = {"rtrl", "bptt", "epochwise"}
APPROXIMATE = {"snap1", "uoro"}
ARGUMENTS = {"bptt": {"h": 64, "h_prime": 1}}  # a window longer than the stream: full BPTT


def learner(name):
    return REGISTRY[name](**ARGUMENTS.get(name, {}))


def stacks(kind):
    cls = CELLS[kind]
    return {"one": (cls(3),), "two": (cls(3), cls(2))}


PAIRS = [(kind, depth, name) for kind in sorted(CELLS) for depth in ("one", "two") for name in sorted(REGISTRY)]


def build(kind, depth, name, lr=0.0, seed=3):
    model = OnlineRNN(N_IN, stacks(kind)[depth], Readout(2), SquaredError(), learner(name), SGD(lr), seed=seed)
    rng = np.random.default_rng(seed + 10)
    for view in model.params.values():
        view += rng.normal(0.0, 0.2, view.shape)
    return model


def data(length=T, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(length, N_IN)), rng.normal(size=(length, 2))


def flat_gradient(model):
    """The last applied gradient, laid out like theta (through the network's named views)."""
    flat = np.zeros(model.network.n_params)
    for name, view in model.network.views(flat).items():
        view[...] = model.gradient[name]
    return flat


def finite_difference(loss, theta0, eps=1e-6):
    """Central differences of loss(theta) at theta0, entry by entry."""
    fd = np.zeros_like(theta0)
    for i in range(theta0.size):
        up, down = theta0.copy(), theta0.copy()
        up[i] += eps
        down[i] -= eps
        fd[i] = (loss(up) - loss(down)) / (2 * eps)
    return fd


def supports(kind, depth, name):
    try:
        build(kind, depth, name)
    except ValueError:
        return False
    return True


#: the pairs a learner runs on (the others are refused by name: the approximations' test checks it)
RUNNING = [pair for pair in PAIRS if supports(*pair)]


def test_every_registered_learner_is_classified():
    assert set(REGISTRY) == EXACT | APPROXIMATE


@pytest.mark.parametrize("kind,depth,name", [p for p in PAIRS if p[2] in EXACT])
def test_exact_learners_equal_full_bptt_and_finite_differences(kind, depth, name):
    X, Y = data()
    if name == "epochwise":  # the gradient of the whole sequence's loss, at its end
        model = build(kind, depth, name)
        for x, y in zip(X, Y):
            model.step(x, y)
        model.end_sequence()
        got = flat_gradient(model)
        weights = np.ones(T)
    else:  # the gradient of L_t at every step t, against epochwise BPTT of L_t alone
        model = build(kind, depth, name)
        for t in range(T):
            model.step(X[t], Y[t])
            reference = build(kind, depth, "epochwise")
            for s in range(t + 1):
                reference.step(X[s], Y[s] if s == t else None)
            reference.end_sequence()
            want = flat_gradient(reference)
            got = flat_gradient(model)
            assert np.linalg.norm(got - want) <= 1e-9 * np.linalg.norm(want), t
        weights = np.zeros(T)
        weights[-1] = 1.0
    theta0 = build(kind, depth, name).network.theta.copy()

    def loss(theta):
        probe = build(kind, depth, "rtrl")
        probe.network.theta[...] = theta
        return sum(w * probe.step(x, y).loss for w, x, y in zip(weights, X, Y))

    fd = finite_difference(loss, theta0)
    assert np.linalg.norm(got - fd) <= 1e-6 * np.linalg.norm(fd)


#: cosine between the approximate and the exact gradient, summed over 300 steps at fixed weights
#: (benchmarks/engine_speed.py table 7 prints the 1,000-step figures).  Measured over seeds 11-13:
#: SnAp-1 0.81-0.997 on every Elman/Leaky pair; UORO 0.57-0.99 on Elman, Leaky and GRU, 0.49-0.54 on
#: one LRU layer and only 0.07-0.23 on two (its rank-one noise grows with the stack; exact RTRL on an
#: LRU costs about as much as UORO anyway).  Each floor sits about half-way below the lowest.
COSINE_FLOOR = {"snap1": 0.7, "uoro": 0.4, ("uoro", "LRU", "one"): 0.3, ("uoro", "LRU", "two"): 0.03}


@pytest.mark.parametrize("kind,depth,name", [p for p in PAIRS if p[2] in APPROXIMATE])
def test_approximations_keep_their_cosine_to_the_exact_gradient_or_refuse_the_cell(kind, depth, name):
    if not supports(kind, depth, name):
        with pytest.raises(ValueError, match=kind):
            build(kind, depth, name)
        return
    X, Y = data(300, seed=11)
    approx, exact = build(kind, depth, name), build(kind, depth, "rtrl")
    total_a, total_e = 0.0, 0.0
    for x, y in zip(X, Y):
        approx.step(x, y)
        exact.step(x, y)
        total_a = total_a + flat_gradient(approx)
        total_e = total_e + flat_gradient(exact)
    cosine = total_a @ total_e / (np.linalg.norm(total_a) * np.linalg.norm(total_e))
    assert cosine > COSINE_FLOOR.get((name, kind, depth), COSINE_FLOOR[name]), cosine


@pytest.mark.parametrize("kind,depth,name", RUNNING)
def test_checkpoint_round_trip_continues_bit_for_bit(kind, depth, name, tmp_path):
    X, Y = data(30, seed=5)
    model = build(kind, depth, name, lr=0.01)
    for x, y in zip(X[:20], Y[:20]):
        model.step(x, y)
    model.save(tmp_path / "m.npz")
    restored = OnlineRNN.from_file(tmp_path / "m.npz")
    for x, y in zip(X[20:], Y[20:]):
        assert np.array_equal(model.step(x, y).prediction, restored.step(x, y).prediction)
    a, b = model.state_dict()[0], restored.state_dict()[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind,depth,name", RUNNING)
def test_grown_models_keep_their_function(kind, depth, name):
    X, Y = data(20, seed=9)
    model = build(kind, depth, name, lr=0.01)
    for x, y in zip(X[:10], Y[:10]):
        model.step(x, y)
    wider = grow_inputs(model, 2, at=1)
    more = grow_outputs(model, 1)
    for x in X[10:]:
        want = model.predict(x)
        np.testing.assert_allclose(wider.predict(np.insert(x, 1, [0.0, 0.0])), want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(more.predict(x)[:2], want, rtol=1e-12, atol=1e-14)
        for m in (model, wider, more):  # the state moves on; nothing is learned without targets
            m.step(x if m is not wider else np.insert(x, 1, [0.0, 0.0]))
    # and they learn: a step with a target moves the weights of the grown models
    before = wider.network.theta.copy()
    wider.step(np.insert(X[0], 1, [0.5, -0.5]), Y[0])
    if not REGISTRY[name].epochwise:
        assert not np.array_equal(before, wider.network.theta)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_bad_cell_arguments_name_the_argument(kind):
    cls = CELLS[kind]
    for args, word in (((0,), "units"), ((2.5,), "units"), ((True,), "units"), ((3, "swish"), "activation")):
        with pytest.raises(ValueError, match=word):
            cls(*args)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_a_batch_of_streams_steps_each_as_if_alone(kind):
    """B independent streams in one call: each row's state and output equal the row stepped alone, bit for bit."""
    cell = CELLS[kind](4)
    rng = np.random.default_rng(1)
    theta = rng.normal(0.0, 0.4, cell.n_params(N_IN))
    batch = cell.layer(N_IN, theta, batch=3)
    alone = [cell.layer(N_IN, theta, batch=1) for _ in range(3)]
    for _ in range(5):
        x = rng.normal(size=(3, N_IN))
        out = batch.forward(x).copy()
        batch.commit()
        for b, layer in enumerate(alone):
            np.testing.assert_array_equal(layer.forward(x[b : b + 1])[0], out[b])
            layer.commit()
            np.testing.assert_array_equal(layer.state[0], batch.state[b])


@pytest.mark.parametrize("name", [name for name in sorted(REGISTRY) if REGISTRY[name].settings()])
def test_bad_learner_settings_name_the_setting(name):
    """Every setting a learner declares (``settings()``, what the daemon's [model.learner] table takes)
    refuses a value of the wrong kind with a ValueError naming it."""
    cls = REGISTRY[name]
    for setting, (kind, _default) in cls.settings().items():
        for bad in ("three", None, True, float("nan")):
            if kind is float and bad is True:
                continue  # bool is a number to Python; the learner's own tests pin its range
            with pytest.raises(ValueError, match=setting):
                cls(**{setting: bad})


# (LRULayer keeps lambda, gamma and their derivatives from its last forward; before Layer.refresh,
# which loading a state now calls, they belonged to the initial weights until the next step.)
@pytest.mark.parametrize("kind,depth", [(kind, depth) for kind in sorted(CELLS) for depth in ("one", "two")])
def test_a_sequence_checkpointed_midway_ends_with_the_same_update(kind, depth, tmp_path):
    """Epochwise BPTT saved mid-sequence: the restored model's end_sequence walks back through the
    recorded rows with no forward step since the restore, and must give the same weights bit for bit."""
    X, Y = data(8, seed=13)
    model = build(kind, depth, "epochwise", lr=0.05)
    for x, y in zip(X, Y):
        model.step(x, y)
    model.save(tmp_path / "m.npz")
    restored = OnlineRNN.from_file(tmp_path / "m.npz")
    before = model.network.theta.copy()
    model.end_sequence()
    restored.end_sequence()
    assert not np.array_equal(model.network.theta, before)  # the sequence's update was applied
    np.testing.assert_array_equal(restored.network.theta, model.network.theta)


# --- the contract's own helpers (streamrnn.cells.base) --------------------------------------------

def test_sizes_and_gains_are_checked_and_the_message_names_them():
    from streamrnn.cells import check_gain, check_size

    for good in (0, 0.0, 2, 1.5, np.float32(0.5), np.int64(3)):
        assert check_gain(good) == float(good) and type(check_gain(good)) is float
    for bad in (-1e-300, float("inf"), float("nan"), True, "1", None):
        with pytest.raises(ValueError, match=rf"^gain must be a finite number >= 0, got {re.escape(repr(bad))}$"):
            check_gain(bad)
    assert check_size("units", 1) == 1 and type(check_size("units", np.int64(4))) is int
    for bad in (0, -2, 1.0, True, "3", None):
        with pytest.raises(ValueError, match=rf"^width must be an integer >= 1, got {re.escape(repr(bad))}$"):
            check_size("width", bad)


def test_configs_name_a_registered_kind_and_a_kind_registers_once():
    from streamrnn.cells import Cell, cell_from_config, check_layers

    with pytest.raises(ValueError, match=r"^layer kind must be one of \['Elman', 'GRU', 'LRU', 'Leaky'\], got 'Nope'$"):
        cell_from_config({"kind": "Nope", "units": 3})
    with pytest.raises(ValueError, match=r"got None$"):
        cell_from_config({"units": 3})
    config = {"kind": "Elman", "units": 3}
    assert cell_from_config(config) == CELLS["Elman"](3) and config == {"kind": "Elman", "units": 3}  # not consumed
    with pytest.raises(ValueError, match=r"^a cell kind 'Elman' is registered already \(<class '.*\.Elman'>\)$"):
        type("Twin", (Cell,), {"kind": "Elman"})
    assert CELLS["Elman"].__name__ == "Elman"
    type("Abstract", (Cell,), {})  # no kind: not registered
    assert "" not in CELLS
    with pytest.raises(ValueError, match=r"^layers must hold at least one layer, got none$"):
        check_layers([])
    with pytest.raises(ValueError, match=r"^layers must be cells \(Elman, GRU, LRU, Leaky\), got \("):
        check_layers([CELLS["Elman"](2), "tanh"])
    assert check_layers([CELLS["GRU"](2)]) == (CELLS["GRU"](2),)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_a_layer_refuses_a_parameter_vector_of_another_size_and_resets_to_zero(kind):
    cell = CELLS[kind](3)
    P = cell.n_params(N_IN)
    assert P == sum(b.rows * b.cols for b in cell.blocks(N_IN))
    with pytest.raises(ValueError, match=rf"^a {kind} layer needs {P} parameters, got \({P - 1},\)$"):
        cell.layer(N_IN, np.zeros(P - 1))
    layer = cell.layer(N_IN, np.random.default_rng(0).normal(size=P), batch=2)
    assert layer.batch == 2 and layer.m == N_IN and layer.n_params == P
    layer.forward(np.ones((2, N_IN)))
    layer.commit()
    assert layer.state.any()
    layer.reset()
    assert not layer.state.any()
    # the blocks are views of theta, laid end to end
    flat = np.arange(float(P))
    for name, block in cell.split(flat, N_IN).items():
        assert np.shares_memory(block, flat)
    assert np.array_equal(np.concatenate([b.ravel() for b in cell.split(flat, N_IN).values()]), flat)


def test_the_diagonal_views_are_each_units_own_row_and_the_cache_keeps_them_right():
    from streamrnn.cells.base import diagonal_view

    n, k, B = 3, 4, 2
    S = np.arange(float(B * n * 3 * n * k)).reshape(B, n, 3 * n * k)
    d1, d3 = diagonal_view(S, n, k), diagonal_view(S, n, k, gates=3)
    for i in range(n):
        np.testing.assert_array_equal(d1[:, i], S[:, i, i * k : (i + 1) * k])
        for g in range(3):
            np.testing.assert_array_equal(d3[:, g, i], S[:, i, g * n * k + i * k : g * n * k + (i + 1) * k])
    layer = CELLS["Elman"](n).layer(k - n - 1, np.zeros(CELLS["Elman"](n).n_params(k - n - 1)), batch=B)
    arrays = [np.random.default_rng(j).normal(size=(B, n, n * k)) for j in range(12)]  # more than the cache holds
    for _ in range(2):
        for a in arrays:
            np.testing.assert_array_equal(layer.diagonal(a, k), diagonal_view(a, n, k))
    assert len(layer._strided) <= 9


MIXED = {"lru-elman": ("LRU", "Elman"), "elman-lru": ("Elman", "LRU"), "gru-lru": ("GRU", "LRU"),
         "lru-leaky": ("LRU", "Leaky")}


@pytest.mark.parametrize("key", MIXED)
def test_stacks_of_different_cells_get_the_exact_gradient_from_every_exact_learner(key):
    """A layer whose output is not its state (LRU: y = f(c)) next to one whose output is (dense cells):
    each error passed down goes through the lower layer's own output_vjp.  RTRL, BPTT over the whole
    stream and epochwise BPTT agree at every step, and equal finite differences of the loss."""
    lower, upper = (CELLS[k] for k in MIXED[key])
    layers = (lower(3), upper(2))

    def make(name, theta=None):
        model = OnlineRNN(N_IN, layers, Readout(2), SquaredError(), learner(name), SGD(0.0), seed=1)
        rng = np.random.default_rng(21)
        for view in model.params.values():
            view += rng.normal(0.0, 0.2, view.shape)
        if theta is not None:
            model.network.theta[...] = theta
        return model

    X, Y = data(6, seed=17)
    rtrl, bptt = make("rtrl"), make("bptt")
    for x, y in zip(X, Y):
        rtrl.step(x, y)
        bptt.step(x, y)
        want = flat_gradient(rtrl)
        assert np.linalg.norm(flat_gradient(bptt) - want) <= 1e-10 * np.linalg.norm(want)
    epochwise = make("epochwise")
    for x, y in zip(X, Y):
        epochwise.step(x, y)
    epochwise.end_sequence()
    theta0 = make("rtrl").network.theta.copy()

    def loss(theta):
        probe = make("rtrl", theta)
        return sum(probe.step(x, y).loss for x, y in zip(X, Y))

    fd = finite_difference(loss, theta0)
    assert np.linalg.norm(flat_gradient(epochwise) - fd) <= 1e-6 * np.linalg.norm(fd)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_bad_units_say_what_is_wrong(kind):
    with pytest.raises(ValueError, match=r"^units must be an integer >= 1, got 0$"):
        CELLS[kind](0)


@pytest.mark.parametrize("kind,depth,name", RUNNING)
def test_grown_inputs_fed_zeros_keep_learning_like_the_original(kind, depth, name):
    """Not only the function: the learner's state, the last gradient and Adam's moments move with the
    new input columns (each cell's blocks say where x sits), so the grown model learns as before."""
    X, Y = data(24, seed=19)

    def make():
        model = OnlineRNN(N_IN, stacks(kind)[depth], Readout(2), SquaredError(), learner(name), Adam(0.02), seed=2)
        rng = np.random.default_rng(12)
        for view in model.params.values():
            view += rng.normal(0.0, 0.2, view.shape)
        return model

    model = make()
    for x, y in zip(X[:10], Y[:10]):
        model.step(x, y)
    grown = grow_inputs(model, 2, at=1)
    for t, (x, y) in enumerate(zip(X[10:], Y[10:])):
        want = model.step(x, y).prediction
        got = grown.step(np.insert(x, 1, [0.0, 0.0]), y).prediction
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10, err_msg=f"step {t}")
        if name == "epochwise" and t == 6:
            model.end_sequence()
            grown.end_sequence()
    if name == "epochwise":
        model.end_sequence()
        grown.end_sequence()
    np.testing.assert_allclose(grown.predict(np.insert(X[0], 1, [0.0, 0.0])), model.predict(X[0]), rtol=1e-8)
