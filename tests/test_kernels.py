"""The compiled step (streamrnn.kernels) equals the numpy engine's step to 1e-12, on every
combination it covers, and hands over to numpy wherever it does not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamrnn import (
    GRU, RTRL, SGD, UORO, Adam, Chain, ClipGlobalNorm, Elman, ExponentialDecay, Leaky,
    OnlineRNN, Readout, SquaredError, TruncatedBPTT,
)
from streamrnn import kernels

from .test_gradients import LOSSES
from .test_gradients import stream as gradient_stream

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

#: the canonical readout/loss pairs the kernels cover, as test_gradients names them
OUTPUTS = {key: LOSSES[key] for key in ("squared", "logloss", "crossentropy")}
LEARNERS = {"rtrl": RTRL, "bptt-6-1": lambda: TruncatedBPTT(6, 1), "bptt-5-3": lambda: TruncatedBPTT(5, 3),
            "bptt-4-4": lambda: TruncatedBPTT(4, 4)}
CELLS = {"elman-tanh": Elman(5), "elman-sigmoid": Elman(5, "sigmoid"), "elman-relu": Elman(5, "relu", gain=0.5),
         "elman-identity": Elman(5, "identity", gain=0.5), "leaky": Leaky(5, beta=(0.2, 0.5, 0.7, 1.0, 0.35))}
OPTIMIZERS = {"sgd": lambda: SGD(0.05), "adam-decay": lambda: Adam(ExponentialDecay(0.01, 0.5, 40))}


def pair(cell, output, learner, optimizer, clip=None, feedback=False, seed=2):
    readout, loss = OUTPUTS[output]
    return [OnlineRNN(3, (cell,), readout, loss(), LEARNERS[learner](), OPTIMIZERS[optimizer](), clip_norm=clip,
                      target_feedback=feedback, seed=seed, kernels=on) for on in (True, False)]


def stream(output, length=60, seed=5):
    """test_gradients' inputs and targets for this readout/loss pair, some steps without a target."""
    X, Y = gradient_stream(output, seed=seed, length=length)
    return X, [None if t % 7 == 3 else y for t, y in enumerate(Y)]


def assert_same(fast, slow, rtol=1e-12):
    """Equal states to ``rtol`` relative to each array's scale: an entry that is a difference of O(1) terms
    (a sensitivity near 0) keeps their rounding, which differs with the CPU's BLAS kernels (AVX2, AVX-512)."""
    a, b = fast.state_dict(), slow.state_dict()
    assert a[0].keys() == b[0].keys()
    for name in a[0]:
        want = np.asarray(b[0][name])
        scale = float(np.max(np.abs(want))) if want.size and want.dtype.kind == "f" else 0.0
        np.testing.assert_allclose(a[0][name], want, rtol=rtol, atol=max(1e-15, rtol * scale), err_msg=name)
    assert a[1]["counters"] == b[1]["counters"]
    assert (a[1]["last_loss"] is None) == (b[1]["last_loss"] is None)
    if a[1]["last_loss"] is not None:
        assert a[1]["last_loss"] == pytest.approx(b[1]["last_loss"], rel=rtol)


COMBINATIONS = list(itertools.product(CELLS, OUTPUTS, LEARNERS, OPTIMIZERS))


@pytest.mark.parametrize("cell,output,learner,optimizer", COMBINATIONS)
def test_the_kernel_step_equals_the_numpy_step(cell, output, learner, optimizer):
    fast, slow = pair(CELLS[cell], output, learner, optimizer)
    assert fast._kernel is not None and slow._kernel is None
    X, Y = stream(output)
    for x, y in zip(X, Y):
        a, b = fast.step(x, y), slow.step(x, y)
        np.testing.assert_allclose(a.prediction, b.prediction, rtol=1e-12, atol=1e-15)
        assert (a.loss is None) == (b.loss is None) and (a.loss is None or a.loss == pytest.approx(b.loss, rel=1e-12))
    assert fast.counters["updates"] >= 10
    assert_same(fast, slow)


@pytest.mark.parametrize("learner", LEARNERS)
def test_clipping_and_target_feedback_on_the_kernel_path(learner):
    fast, slow = pair(Elman(4), "squared", learner, "adam-decay", clip=0.05, feedback=True)
    X, Y = stream("squared", 80)
    for x, y in zip(X, Y):
        fast.step(x, y)
        slow.step(x, y)
    assert fast.counters["clipped"] > 10
    assert fast.diagnostics()["grad_norm_clipped"] == pytest.approx(slow.diagnostics()["grad_norm_clipped"], rel=1e-12)
    assert_same(fast, slow)


