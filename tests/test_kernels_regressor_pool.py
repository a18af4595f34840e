"""RegressorPool (kernels.regressor_pool, kernels.regressor_rows): supervised streams as rows of one pool, each
event bit for bit what the stream's own FeatureSpace and HybridRegressor give on the kernel path, whatever
else shares the call, over one thread or two; bad input changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import streamrnn as sr
from streamrnn import kernels
from streamrnn.estimators.features import FeatureSpace
from streamrnn.hybrid.regressor import HybridRegressor
from streamrnn.kernels import regressor_rows as rr

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")
N = 3

SETUPS = {
    "elman16-bptt10": dict(layers=(sr.Elman(16),), learner=sr.TruncatedBPTT(10, 1)),
    "leaky-bptt4-2-sgd": dict(layers=(sr.Leaky(5, beta=0.5),), learner=sr.TruncatedBPTT(4, 2),
                              optimizer=sr.SGD(0.01), clip_norm=None),
    "scheduled-lr": dict(layers=(sr.Elman(4),), learner=sr.TruncatedBPTT(3, 1),
                         optimizer=sr.Adam(sr.ExponentialDecay(0.01, 0.5, 7))),
    "no-corrector": dict(layers=None),
}


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The compiled path, whatever the environment (CI runs the suite with STREAMRNN_KERNELS=0 too)."""
    monkeypatch.setenv(kernels.ENV, "1")


def factory(setup: str):
    return lambda: HybridRegressor(N, **SETUPS[setup])


def fresh_pair(setup: str):
    space = FeatureSpace()
    space.add([f"x{i}" for i in range(N)])
    return space, factory(setup)()


def step_objects(space, model, u, y) -> float:
    """What the daemon does with a supervised event of one output: read, predict (and learn), learn the space."""
    z, dx = space.scale(u)
    p = model.predict(z, dx) if y is None else model.predict_learn(z, dx, y)
    space.learn({}, u.copy())
    return p


def state_of(space, model) -> dict:
    arrays: dict = {}
    space.state_into(arrays, "features.", True)
    model.state_into(arrays, "out0.", True)
    return arrays


def assert_same(pair_a, pair_b) -> None:
    a, b = state_of(*pair_a), state_of(*pair_b)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ma, mb = pair_a[1], pair_b[1]
    assert (ma.seen, ma.last, ma.lo, ma.hi, ma.bounded) == (mb.seen, mb.last, mb.lo, mb.hi, mb.bounded)
    assert pair_a[0].has_last == pair_b[0].has_last
    if ma.corrector is not None:
        ra, rb = ma.corrector.rnn, mb.corrector.rnn
        assert ra.counters == rb.counters
        assert repr((ra.last_loss, ra.grad_norm, ra.grad_norm_clipped)) == \
            repr((rb.last_loss, rb.grad_norm, rb.grad_norm_clipped))  # NaN where a loss overflowed
        assert ra.network.stack.h_sq_norms == rb.network.stack.h_sq_norms


def events(rng, k: int):
    U = rng.normal(size=(k, N)) * rng.uniform(0.5, 20.0, size=N) + rng.normal(size=N)
    Y = np.sin(U[:, 0]) + 0.5 * U[:, 1] + 0.1 * rng.normal(size=k)
    Y[rng.random(k) < 0.15] = np.nan  # events without a target: a prediction, and the space still learns
    return U, Y


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_rows_equal_their_objects_bit_for_bit(setup, parallel):
    """Random subsets of streams take events in each call (the pool grows past its capacity on the way):
    every prediction, and at the end every array and number of every stream, equal its own objects'."""
    rng = np.random.default_rng(1)
    B = 6
    pool = sr.RegressorPool(factory(setup), N, chunk=2, parallel=parallel)
    rows = [pool.add() for _ in range(B)]
    assert pool.capacity >= B and len(pool) == B
    pairs = [fresh_pair(setup) for _ in range(B)]
    for _ in range(60):
        chosen = rng.choice(B, size=rng.integers(1, B + 1), replace=False)
        U, Y = events(rng, len(chosen))
        got = pool.learn([rows[s] for s in chosen], U, Y)
        want = [step_objects(*pairs[s], U[i], None if np.isnan(Y[i]) else float(Y[i])) for i, s in enumerate(chosen)]
        assert got.tolist() == want
    for s in range(B):
        assert_same(pool.get(rows[s]), pairs[s])


