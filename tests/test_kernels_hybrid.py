"""The compiled hybrid regressor (streamrnn.kernels.regressor, hybrid_step, table) equals the numpy one
to 1e-12, keeps to its arrays as they are replaced, and is left for numpy where it does not apply."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import streamrnn as sr
from streamrnn import kernels
from streamrnn.hybrid.regressor import HybridRegressor
from streamrnn.kernels.table import ArrayTable

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The compiled path, whatever the environment (CI runs the suite with STREAMRNN_KERNELS=0 too)."""
    monkeypatch.setenv(kernels.ENV, "1")

NETWORKS = {
    "none": {"layers": None},
    "elman-bptt": {"layers": (sr.Elman(6),), "learner": sr.TruncatedBPTT(5, 1)},
    "leaky-bptt-4-2": {"layers": (sr.Leaky(5, beta=0.4),), "learner": sr.TruncatedBPTT(4, 2)},
    "elman-rtrl": {"layers": (sr.Elman(5),), "learner": sr.RTRL()},
    "sgd-no-clip": {"layers": (sr.Elman(4),), "optimizer": sr.SGD(0.01), "clip_norm": None},
}


def pair(n_features=3, **kw):
    """The same regressor twice: on the compiled step, and on numpy (its network too)."""
    fast, slow = (HybridRegressor(n_features, seed=1, kernels=on, **kw) for on in (None, False))
    assert fast._compiled() is not None and slow._compiled() is None
    return fast, slow


def events(n, n_features=3, seed=0, outlier_at=None):
    """(z, dx, y): standardised-looking features, their changes, an autocorrelated target."""
    rng = np.random.default_rng(seed)
    previous, y = np.zeros(n_features), 0.0
    for t in range(n):
        z = rng.normal(size=n_features)
        y = 0.8 * y + z[0] - 0.5 * z[-1] + 0.1 * rng.normal()
        yield z, z - previous, (1e6 if t == outlier_at else y)
        previous = z


def assert_same_state(a, b, rtol=1e-12):
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        if sa[name].dtype == np.uint8:  # the network's JSON header: its counters are the same
            continue
        x, y = np.asarray(sa[name], dtype=float), np.asarray(sb[name], dtype=float)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(1.0, float(np.abs(y).max(initial=0.0))),
                                   err_msg=name)
    if a.corrector is not None:
        assert a.corrector.rnn.counters == b.corrector.rnn.counters


@pytest.mark.parametrize("network", NETWORKS)
def test_the_compiled_regressor_equals_the_numpy_one(network):
    fast, slow = pair(**NETWORKS[network])
    numpy_steps = []
    if fast.corrector is not None:  # the network's step runs inside the compiled call, never through step()
        fast.corrector.rnn.step = lambda *a, **k: numpy_steps.append(a)
    for z, dx, y in events(70, outlier_at=40):
        assert fast.predict(z, dx) == pytest.approx(slow.predict(z, dx), rel=1e-12, abs=1e-14)
        fast.learn(z, dx, y)
        slow.learn(z, dx, y)
    assert numpy_steps == []
    assert fast.bounded == slow.bounded == 1  # the outlier was bounded on both paths
    assert (fast.seen, fast.last, fast.lo, fast.hi) == (slow.seen, slow.last, slow.lo, slow.hi)
    assert fast.changes.n == slow.changes.n and fast.linear.errors[0].n == slow.linear.errors[0].n
    assert_same_state(fast, slow)
    # the compiled RLS updates keep every inverse symmetric bit for bit, as numpy's: saved as triangles
    triangles = {"linear.P_upper", "linear_change.P_upper"}
    assert triangles | ({"corrector.heads.P_upper"} if fast.corrector is not None else set()) <= fast.state().keys()
    assert fast.weights() == pytest.approx(slow.weights(), rel=1e-12)
    if fast.corrector is not None:
        assert fast.corrector.rnn.counters["updates"] >= 20
        assert fast.corrector.rnn.diagnostics()["loss"] == pytest.approx(
            slow.corrector.rnn.diagnostics()["loss"], rel=1e-12)