def test_models_the_kernels_do_not_cover_run_on_numpy():
    covered = OnlineRNN(2, (Elman(3),), kernels=True)
    assert covered._kernel is not None
    for model in (
        OnlineRNN(2, (Elman(3), Elman(2)), kernels=True),  # a stack
        OnlineRNN(2, (GRU(3),), kernels=True),
        OnlineRNN(2, (Elman(3),), learner=UORO(), kernels=True),
        OnlineRNN(2, (Elman(3),), Readout(1, "sigmoid"), SquaredError(), kernels=True),  # not a canonical pair
        OnlineRNN(2, (Elman(3),), optimizer=Chain(ClipGlobalNorm(1.0), Adam()), kernels=True),
        OnlineRNN(2, (Elman(3),), kernels=False),
    ):
        assert model._kernel is None
        model.step([0.1, 0.2], [0.3])  # and they step


def test_a_masked_step_and_a_non_finite_step_take_the_numpy_path():
    fast, slow = pair(Elman(4, "identity", gain=0.5), "squared", "rtrl", "sgd")
    X, Y = stream("squared", 20)
    for t, (x, y) in enumerate(zip(X, Y)):
        mask = [True, False] if t % 4 == 0 and y is not None else None
        fast.step(x, y, mask)
        slow.step(x, y, mask)
    for m in (fast, slow):
        m.params["U0"][...] = np.eye(4) * 1e200  # h grows 1e200-fold per step: the loss overflows
    for m in (fast, slow):
        for x in X[:3]:
            m.step(x, np.zeros(2))
        assert m.counters["skipped"] >= 1 and np.isfinite(m.network.stack.hidden(0)).all()
    assert fast.counters == slow.counters
    for m in (fast, slow):
        m.params["U0"][...] = np.eye(4) * 0.5
    for x, y in zip(X, Y):
        fast.step(x, y)
        slow.step(x, y)
    assert_same(fast, slow)


@pytest.mark.parametrize("learner", ["rtrl", "bptt-6-1"])
def test_a_non_finite_gradient_with_a_finite_loss_applies_nothing_on_both_paths(learner):
    """h = 0 and a = c = y + 1: the loss is 1 per output, but dL/dh = V^T delta = 1e200 per unit,
    so ||dL/dA|| overflows: the update is skipped and counted, the weights stay."""
    fast, slow = pair(Elman(3), "squared", learner, "sgd")
    for m in (fast, slow):
        m.network.theta[...] = 0.0
        m.params["V"][...] = 1e200
        m.params["c"][...] = 1.0
        m.reset_state()
    before = fast.network.theta.copy()
    a, b = fast.step(np.zeros(3), np.zeros(2)), slow.step(np.zeros(3), np.zeros(2))
    assert a.loss == b.loss == 1.0
    assert fast.counters == slow.counters == {"steps": 1, "updates": 0, "skipped": 1, "clipped": 0}
    np.testing.assert_array_equal(fast.network.theta, before)
    assert_same(fast, slow)


def test_a_checkpoint_continues_bit_for_bit_on_the_kernel_path_and_to_rounding_on_numpy(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.ENV, "1")  # from_file follows the environment (CI runs the suite with it at 0 too)
    fast, _ = pair(Leaky(4, beta=0.3), "logloss", "bptt-5-3", "adam-decay")
    X, Y = stream("logloss", 60)
    for x, y in zip(X[:30], Y[:30]):
        fast.step(x, y)
    fast.save(tmp_path / "m.npz")
    again = OnlineRNN.from_file(tmp_path / "m.npz")
    numpy_path = OnlineRNN.from_file(tmp_path / "m.npz")
    numpy_path._kernel = None
    assert again._kernel is not None
    for x, y in zip(X[30:], Y[30:]):
        want = fast.step(x, y).prediction
        np.testing.assert_array_equal(again.step(x, y).prediction, want)
        np.testing.assert_allclose(numpy_path.step(x, y).prediction, want, rtol=1e-12)
    a, b = fast.state_dict()[0], again.state_dict()[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_the_environment_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "0")
    assert not kernels.enabled() and OnlineRNN(2, (Elman(3),))._kernel is None
    monkeypatch.setenv(kernels.ENV, "1")
    assert kernels.enabled() and OnlineRNN(2, (Elman(3),))._kernel is not None