@pytest.mark.parametrize("parallel", [False, True])
def test_scratch_slots_live_outside_the_rows_and_hold_nothing_between_calls(parallel):
    """BPTT's gradient and backward errors are not part of a row (it is that much smaller than its owners laid
    end to end), and the scratch buffer they share between calls carries nothing from one event to the next:
    filled with NaN before every call, the rows still give their objects' results bit for bit."""
    rng = np.random.default_rng(4)
    pool = sr.RegressorPool(factory("elman16-bptt10"), N, parallel=parallel)
    net = pool._where  # (owner, offset) per slot
    scratch = {net[i][0] for i in rr.SCRATCH_SLOTS}
    assert len(scratch) == len(rr.SCRATCH_SLOTS) and (pool.scratch_at >= 0).sum() == len(rr.SCRATCH_SLOTS)
    assert pool.row + sum(pool._sizes[o] for o in scratch) <= sum(s + (-s % 64) for s in pool._sizes)
    rows = [pool.add() for _ in range(4)]
    pairs = [fresh_pair("elman16-bptt10") for _ in range(4)]
    for _ in range(30):
        U, Y = events(rng, 4)
        pool._scratch_for(4)
        pool._scratch[2][...] = np.nan
        got = pool.learn(rows, U, Y)
        want = [step_objects(*pairs[s], U[s], None if np.isnan(Y[s]) else float(Y[s])) for s in range(4)]
        assert got.tolist() == want
    for s in range(4):
        assert_same(pool.get(rows[s]), pairs[s])


def test_a_row_does_not_depend_on_its_company():
    """Stream 0 alone in every call, or with others in varying calls: the same predictions and state."""
    rng = np.random.default_rng(2)
    alone, crowded = (sr.RegressorPool(factory("elman16-bptt10"), N, parallel=p) for p in (False, True))
    a0 = alone.add()
    others = [crowded.add() for _ in range(5)]
    c0 = crowded.add()
    for _ in range(40):
        U, Y = events(rng, 6)
        Y[0] = rng.normal()
        first = alone.learn([a0], U[:1], Y[:1])
        k = int(rng.integers(0, 6))
        mixed = crowded.learn([*others[:k], c0], np.vstack([U[1: k + 1], U[:1]]), np.concatenate([Y[1: k + 1], Y[:1]]))
        assert mixed[-1] == first[0]
    assert_same(alone.get(a0), crowded.get(c0))


def test_put_and_get_carry_a_stream_mid_way():
    """A stream stepped on its objects, put into a row, stepped there and taken out again, equals the same
    stream stepped on objects throughout; the row it was put in from stays as it was."""
    rng = np.random.default_rng(3)
    pool = sr.RegressorPool(factory("elman16-bptt10"), N)
    ours, theirs = fresh_pair("elman16-bptt10"), fresh_pair("elman16-bptt10")
    for _ in range(25):
        U, Y = events(rng, 1)
        for pair in (ours, theirs):
            step_objects(*pair, U[0], float(Y[0]) if Y[0] == Y[0] else None)
    r = pool.add(*ours)
    assert_same(pool.get(r), theirs)
    for _ in range(25):
        U, Y = events(rng, 1)
        got = pool.learn([r], U, Y)
        assert got[0] == step_objects(*theirs, U[0], float(Y[0]) if Y[0] == Y[0] else None)
    assert_same(pool.get(r), theirs)


def test_events_the_kernel_declines_run_on_the_rows_objects(monkeypatch):
    """A network whose weights hold a NaN (its steps are numpy's: the kernel leaves them, or skips them), and
    a space whose moments hold one (the kernel refuses the whole event): both run on the row's objects and
    are written back; every row still equals its objects."""
    rng = np.random.default_rng(4)
    pool = sr.RegressorPool(factory("elman16-bptt10"), N)
    pairs = [fresh_pair("elman16-bptt10") for _ in range(3)]
    for pair in pairs:
        for _ in range(5):
            U, Y = events(rng, 1)
            step_objects(*pair, U[0], float(rng.normal()))
    pairs[0][1].corrector.rnn.network.theta[0] = np.nan
    pairs[1][0].moments.mean[1] = np.nan
    rows = [pool.add(*pair) for pair in pairs]
    left = []  # what the kernel left to the rows' objects, by kind
    to_python = pool._left_to_python
    monkeypatch.setattr(pool, "_left_to_python", lambda i, r, res, *a: left.append(int(res[0])) or to_python(i, r, res, *a))
    stuck = state_of(*pool.get(rows[1]))
    for _ in range(20):
        U, Y = events(rng, 3)
        Y[:] = rng.normal(size=3)
        got = pool.learn(rows, U, Y)
        want = [step_objects(*pairs[i], U[i], float(Y[i])) for i in (0, 2)]
        np.testing.assert_array_equal(got[[0, 2]], want)
        with pytest.raises(ValueError) as refused:  # its objects refuse the event: so does its row
            step_objects(*pairs[1], U[1], float(Y[1]))
        assert np.isnan(got[1]) and pool.errors == {1: str(refused.value)}
    assert left.count(rr.REFUSED) == 20 and left.count(rr.NET_NUMPY) + left.count(rr.NET_NONFINITE) > 0
    for r, pair in zip(rows, pairs):
        assert_same(pool.get(r), pair)
    assert state_of(*pool.get(rows[1])).keys() == stuck.keys()
    for name, value in state_of(*pool.get(rows[1])).items():
        np.testing.assert_array_equal(value, stuck[name], err_msg=name)