@pytest.mark.parametrize("network", NETWORKS)
def test_predict_learn_is_predict_then_learn_bit_for_bit(network, monkeypatch):
    """The one-call predict-and-learn (the daemon's supervised event) returns what predict returns and
    leaves the state learn leaves, to the last bit, the outlier bounded on the way included."""
    from streamrnn.kernels import hybrid_step

    predicts = []
    real = hybrid_step.predict_table
    monkeypatch.setattr(hybrid_step, "predict_table", lambda *a: predicts.append(1) or real(*a))
    one, two = (HybridRegressor(3, seed=1, **NETWORKS[network]) for _ in range(2))
    for z, dx, y in events(60, outlier_at=30):
        expected = two.predict(z, dx)
        two.learn(z, dx, y)
        assert one.predict_learn(z, dx, y) == expected
    assert one.bounded == two.bounded == 1
    assert len(predicts) == 59  # two's predictions after its first target; the one call never predicts apart
    sa, sb = one.state(), two.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert np.array_equal(sa[name], sb[name]), name
    with pytest.raises(ValueError, match="finite"):
        one.predict_learn(z, dx, float("nan"))
    assert all(np.array_equal(a, b) for a, b in zip(one.state().values(), sb.values()))


@pytest.mark.parametrize("network", ["elman-rtrl", "elman-bptt"])
def test_a_model_switching_paths_every_few_events_equals_numpy(network):
    """Strided features (which the kernel refuses) send every third event through numpy: the network's
    step then swaps RTRL's buffers outside the compiled call, which must aim its slots again."""
    fast, slow = pair(**NETWORKS[network])
    twin = HybridRegressor(3, seed=1, **NETWORKS[network])  # compiled, with contiguous features throughout
    asked, kernel = [], fast._compiled()
    for name in ("learn", "predict"):
        real = getattr(kernel, name)
        setattr(kernel, name, lambda *a, _real=real, _name=name: asked.append(_name) or _real(*a))
    for t, (z, dx, y) in enumerate(events(40)):
        contiguous = z
        if t % 3 == 2:
            z = np.repeat(z, 2)[::2]  # equal values, not contiguous
        expected = twin.predict(contiguous, dx)
        twin.learn(contiguous, dx, y)
        assert fast.predict_learn(z, dx, y) == pytest.approx(expected, rel=1e-12, abs=1e-14)
        assert slow.predict(z, dx) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        slow.learn(z, dx, y)
    assert fast.corrector.rnn.counters == slow.corrector.rnn.counters
    assert fast.corrector.rnn.counters["updates"] >= 30
    assert asked == ["learn"] * 40  # one question per event: numpy takes a refused one without asking again
    assert_same_state(fast, slow)


def test_a_learn_without_a_predict_before_it_equals_numpy():
    fast, slow = pair(**NETWORKS["elman-bptt"])
    for t, (z, dx, y) in enumerate(events(40)):
        if t % 3:
            fast.predict(z, dx)
            slow.predict(z, dx)
        fast.learn(z, dx, y)
        slow.learn(z, dx, y)
    assert_same_state(fast, slow)


def test_growing_features_and_loading_a_state_rebind_the_compiled_step():
    fast, slow = pair(2, **NETWORKS["elman-bptt"])
    stream = list(events(60, n_features=3))
    for z, dx, y in stream[:20]:
        fast.learn(z[:2], dx[:2], y)
        slow.learn(z[:2], dx[:2], y)
    first = fast._compiled()
    fast.grow_features(1)
    slow.grow_features(1)
    assert fast._compiled() is not first  # the parts' arrays were replaced: a new binding
    assert slow._compiled() is None and slow.corrector.rnn._kernel is None  # numpy stays numpy
    for z, dx, y in stream[20:40]:
        assert fast.predict(z, dx) == pytest.approx(slow.predict(z, dx), rel=1e-12)
        fast.learn(z, dx, y)
        slow.learn(z, dx, y)
    assert_same_state(fast, slow)
    # a state loaded into another model: its step writes the loaded arrays, not the ones it was built with
    other = HybridRegressor(3, seed=1, **NETWORKS["elman-bptt"])
    other._compiled()
    other.load(fast.state())
    for z, dx, y in stream[40:]:
        assert other.predict(z, dx) == fast.predict(z, dx)
        other.learn(z, dx, y)
        fast.learn(z, dx, y)
    assert all(np.array_equal(a, b) for a, b in zip(other.state().values(), fast.state().values()))


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))], ids=["deepcopy", "pickle"])
def test_a_copy_steps_its_own_arrays(clone):
    model, _ = pair(**NETWORKS["elman-bptt"])
    stream = list(events(30))
    for z, dx, y in stream[:10]:
        model.learn(z, dx, y)
    twin = clone(model)
    before = model.state()
    for z, dx, y in stream[10:]:
        twin.learn(z, dx, y)
    after = model.state()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the original did not move
    for z, dx, y in stream[10:]:
        model.learn(z, dx, y)
    assert all(np.array_equal(a, b) for a, b in zip(model.state().values(), twin.state().values()))


