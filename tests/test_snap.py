"""SnAp-1 (Menick et al. 2021): exact RTRL where the one-step pattern loses nothing, close to it on a
dense network, learns the Add task, and is an ordinary learner (state, configuration, daemon)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn import (
    RTRL, SGD, Adam, CrossEntropy, Elman, Leaky, OnlineRNN, Readout, SnAp1, TruncatedBPTT,
)
from streamrnn.learners import REGISTRY, from_config

from .frozen import frozen_when_asked  # noqa: F401  (STREAMRNN_TEST_FREEZE=1: every "learning" test must fail)
from .test_learning import OPTIMUM, held_out_cross_entropy, lag3_only_cross_entropy
from .test_state import events, make as make_stack, run

N_IN = 3


def model(cells, learner, seed=5):
    """A 3-class softmax model whose weights never move (SGD at rate 0)."""
    return OnlineRNN(N_IN, cells, Readout(3, "softmax"), CrossEntropy(), learner, SGD(0.0), seed=seed)


def stream(length, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(length, N_IN)), np.eye(3)[rng.integers(0, 3, length)]


def keep_diagonal(m, layer):
    U = m.params[f"U{layer}"]
    U[...] = np.diag(np.diag(U))


# --- 1. exact where J is diagonal ----------------------------------------------------------------

@pytest.mark.parametrize("cells", [
    (Elman(6),),
    (Elman(6, "sigmoid"),),
    (Leaky(6, beta=(0.2, 0.5, 0.7, 1.0, 0.35, 0.9)),),
], ids=["elman", "elman-sigmoid", "leaky"])
def test_equals_rtrl_when_the_recurrence_is_diagonal(cells):
    """One layer with U diagonal: J = dh_t/dh_{t-1} is diagonal, so the sensitivities RTRL carries outside
    SnAp-1's pattern stay zero and the two gradients agree at every step."""
    X, Y = stream(200)
    exact, snap = model(cells, RTRL()), model(cells, SnAp1())
    for m in (exact, snap):
        keep_diagonal(m, 0)
        m.params["b0"][...] = np.linspace(-0.5, 0.5, 6)  # non-zero biases, readout as initialised
    for t in range(len(X)):
        exact.step(X[t], Y[t])
        snap.step(X[t], Y[t] if t % 3 else None)  # steps without a target carry the traces too
        if t % 3 == 0:
            continue
        want = np.concatenate([g.ravel() for g in exact.gradient.values()])
        got = np.concatenate([g.ravel() for g in snap.gradient.values()])
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max(), t
    assert snap.counters["updates"] == len([t for t in range(len(X)) if t % 3])


def test_equals_rtrl_on_a_stack_without_temporal_paths_between_layers():
    """Two layers, U0 diagonal and U1 = 0: every path from layer 0's parameters to the loss goes through
    the step's own h^0, so back-propagating g^0 = W_1^T (D^1 * g^1) within the step is exact."""
    cells = (Elman(5), Elman(4))
    X, Y = stream(150)
    exact, snap = model(cells, RTRL()), model(cells, SnAp1())
    for m in (exact, snap):
        keep_diagonal(m, 0)
        m.params["U1"][...] = 0.0
    for t in range(len(X)):
        exact.step(X[t], Y[t])
        snap.step(X[t], Y[t])
        for k, want in exact.gradient.items():
            np.testing.assert_allclose(snap.gradient[k], want, rtol=0, atol=1e-12 * np.abs(want).max() + 1e-300,
                                       err_msg=f"{k} at step {t}")


# --- 2. close to RTRL on a dense network ------------------------------------------------------------