def test_bad_input_is_refused_naming_it_and_changes_nothing():
    pool = sr.RegressorPool(factory("elman16-bptt10"), N)
    r, s = pool.add(), pool.add()
    pool.learn([r, s], np.ones((2, N)), [1.0, 2.0])
    before = [c.copy() for c in pool._chunks]
    cases = [
        (([r, r], np.ones((2, N)), [1.0, 1.0]), ValueError, "appears twice"),
        (([r], np.ones((1, N + 1)), [1.0]), ValueError, "shape"),
        (([r, s], np.array([[1.0, np.nan, 0.0], [0.0, 0.0, 0.0]]), [1.0, 1.0]), ValueError, "U row 0"),
        (([r], np.full((1, N), 1e101), [1.0]), ValueError, "within"),
        (([r, s], np.ones((2, N)), [1.0, np.inf]), ValueError, r"Y\[1\] is infinite"),
        (([r], [["a", "b", "c"]], [1.0]), ValueError, "arrays of numbers"),
        (([7], np.ones((1, N)), [1.0]), IndexError, "row 7"),
        (([r, -1], np.ones((2, N)), [1.0, 1.0]), IndexError, "row -1"),
        (([10**6], np.ones((1, N)), [1.0]), IndexError, "row 1000000"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            pool.learn(*args)
    for chunk, was in zip(pool._chunks, before):
        np.testing.assert_array_equal(chunk, was)
    pool.remove(s)
    with pytest.raises(IndexError):
        pool.learn([s], np.ones((1, N)), [1.0])
    assert len(pool) == 1 and pool.add() == s  # a removed row is used again


def test_what_cannot_be_pooled_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="RTRL"):
        sr.RegressorPool(lambda: HybridRegressor(N, layers=(sr.Elman(4),), learner=sr.RTRL()), N)
    pool = sr.RegressorPool(factory("no-corrector"), N)
    space, _ = fresh_pair("no-corrector")
    with pytest.raises(ValueError, match="laid out differently"):
        pool.add(space, HybridRegressor(N, layers=(sr.Elman(4),)))
    with pytest.raises(ValueError, match="3 features, not 0"):
        pool.add(FeatureSpace(), HybridRegressor(N))
    assert len(pool) == 0
    monkeypatch.setenv(kernels.ENV, "0")
    with pytest.raises(ValueError, match="no compiled step"):
        sr.RegressorPool(factory("elman16-bptt10"), N)



def test_one_event_at_a_time_equals_the_batch_call():
    """``learn_one`` (the daemon's path for a key whose events come one by one) gives what ``learn`` gives."""
    rng = np.random.default_rng(5)
    one, many = (sr.RegressorPool(factory("scheduled-lr"), N) for _ in range(2))
    for pool in (one, many):  # the rows stepped are in the pools' second chunk: their addresses are found by chunk
        for _ in range(pool.chunk):
            pool.add()
    a, b = one.add(), many.add()
    assert a // one.chunk == 1 and a % one.chunk == 0
    for _ in range(40):
        U, Y = events(rng, 1)
        y = None if np.isnan(Y[0]) else float(Y[0])
        assert one.learn_one(a, U[0].tolist(), y) == many.learn([b], U, Y)[0]
    assert_same(one.get(a), many.get(b))
    with pytest.raises(ValueError, match="3 values"):
        one.learn_one(a, [1.0], 1.0)
    with pytest.raises(IndexError):
        one.learn_one(a + 1, [1.0] * N, 1.0)


def test_a_view_reads_each_row_as_get_does():
    """``view`` loads rows into one reused pair of objects: read in turns, each row's state is ``get``'s."""
    rng = np.random.default_rng(6)
    pool = sr.RegressorPool(factory("elman16-bptt10"), N)
    rows = [pool.add() for _ in range(3)]
    for t in range(12):
        U, Y = events(rng, 3)
        pool.learn(rows, U, Y)
        if t % 3 == 2:
            for r in rows + rows[::-1]:
                assert_same(pool.view(r), pool.get(r))
                assert pool.view(r)[1].weights() == pool.get(r)[1].weights()


def test_get_names_the_spaces_columns_so_it_reads_a_streams_events():
    """``get(r, names)``: the space's columns are the stream's features in order, so a dict event is read into
    them (with the default names x0, x1, ... the stream's names would be unknown and read as zeros)."""
    pool = sr.RegressorPool(factory("elman16-bptt10"), N)
    r = pool.add()
    pool.learn([r], np.array([[1.0, 2.0, 3.0]]), [0.5])
    space, _ = pool.get(r, ["c", "a", "b"])
    assert space.names == ["c", "a", "b"]
    np.testing.assert_array_equal(space.raw({"a": 2.0, "b": 3.0, "c": 1.0}), [1.0, 2.0, 3.0])
    assert pool.get(r)[0].names == ["x0", "x1", "x2"]
    for names in (["a", "b"], ["a", "a", "b"]):
        with pytest.raises(ValueError, match="3 distinct feature names"):
            pool.get(r, names)