@pytest.mark.parametrize("network", ["elman-bptt", "elman-rtrl"])
def test_a_non_finite_corrector_state_hands_the_step_to_numpy(network):
    fast, slow = pair(**NETWORKS[network])
    stream = list(events(30))
    for z, dx, y in stream[:10]:
        fast.learn(z, dx, y)
        slow.learn(z, dx, y)
    for t, (z, dx, y) in enumerate(stream[10:]):
        for m in (fast, slow):  # a state the engine's guard must handle: the kernel leaves those steps to numpy
            if t in (0, 3):
                m.corrector.rnn.network.stack.hidden(0)[...] = np.inf if t == 0 else 0.0
        fast.learn(z, dx, y)
        slow.learn(z, dx, y)
    assert fast.corrector.rnn.counters == slow.corrector.rnn.counters
    assert fast.corrector.rnn.counters["skipped"] >= 1
    assert fast.corrector.rnn.counters["updates"] >= 10  # and it learned again, on the kernel
    assert_same_state(fast, slow)


def test_no_binding_where_the_kernels_are_off_or_the_network_has_none(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "0")
    assert HybridRegressor(2)._compiled() is None
    assert HybridRegressor(2, layers=(sr.Elman(3),))._compiled() is None
    monkeypatch.setenv(kernels.ENV, "1")
    assert HybridRegressor(2, layers=(sr.GRU(3),))._compiled() is None  # no engine kernel for a GRU
    assert HybridRegressor(2, layers=(sr.Elman(3),))._compiled() is not None


def test_an_array_table_takes_only_arrays_it_can_address():
    table = ArrayTable([np.zeros(3), np.zeros((2, 4)), np.zeros(2, np.int64)], ["f1", "f2", "i1"])
    assert table.dims.tolist() == [[3, 1, 1], [2, 4, 1], [2, 1, 1]]
    assert table.ptr[1] == table.arrays[1].ctypes.data
    with pytest.raises(ValueError, match="slot 0: a 1-d float64"):
        ArrayTable([np.zeros(3, np.float32)], ["f1"])
    with pytest.raises(ValueError, match="C-contiguous"):
        ArrayTable([np.zeros((4, 4))[:, 0]], ["f1"])
    with pytest.raises(ValueError, match="slot 0: a 2-d"):
        ArrayTable([np.zeros(3)], ["f2"])
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        ArrayTable([frozen], ["f1"])


def test_the_compiled_feature_space_reads_and_learns_bit_for_bit_as_numpy():
    import datetime as dt

    from streamrnn.estimators.features import FeatureSpace

    fast, slow = FeatureSpace(), FeatureSpace()
    slow._compiled = False
    assert fast._compiled
    rng = np.random.default_rng(3)
    start = dt.datetime(2024, 1, 1)
    for t in range(60):
        x = {"a": float(rng.normal()), "b": int(rng.integers(0, 5)), "when": start + dt.timedelta(hours=t)}
        if t % 5 == 2:
            del x["a"]  # a missing feature reads 0, as in a sparse dict
        if t >= 30:
            x["late"] = float(rng.normal(100.0, 10.0))  # a feature that appears mid-stream
        for space in (fast, slow):
            space.add(space.new(x), x)
        (ra, za, da), (rb, zb, db) = fast.read(x), slow.read(x)
        for u, v in ((ra, rb), (za, zb), (da, db)):
            np.testing.assert_array_equal(u, v)
        fast.learn(x, ra)
        slow.learn(x, rb)
    for name in ("count", "mean", "m2"):
        np.testing.assert_array_equal(getattr(fast.moments, name), getattr(slow.moments, name))
    assert fast.moments.count[fast.index["a"]] == 60 and fast.moments.count[fast.index["late"]] == 30
    assert fast.moments.count[fast.index["when"]] == 0  # calendar phases are not standardised


def test_warm_up_loads_the_kernels_on_throwaway_models_and_nothing_when_they_are_off(monkeypatch):
    from streamrnn.kernels import hybrid_step, network_table, scale_step
    from streamrnn.kernels.warm import warm_up

    monkeypatch.setenv(kernels.ENV, "0")
    assert warm_up() == 0.0
    monkeypatch.setenv(kernels.ENV, "1")
    assert warm_up() > 0.0
    # every entry point an event calls has its machine code (the hybrid's two have one fixed signature each)
    for dispatcher in (network_table.forward, network_table.model_step, scale_step.standardise,
                       scale_step.moments_update_at, hybrid_step.predict_table, hybrid_step.learn_table):
        assert dispatcher.signatures, dispatcher.__name__