def mean_cosine(cells, steps=1000, seed=5):
    """Mean over ``steps`` of cos(SnAp-1's, RTRL's gradient of the recurrent parameters), both learners
    bound to one network and stepped on the same forward pass (the weights do not move)."""
    net = model(cells, RTRL(), seed=seed).network
    exact, snap = RTRL().bind(net), SnAp1().bind(net)
    g_exact, g_snap = np.zeros(net.n_params), np.zeros(net.n_params)
    loss = CrossEntropy()
    X, Y = stream(steps, seed=seed + 1)
    cosines = []
    P = net.n_recurrent
    for x, y in zip(X, Y):
        net.forward(x)
        _, delta = loss(net.a, net.o, y, None, net.out_act)
        assert exact.step(net, delta, g_exact) and snap.step(net, delta, g_snap)
        assert net.commit()
        a, b = g_exact[:P], g_snap[:P]
        cosines.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        np.testing.assert_array_equal(g_snap[P:], g_exact[P:])  # the readout's gradient is exact
    return float(np.mean(cosines))


@pytest.mark.parametrize("cells, bound", [
    ((Elman(32),), 0.65),  # measured 0.736
    ((Elman(6), Leaky(4, beta=0.5)), 0.65),  # measured 0.800
], ids=["elman-32", "stack"])
def test_gradient_points_the_way_of_rtrl_on_a_dense_network(cells, bound):
    """Dense orthogonal U (the engine's initialisation), 3 inputs ~ N(0, 1), 3-class softmax, 1,000 steps:
    the mean cosine similarity to exact RTRL's gradient was 0.736 (32 Elman units; 0.74-0.76 for other
    seeds) and 0.800 (6 Elman units under 4 leaky ones; 0.70-0.73 for other seeds); pinned with a margin."""
    assert mean_cosine(cells) > bound


# --- 3. it learns ----------------------------------------------------------------------------------

@pytest.mark.learning
def test_add_task_below_the_issues_goal():
    """Held-out cross-entropy 0.4835 at lr 0.001 (seeds 1, 2: 0.4872, 0.4732); with the protocol's default
    lr 0.002 it is 0.4928 (0.4964, 0.4836), at 0.003 0.4994.  Exact RTRL: 0.4726 at 0.002, 0.4728 at
    0.001; x_{t-3} alone 0.519; the optimum 0.4545.  About 2 s."""
    ce = held_out_cross_entropy(SnAp1(), lr=0.001)
    assert OPTIMUM - 0.01 < ce < 0.50, ce
    assert ce < lag3_only_cross_entropy() - 0.015, ce  # some of the lag-8 dependency is learned


# --- 4. an ordinary learner -------------------------------------------------------------------------

def test_restored_model_continues_bit_for_bit(tmp_path):
    evs = events(60)
    straight = make_stack(SnAp1(), Adam(0.01), feedback=True)
    expected = run(straight, evs)
    first = make_stack(SnAp1(), Adam(0.01), feedback=True)
    run(first, evs[:33])
    first.save(tmp_path / "m.npz")
    resumed = make_stack(SnAp1(), Adam(0.01), feedback=True)
    resumed.load(tmp_path / "m.npz")
    rebuilt = OnlineRNN.from_file(tmp_path / "m.npz")  # the learner's kind comes back from the header
    assert rebuilt.learner == SnAp1()
    np.testing.assert_array_equal(rebuilt.learner.state_arrays()["S1"], first.learner.state_arrays()["S1"])
    got = run(resumed, evs[33:], start=33)
    np.testing.assert_array_equal(got, expected[33:])
    a_straight, _ = straight.state_dict()
    a_resumed, _ = resumed.state_dict()
    assert a_straight.keys() == a_resumed.keys()
    assert {"learner.S0", "learner.S1"} <= a_straight.keys()
    assert a_straight["learner.S0"].shape == (6, 6 + 5 + 1) and a_straight["learner.S1"].shape == (4, 4 + 6 + 1)
    for k in a_straight:
        np.testing.assert_array_equal(a_straight[k], a_resumed[k], err_msg=k)


def test_state_arrays_reset_and_misshapen_state():
    m = make_stack(SnAp1(), Adam(0.01))
    run(m, events(10))
    arrays = m.learner.state_arrays()
    assert sorted(arrays) == ["S0", "S1"] and all(np.abs(a).sum() > 0 for a in arrays.values())
    m.reset_state()
    assert all(not a.any() for a in m.learner.state_arrays().values())
    with pytest.raises(ValueError, match="S1"):
        m.learner.load_state_arrays({"S0": np.zeros((6, 9)), "S1": np.zeros((4, 10))})
    with pytest.raises(ValueError, match="missing array 'S1'"):
        m.learner.load_state_arrays({"S0": np.zeros((6, 9))})