def test_rtrl_gradient_from_the_spare_row_of_the_product_equals_g_transpose_s():
    """The kernel reads the gradient off row n of one (n + 1, n) @ (n, P) product: it must equal
    g^T S_t read from the new sensitivities, and the spare row must not be state."""
    from streamrnn.kernels.table import with_spare_row

    fast = OnlineRNN(2, (Elman(4),), Readout(1), SquaredError(), RTRL(), SGD(0.0), seed=3, kernels=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        fast.step(rng.normal(size=2), rng.normal(size=1))
    x, y = rng.normal(size=2), rng.normal(size=1)
    fast.step(x, y)
    net = fast.network
    S = fast.learner._arrays[0]["S"][0]  # S_t, after the swap
    g = (net.o - y) @ net.V[:, :4]  # dL/dh_t for identity + squared error
    np.testing.assert_allclose(fast.grad[: net.n_recurrent], g @ S, rtol=1e-12, atol=1e-15)
    assert with_spare_row(S).shape == (5, S.shape[1])
    arrays, _ = fast.state_dict()
    assert [a.shape for name, a in arrays.items() if name.startswith("learner.S")] == [S.shape]


def test_a_kernel_source_or_a_constant_they_compile_in_that_changed_drops_the_cache(tmp_path, monkeypatch):
    """numba checks a cached function against its own file only; the package drops its cache (beside the
    sources, and under NUMBA_CACHE_DIR) when a kernel source or hybrid/scale.py (whose constants the
    kernels compile in) changed since the cache was stamped."""
    from pathlib import Path

    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    here = Path(kernels.__file__).parent
    user_dir = kernels._cache_dirs(here)[-1]
    assert user_dir.parent == tmp_path
    # only the temporary folder from here on: the package's own cache must not be touched under a test run
    monkeypatch.setattr(kernels, "_cache_dirs", lambda _: [user_dir])
    user_dir.mkdir(parents=True)
    (user_dir / "dense_step.rtrl_step-1.py311.nbi").write_bytes(b"old")
    (user_dir / "dense_step.rtrl_step-1.py311.1.nbc").write_bytes(b"old")
    (user_dir / "kernels.sha256").write_text("a digest of other sources")
    kernels._drop_stale_cache()
    assert sorted(p.name for p in user_dir.iterdir()) == ["kernels.sha256"]
    stamped = (user_dir / "kernels.sha256").read_text()
    (user_dir / "x.nbi").write_bytes(b"new")
    kernels._drop_stale_cache()  # nothing changed since: the cache stays
    assert (user_dir / "x.nbi").exists()

    scale = here.parent / "hybrid" / "scale.py"
    real = Path.read_bytes

    def edited(path):
        data = real(path)
        return data + b"\n# edited" if path == scale else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    kernels._drop_stale_cache()
    assert not (user_dir / "x.nbi").exists() and (user_dir / "kernels.sha256").read_text() != stamped


def test_a_strided_or_listed_input_steps_as_a_contiguous_one():
    """x as a strided view (a column of a Fortran-ordered block) or a list takes the kernel through a
    contiguous copy, and x itself is left as it was."""
    fast, slow = pair(Elman(4), "squared", "rtrl", "sgd")
    X, Y = stream("squared", 30)
    block = np.asfortranarray(np.stack([x for x in X]))
    for t, y in enumerate(Y):
        x = block[t]  # a row of a Fortran array: strided
        assert not x.flags.c_contiguous
        before = x.copy()
        a = fast.step(x if t % 2 else list(x), y)
        b = slow.step(np.ascontiguousarray(x), y)
        np.testing.assert_array_equal(x, before)
        np.testing.assert_allclose(a.prediction, b.prediction, rtol=1e-12, atol=1e-15)
    assert fast.counters == slow.counters and fast.counters["updates"] > 10
    assert_same(fast, slow)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 16, 23, 433])
def test_the_gradients_squared_norm_in_eight_partial_sums_is_the_sum_to_rounding(length):
    """``apply_update``'s norm: eight interleaved partial sums and the tail (lengths around the lanes), equal
    to the plain sum to rounding, the same on every call, and NaN or inf when a gradient is."""
    from streamrnn.kernels.dense_step import _squared_norm

    rng = np.random.default_rng(length)
    g = rng.normal(size=length) * rng.choice([1e-3, 1.0, 1e3], size=length)  # magnitudes far apart
    exact = float(np.sum(np.array([float(v) ** 2 for v in g], dtype=np.longdouble)))
    assert _squared_norm(g) == pytest.approx(exact, rel=1e-14, abs=0.0)
    assert _squared_norm(g) == _squared_norm(g.copy())
    if length:
        g[-1] = np.nan
        assert np.isnan(_squared_norm(g))
        g[-1] = np.inf
        assert _squared_norm(g) == np.inf