def test_a_bound_model_is_freed_when_it_goes_without_waiting_for_the_cycle_collector():
    import gc
    import weakref

    gc.disable()  # a daemon evicts thousands of keys: their memory must come back at once
    try:
        model = HybridRegressor(3, **NETWORKS["elman-bptt"])
        for z, dx, y in events(5):
            model.learn(z, dx, y)
        assert model._compiled() is not None
        gone = weakref.ref(model)
        del model
        assert gone() is None
    finally:
        gc.enable()


def _outcome(f):
    """f()'s value, or the type of the exception it raised."""
    try:
        return f()
    except Exception as err:  # noqa: BLE001 - the type is what the paths must agree on
        return type(err)


@pytest.mark.parametrize("bad", ["wider", "narrower", "nan", "inf", "float32", "strided"])
def test_an_event_the_kernel_cannot_take_goes_to_numpy_and_changes_nothing_first(bad):
    fast, slow = pair(**NETWORKS["elman-bptt"])
    stream = list(events(12))
    for z, dx, y in stream[:10]:
        fast.learn(z, dx, y)
        slow.learn(z, dx, y)
    z, dx, y = stream[10]
    z = {"wider": np.append(z, 1.0), "narrower": z[:2], "nan": np.where([True, False, False], np.nan, z),
         "inf": np.where([False, True, False], np.inf, z), "float32": z.astype(np.float32),
         "strided": np.repeat(z, 2)[::2]}[bad]
    dx = dx if bad in ("nan", "inf") else z.copy()
    pa, pb = _outcome(lambda: fast.predict(z, dx)), _outcome(lambda: slow.predict(z, dx))
    assert pa == (pytest.approx(pb, nan_ok=True) if isinstance(pb, float) else pb)
    a, b = _outcome(lambda: fast.learn(z, dx, y)), _outcome(lambda: slow.learn(z, dx, y))
    assert a == b  # the same result or the same exception, on the same (numpy) path
    if bad in ("float32", "strided"):
        assert_same_state(fast, slow)
    z, dx, y = stream[11]
    fast.learn(z, dx, y)  # and the compiled step goes on, from the numbers the numpy path left
    assert fast._compiled() is not None
    if bad in ("float32", "strided"):
        slow.learn(z, dx, y)
        assert_same_state(fast, slow)
        assert (fast.seen, fast.last, fast.lo, fast.hi) == (slow.seen, slow.last, slow.lo, slow.hi)


def test_a_state_for_another_width_is_refused_and_arrays_that_do_not_fit_are_never_read_by_the_kernel():
    from streamrnn.state import StateError

    small = HybridRegressor(2)  # without a network: only the parts' widths say how wide it was
    for z, dx, y in events(5, n_features=2):
        small.learn(z, dx, y)
    big = HybridRegressor(6)
    before = big.state()
    with pytest.raises(StateError, match="6 features"):
        big.load(small.state())
    assert all(np.array_equal(before[k], v) for k, v in big.state().items())  # nothing changed
    big.linear.w = np.zeros((1, 3))  # however an array came not to fit: the kernel is not bound to it
    big._kernel = False
    assert big._compiled() is None
    z = np.zeros(6)
    with pytest.raises(ValueError):  # and numpy's own checks refuse the event
        big.learn(z, z, 1.0)


def test_bindings_of_one_configuration_share_their_constants_not_their_numbers():
    """Thousands of keys: the codes and constants a kernel only reads are one array per content, while each
    key keeps its own scalars; another configuration gets its own constants."""
    a, b = (HybridRegressor(2, layers=(sr.Elman(4),), seed=s) for s in (0, 1))
    other = HybridRegressor(2, layers=(sr.Elman(4),), clip_norm=0.5, lam=0.99)
    ka, kb, ko = (m._compiled() for m in (a, b, other))
    assert ka.cst is kb.cst and ka.ints is kb.ints and ka.numbers is kb.numbers
    assert ka.sc is not kb.sc and ka.table.ptr is not kb.table.ptr
    assert ko.cst is not ka.cst and ko.numbers is not ka.numbers
    assert a.corrector.rnn._kernel.numbers is b.corrector.rnn._kernel.numbers