def test_specification_configuration_and_registry():
    assert REGISTRY["snap1"] is SnAp1 and SnAp1.settings() == {}
    assert SnAp1().config() == {"kind": "SnAp1"} and from_config({"kind": "SnAp1"}) == SnAp1()
    assert repr(SnAp1()) == "SnAp1()" and SnAp1() != RTRL() and hash(SnAp1()) == hash(SnAp1())
    with pytest.raises(TypeError):
        SnAp1(3)
    with pytest.raises(TypeError):
        from_config({"kind": "SnAp1", "h": 3})
    # one specification serves many models: each binds its own traces
    spec = SnAp1()
    a, b = make_stack(spec, Adam(0.01)), make_stack(spec, Adam(0.01))
    run(a, events(5))
    assert not any(v.any() for v in b.learner.state_arrays().values())
    assert a.learner is not b.learner and a.diagnostics()["sensitivity_norm"] > 0


def test_the_daemon_builds_it():
    from streamrnn_service.config import ConfigError, load

    config = load(environ={}, overrides={"model.learner": "snap1"})
    assert config.model.learner.build() == SnAp1()
    config = load(environ={"STREAMRNN_MODEL_LEARNER": "snap1"})
    assert config.model.learner.build() == SnAp1()
    with pytest.raises(ConfigError, match="snap1"):
        load(environ={}, overrides={"model.learner": "snap1", "model.learner.h": "3"})


def test_a_step_without_a_target_is_not_an_update():
    m = model((Elman(4),), SnAp1())
    grad = np.full(m.network.n_params, 7.0)
    m.predict(np.zeros(N_IN))
    assert m.learner.step(m.network, None, grad) is False
    assert (grad == 7.0).all() and m.learner.state_arrays()["S0"].any()  # traces advanced, grad untouched


def test_bptt_1_is_a_different_gradient():
    """Sanity for the benchmark's baseline: BPTT(1) keeps no history, SnAp-1 does (they differ after step 1)."""
    X, Y = stream(5)
    a, b = model((Elman(4),), SnAp1()), model((Elman(4),), TruncatedBPTT(1, 1))
    for x, y in zip(X, Y):
        a.step(x, y)
        b.step(x, y)
    assert not np.allclose(a.gradient["U0"], b.gradient["U0"])


def test_pickled_and_copied_models_continue_bit_for_bit():
    """A model rebuilds its learner on unpickling (never pickles views): the SnAp-1 traces come back
    bound to the new network's own weights and buffers."""
    import copy
    import pickle

    evs = events(40)
    m = make_stack(SnAp1(), Adam(0.01), feedback=True)
    run(m, evs[:20])
    clones = [pickle.loads(pickle.dumps(m)), copy.deepcopy(m)]
    expected = run(m, evs[20:], start=20)
    for clone in clones:
        np.testing.assert_array_equal(run(clone, evs[20:], start=20), expected)


def test_grow_inputs_keeps_the_traces():
    """A new input is a new zero column of W0 and of SnAp-1's S0 = dh^0_i/dA_0[i, :]; fed 0, the grown
    model continues like the old one (to rounding)."""
    from streamrnn.grow import grow_inputs

    m = make_stack(SnAp1(), Adam(0.01))
    run(m, events(20))
    wider = grow_inputs(m, 1)
    S_old, S_new = m.learner.state_arrays()["S0"], wider.learner.state_arrays()["S0"]
    np.testing.assert_array_equal(np.delete(S_new, 6 + 2, axis=1), S_old)
    for x, y in events(10, seed=1):
        np.testing.assert_allclose(wider.step(np.append(x, 0.0), y).prediction, m.step(x, y).prediction,
                                   rtol=1e-12, atol=1e-14)
