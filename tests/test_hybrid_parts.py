"""The exact parts of the hybrid models, each against a reference computed another way."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from streamrnn.hybrid import (
    RLS,
    Clock,
    ExponentialSmoothing,
    History,
    LinearAR,
    MLPoly,
    Persistence,
    RobustScale,
    RunningMoments,
    SeasonalNaive,
    Theta,
    detect_periods,
    periods_for_interval,
    phase_features,
)
from streamrnn.hybrid.logistic import OnlineLogistic, log_loss_regret
from streamrnn.hybrid.rls import SharedRLS
from streamrnn.state import StateError

RNG = np.random.default_rng(0)


# ----- recursive least squares ------------------------------------------------------------


@pytest.mark.parametrize("lam", [1.0, 0.98])
def test_rls_is_the_exact_weighted_ridge_solution(lam):
    d, n, delta = 4, 60, 0.5
    X, t = RNG.normal(size=(n, d)), RNG.normal(size=n)
    rls = RLS(d, lam=lam, delta=delta)
    for x, y in zip(X, t):
        rls.update(0, x, y)
    weights = lam ** np.arange(n - 1, -1, -1)
    A = (X * weights[:, None]).T @ X + lam ** n * delta * np.eye(d)
    expected = np.linalg.solve(A, (X * weights[:, None]).T @ t)
    np.testing.assert_allclose(rls.w[0], expected, rtol=1e-9, atol=1e-12)


def test_rls_huber_weights_bound_an_outliers_pull():
    plain, robust = RLS(2, delta=1e-3), RLS(2, delta=1e-3, huber=2.0)
    for x in np.linspace(-1, 1, 200):
        for m in (plain, robust):
            m.update(0, np.array([1.0, x]), 1.0 + 2.0 * x + 0.01 * RNG.normal())
    for m in (plain, robust):
        m.update(0, np.array([1.0, 0.0]), 1e6)
    assert abs(robust.w[0, 0] - 1.0) < 0.01 < abs(plain.w[0, 0] - 1.0)


def test_rls_refuses_a_sample_that_is_not_finite():
    rls = RLS(2)
    before = rls.state()
    assert not rls.update(0, np.array([1.0, np.inf]), 1.0)
    assert all(np.array_equal(before[k], v) for k, v in rls.state().items())


def test_heads_updated_together_leave_a_head_whose_sample_is_refused_as_it_was():
    together, alone = RLS(2, lam=0.9, heads=3), RLS(2, lam=0.9, heads=3)
    Z = RNG.normal(size=(3, 2))
    for rls in (together, alone):
        rls.update_heads(Z, np.ones(3))
    before = together.state()
    Z[1, 0] = np.nan
    together.update_heads(Z, np.array([1.0, 2.0, 3.0]))
    for h, t in ((0, 1.0), (2, 3.0)):
        alone.update(h, Z[h], t)
    after = together.state()
    for name in ("w", "P_upper", "updates"):  # head 1 as it was; heads 0 and 2 as if updated on their own
        assert np.array_equal(after[name][1], before[name][1])
        np.testing.assert_allclose(after[name][[0, 2]], alone.state()[name][[0, 2]], rtol=1e-12)
    assert RLS(3, heads=0).state()["P_upper"].shape == (0, 6)  # no heads yet (they grow): nothing to fail on


def test_rls_inserted_features_start_as_if_never_seen_and_heads_update_together():
    rls, wide = RLS(2, delta=2.0, heads=3), RLS(4, delta=2.0, heads=3)
    Z = RNG.normal(size=(30, 3, 2))
    for rows in Z:
        rls.update_heads(rows, rows.sum(axis=1))
        wide.update_heads(np.insert(rows, [1, 1], 0.0, axis=1), rows.sum(axis=1))
    rls.insert(1, 2)
    np.testing.assert_allclose(rls.w, wide.w, rtol=1e-12)
    np.testing.assert_allclose(rls.P, wide.P, rtol=1e-12, atol=1e-15)
    one = RLS(2, delta=2.0, heads=3)
    for rows in Z:
        for h in range(3):
            one.update(h, rows[h], rows[h].sum())
    np.testing.assert_allclose(one.w, RLS_of(Z), rtol=1e-12)


def RLS_of(Z):
    r = RLS(2, delta=2.0, heads=3)
    for rows in Z:
        r.update_heads(rows, rows.sum(axis=1))
    return r.w


def test_shared_rls_equals_one_rls_per_output():
    shared, single = SharedRLS(3, outputs=2), [RLS(3), RLS(3)]
    for _ in range(50):
        z, t = RNG.normal(size=3), RNG.normal(size=2)
        shared.update(z, t)
        for k in range(2):
            single[k].update(0, z, t[k])
    np.testing.assert_allclose(shared.W, np.vstack([s.w[0] for s in single]), rtol=1e-10)


def _trained_symmetric_parts():
    """An RLS (with Huber weights and forgetting), a three-head RLS, a SharedRLS and an OnlineLogistic,
    each after 200 updates (past the every-64 symmetrisation) on random data with outliers."""
    rls, heads = RLS(4, lam=0.99, huber=2.0), RLS(3, lam=0.995, heads=3)
    shared, logistic = SharedRLS(3, outputs=2, lam=0.99), OnlineLogistic(2)
    logistic.add_class()
    logistic.add_class()
    for i in range(200):
        z = RNG.normal(size=4) * (30.0 if i % 50 == 7 else 1.0)
        rls.update(0, z, float(z @ [1.0, -2.0, 0.5, 3.0]))
        heads.update_heads(RNG.normal(size=(3, 3)), RNG.normal(size=3))
        shared.update(z[:3], z[1:3])
        logistic.learn(z[:2], i % 2)
    return rls, heads, shared, logistic


def test_rls_inverses_stay_symmetric_bit_for_bit_and_are_saved_as_triangles():
    for part in _trained_symmetric_parts():
        P = part.P
        assert P.shape[-1] > 1 and not np.array_equal(P, np.eye(P.shape[-1]) * P[..., :1, :1])  # it learned
        assert np.array_equal(P.view(np.uint64), np.swapaxes(P, -1, -2).view(np.uint64))
        state = part.state()
        d = P.shape[-1]
        assert "P" not in state and state["P_upper"].shape == P.shape[:-2] + (d * (d + 1) // 2,)
        fresh = type(part).__new__(type(part))
        fresh.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in part.__dict__.items()})
        fresh.P = np.zeros_like(P)
        fresh.load(state)
        assert np.array_equal(fresh.P.view(np.uint64), P.view(np.uint64))  # the same bits, mirrored back


def test_a_saved_rls_continues_bit_for_bit_and_an_unsymmetric_inverse_is_saved_whole():
    rls = _trained_symmetric_parts()[0]
    copy = RLS(4, lam=0.99, huber=2.0)
    copy.load(rls.state())
    for _ in range(100):
        z = RNG.normal(size=4)
        rls.update(0, z, float(z.sum()))
        copy.update(0, z, float(z.sum()))
    assert np.array_equal(copy.w, rls.w) and np.array_equal(copy.P, rls.P)
    # a state saved before the symmetric update (P a little off symmetric) is kept whole and loads as it was
    rls.P[0, 0, 1] = np.nextafter(rls.P[0, 0, 1], 1.0)
    state = rls.state()
    assert "P_upper" not in state and np.array_equal(state["P"], rls.P)
    copy.load(state)
    assert np.array_equal(copy.P, rls.P)
    # ... and is made symmetric by the next update that is a multiple of 64
    while copy.updates[0] % 64:
        copy.update(0, RNG.normal(size=4), 0.0)
    assert np.array_equal(copy.P, np.swapaxes(copy.P, -1, -2))


def test_a_triangle_of_the_wrong_length_is_refused_and_changes_nothing():
    rls = _trained_symmetric_parts()[0]
    state = rls.state()
    before = {k: v.copy() for k, v in state.items()}
    for bad in (state["P_upper"][:, :-1], state["P_upper"][:, :6]):  # no triangle; a triangle of another d
        with pytest.raises(StateError, match="P"):
            rls.load({**state, "P_upper": bad})
        assert all(np.array_equal(v, rls.state()[k]) for k, v in before.items())


# ----- scales and history -------------------------------------------------------------------


def test_robust_scale_never_overflows_and_an_outlier_moves_it_little():
    s = RobustScale(rate=0.02)
    for _ in range(100):
        s.update(1.0)
    s.update(1e308)
    assert 1.0 < s.value < 1.1
    for e in (1e308, -1e308, 1e308):
        s.update(e)
    assert math.isfinite(s.value)


def test_running_moments_match_numpy():
    m, values = RunningMoments(3), RNG.normal(size=(40, 3)) * [1, 10, 100]
    for v in values:
        m.update(v)
    np.testing.assert_allclose(m.mean, values.mean(axis=0))
    np.testing.assert_allclose(m.std, values.std(axis=0))


def test_history_ring_and_state_round_trip():
    h = History(5)
    for y in range(1, 13):
        h.push(float(y))
    assert h.window(5).tolist() == [8.0, 9.0, 10.0, 11.0, 12.0] and (h.lo, h.hi, h.n) == (1.0, 12.0, 12)
    g = History(5)
    g.load(h.state())
    assert g.window(5).tolist() == h.window(5).tolist() and g.n == 12
    with pytest.raises(StateError):
        History(6).load(h.state())  # another capacity


# ----- components --------------------------------------------------------------------------


def test_naive_forecasts():
    h = History(20)
    p, s = Persistence(h), SeasonalNaive(h, 4)
    for y in range(10):
        h.push(float(y))
    assert p.forecast(3).tolist() == [9.0, 9.0, 9.0]
    assert s.forecast(6).tolist() == [6.0, 7.0, 8.0, 9.0, 6.0, 7.0]


@pytest.mark.parametrize("log", [False, True])
def test_smoothing_repeats_a_season_after_one_cycle_and_follows_its_level(log):
    h = History(30)
    ets = ExponentialSmoothing(h, (12,), log=log)
    pattern = 20 + 5 * np.sin(2 * np.pi * np.arange(12) / 12)
    for t in range(12):
        h.push(float(pattern[t]))
        ets.learn()
    np.testing.assert_allclose(ets.forecast(12), pattern, rtol=1e-9)  # one cycle seen: it repeats it
    grow = (lambda t: pattern[t % 12] * math.exp(0.003 * t)) if log else (lambda t: pattern[t % 12] + 0.05 * t)
    for t in range(12, 120):
        h.push(float(grow(t)))  # a slow trend: multiplicative for the log model, additive otherwise
        ets.learn()
    truth = np.array([grow(t) for t in range(120, 132)])
    assert np.max(np.abs(ets.forecast(12) - truth)) < 0.5


def test_smoothing_moves_a_bounded_amount_on_an_outlier_and_a_log_model_retires_on_zero():
    h = History(30)
    ets, log = ExponentialSmoothing(h, (), trend=False), ExponentialSmoothing(h, (), trend=False, log=True)
    for t in range(100):
        h.push(10.0 + 0.1 * math.sin(t))
        ets.learn()
        log.learn()
    before = ets.level
    h.push(1e9)
    ets.learn()
    assert abs(ets.level - before) < 1.0  # the error that moves the state is limited to 3 typical ones
    h.push(0.0)
    log.learn()
    assert log.retired and not log.ready


def test_theta_drift_is_half_the_trend():
    h = History(10)
    theta = Theta(h, (), alpha=0.5, lam=1.0)
    for t in range(200):
        h.push(2.0 * t)
        theta.learn()
    f = theta.forecast(3)
    assert f[1] - f[0] == pytest.approx(1.0, rel=1e-6)  # half of the slope 2


def test_linear_ar_recovers_an_ar2_exactly_in_change_units():
    """y_t = 1.5 y_{t-1} - 0.6 y_{t-2}: its change is -0.5 y_{t-1} + 0.6 (y_{t-1} - y_{t-2})... linear in the
    relative lags, so the one-step forecasts become exact."""
    h = History(10)
    lin = LinearAR(h, lags=(1, 2), lam=1.0, delta=1e-6, huber=None)
    y = [1.0, 0.5]
    for _ in range(300):
        y.append(1.5 * y[-1] - 0.6 * y[-2] + 0.01 * RNG.normal())
    for v in y:
        h.push(v)
        lin.learn()
    next_value = 1.5 * y[-1] - 0.6 * y[-2]
    assert lin.forecast(1)[0] == pytest.approx(next_value, abs=0.05)


# ----- aggregation ---------------------------------------------------------------------------


def test_ml_poly_is_never_much_worse_than_the_best_expert_and_can_beat_it():
    agg = MLPoly(3, 1)
    awake = np.ones(3, dtype=bool)
    losses = np.zeros(4)
    for t in range(2000):
        y = math.sin(t / 10)
        experts = np.array([y + 0.5, y - 0.5, y + 2.0 * RNG.normal()])  # two biased, one noisy
        combined = float(agg.weights(0, awake) @ experts)
        losses += np.abs(np.append(experts, combined) - y)
        agg.update(0, experts, awake, y)
    assert losses[3] < 0.5 * min(losses[:3])  # the two biases cancel in the combination


def test_sleeping_experts_get_no_weight_and_keep_their_regret():
    agg = MLPoly(2, 1)
    agg.update(0, np.array([1.0, 5.0]), np.array([True, False]), 1.0)
    assert agg.S[0, 1] == 0.0 and agg.weights(0, np.array([True, False])).tolist() == [1.0, 0.0]


def test_update_steps_equals_one_update_per_step():
    a, b = MLPoly(3, 4), MLPoly(3, 4)
    for _ in range(20):
        F, awake, y = RNG.normal(size=(4, 3)), RNG.random((4, 3)) > 0.2, RNG.normal()
        a.update_steps(F, awake, y)
        for h in range(4):
            b.update(h, F[h], awake[h], y)
    np.testing.assert_allclose(a.R, b.R, rtol=1e-12)


def test_a_challenger_with_a_margin_must_prove_itself():
    agg = MLPoly(2, 1, prior=(1.0, 0.0), margin=2.0)
    both = np.ones(2, dtype=bool)
    for t in range(5):
        agg.update(0, np.array([1.0, 0.9]), both, 0.0)  # the challenger is slightly better...
    assert agg.weights(0, both)[1] > 0.0  # ...consistently: it earns weight
    noisy = MLPoly(2, 1, prior=(1.0, 0.0), margin=2.0)
    for t in range(200):
        y = RNG.normal()
        noisy.update(0, np.array([0.0, RNG.normal()]), both, y)  # no better than the default
    assert noisy.weights(0, both)[1] < 0.2


def test_log_loss_regret_of_a_perfect_expert_is_positive():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    r = log_loss_regret(probs, np.ones(2, dtype=bool), np.array([0.5, 0.5]), 0)
    assert r[1] > 0 > r[0]


def test_online_logistic_separates_separable_classes():
    model = OnlineLogistic(2)
    model.add_class()
    model.add_class()
    for _ in range(300):
        z = RNG.normal(size=2)
        model.learn(z, int(z[0] + z[1] > 0))
    assert model.proba(np.array([2.0, 2.0]))[1] > 0.95 and model.proba(np.array([-2.0, -2.0]))[0] > 0.95


# ----- seasons and calendar ---------------------------------------------------------------------


def test_detect_periods_finds_a_day_inside_a_week_and_nothing_in_noise():
    t = np.arange(3000)
    day = np.sin(2 * np.pi * t / 48)
    week = np.where((t // 48) % 7 >= 5, -0.6, 0.0)  # weekends lower
    y = 10 + day + week + 0.02 * np.random.default_rng(1).normal(size=len(t))
    assert detect_periods(y) == (48, 336)
    assert detect_periods(RNG.normal(size=3000)) == ()
    assert detect_periods(y[:100]) == ()  # too short to see three cycles of anything


def test_calendar_phases_and_periods():
    monday_six = dt.datetime(2024, 1, 1, 6, tzinfo=dt.timezone.utc).timestamp()
    f = phase_features(monday_six, 3600.0)
    assert f[0] == pytest.approx(1.0)  # the day's phase at 06:00
    assert f[2] == pytest.approx(math.sin(2 * math.pi * 6 / 168))  # the week starts on Monday 00:00
    assert phase_features(monday_six, 30 * 86400.0)[:4].tolist() == [0.0, 0.0, 0.0, 0.0]  # monthly: no day, no week
    assert periods_for_interval(86400.0) == (7, 365) and periods_for_interval(7 * 86400.0) == (52,)
    clock = Clock()
    for month in range(1, 13):
        clock.tick(dt.datetime(2023, month, 1, tzinfo=dt.timezone.utc).timestamp())
    nov_2024 = dt.datetime(2024, 11, 1, tzinfo=dt.timezone.utc).timestamp()
    assert clock.steps_to(nov_2024) == 11


def test_linear_ar_rolls_its_forecasts_forward_as_lags():
    """Multi-step forecasts feed each step's forecast back as the newest value (the recursive strategy):
    forecast(H) equals the fitted one-step model applied H times to its own output, and on a noiseless
    oscillation of the changes -- which turns only if the forecasts are fed back -- it follows the truth."""
    def continue_(values, n):  # d_{t+1} = 1.6 d_t - 0.95 d_{t-1}: in relative lags, w1 = -2.55, w2 = 0.95
        values = list(values)
        for _ in range(n):
            values.append(values[-1] + 1.6 * (values[-1] - values[-2]) - 0.95 * (values[-2] - values[-3]))
        return values

    y = continue_([10.0, 10.5, 11.5], 60)
    h = History(20)
    lin = LinearAR(h, lags=(1, 2), lam=1.0, delta=1e-6, huber=None)
    for v in y:
        h.push(v)
        lin.learn()
    H = 12
    got = lin.forecast(H)
    w, s = lin.rls.w[0], lin.scale
    np.testing.assert_allclose(w, [0.0, -2.55, 0.95], atol=1e-3)
    path = list(h.window(3))  # by hand: each step on the values so far, the forecasts included
    for _ in range(H):
        z = np.array([1.0, (path[-2] - path[-1]) / s, (path[-3] - path[-1]) / s])
        path.append(path[-1] + s * float(w @ z))
    np.testing.assert_allclose(got, path[3:], rtol=1e-12)
    truth = continue_(y, H)[-H:]
    np.testing.assert_allclose(got, truth, atol=0.01 * np.ptp(y))


def test_a_new_corrector_predicts_no_error_until_it_has_learned_one():
    import streamrnn as sr
    from streamrnn.hybrid.corrector import RNNCorrector

    corrector = RNNCorrector(4, 3, 1, (sr.Elman(5),), sr.RTRL(), sr.Adam(1e-3), 1.0, seed=0)
    params = corrector.rnn.params
    assert not params["V"].any() and params["U0"].any()  # the read-out is zero, the recurrent weights are not
    assert corrector.rnn.predict(np.ones(corrector.rnn.n_inputs)).tolist() == [0.0]
