"""Save -> load -> continue equals never stopping, bit for bit, for every learner and optimiser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrnn import (
    RTRL, SGD, Adam, Chain, ClipGlobalNorm, CrossEntropy, Elman, EpochwiseBPTT, ExponentialDecay,
    InverseTimeDecay, Leaky, Momentum, OnlineRNN, Readout, RMSProp, StateError, TruncatedBPTT, WeightDecay,
)
from streamrnn import state as state_io

LEARNERS = {
    "rtrl": RTRL(),
    "bptt-5-1": TruncatedBPTT(5, 1),
    "bptt-6-3": TruncatedBPTT(6, 3),
    "epochwise": EpochwiseBPTT(),
}
OPTIMISERS = {
    "sgd": SGD(0.05),
    "momentum": Momentum(0.02, 0.9),
    "nesterov": Momentum(0.02, 0.9, nesterov=True),
    "rmsprop": RMSProp(0.005),
    "adam": Adam(0.01),
    "chain": Chain(WeightDecay(1e-3), ClipGlobalNorm(0.5), Adam(ExponentialDecay(0.01, 0.5, 100))),
    "inverse-time": SGD(InverseTimeDecay(0.05, 0.01)),
}


def make(learner, optimizer, feedback=False):
    return OnlineRNN(
        2, (Elman(6), Leaky(4, beta=0.5)), Readout(3, "softmax"), CrossEntropy(), learner, optimizer,
        clip_norm=2.0, target_feedback=feedback, seed=11,
    )


def events(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    Y = np.eye(3)[rng.integers(0, 3, n)]
    return [(x, None if i % 5 == 4 else y) for i, (x, y) in enumerate(zip(X, Y))]


def run(model, evs, sequence_every=None, start=0):
    """Step through evs (numbered from ``start``), closing a sequence every ``sequence_every`` events."""
    out = []
    for i, (x, y) in enumerate(evs, start):
        out.append(model.step(x, y).prediction)
        if sequence_every and (i + 1) % sequence_every == 0:
            model.end_sequence()
    return np.array(out)


@pytest.mark.parametrize("opt_key", OPTIMISERS)
@pytest.mark.parametrize("learner_key", LEARNERS)
def test_restored_model_continues_bit_for_bit(tmp_path, learner_key, opt_key):
    learner, optimizer = LEARNERS[learner_key], OPTIMISERS[opt_key]
    seq = 7 if learner_key == "epochwise" else None
    evs = events(60)
    straight = make(learner, optimizer, feedback=True)
    expected = run(straight, evs, seq)

    first = make(learner, optimizer, feedback=True)
    run(first, evs[:33], seq)  # stop mid-sequence, mid-window
    first.save(tmp_path / "m.npz")
    resumed = make(learner, optimizer, feedback=True)
    resumed.load(tmp_path / "m.npz")
    got = run(resumed, evs[33:], seq, start=33)
    np.testing.assert_array_equal(got, expected[33:])
    a_straight, _ = straight.state_dict()
    a_resumed, _ = resumed.state_dict()
    assert a_straight.keys() == a_resumed.keys()
    for k in a_straight:
        np.testing.assert_array_equal(a_straight[k], a_resumed[k], err_msg=k)


def test_state_names_follow_the_seed_notation():
    arrays, header = make(RTRL(), Adam()).state_dict()
    for name in ("U0", "W0", "b0", "U1", "W1", "b1", "V", "c", "h0", "h1", "learner.S0", "learner.S1",
                 "optimizer.m", "optimizer.s", "optimizer.count"):
        assert name in arrays
    assert arrays["U0"].shape == (6, 6) and arrays["W1"].shape == (4, 6) and arrays["V"].shape == (3, 4)
    json.dumps(header)  # the header is plain JSON


def test_file_has_no_pickle_and_a_checksum(tmp_path):
    model = make(TruncatedBPTT(4), Adam())
    run(model, events(10))
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:  # loads without pickle
        assert all(npz[name].dtype != object for name in npz.files)
        header = json.loads(npz["__header__"].tobytes())
    assert len(header["checksum"]) == 64


def test_corrupt_and_truncated_files_are_refused(tmp_path):
    model = make(RTRL(), Adam())
    run(model, events(10))
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "short.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError):
        model.load(tmp_path / "short.npz")
    arrays, header = state_io.load(path)
    arrays["U0"] = arrays["U0"] + 1e-12  # silently changed bytes
    header["checksum"] = "0" * 64
    tampered = tmp_path / "tampered.npz"
    state_io.save(tampered, arrays, header)  # save recomputes the checksum, so tamper after
    raw = dict(np.load(tampered, allow_pickle=False))
    raw["U0"] = raw["U0"] * 2
    np.savez(tampered, **raw)
    with pytest.raises(StateError, match="checksum"):
        model.load(tampered)


def test_loading_another_architecture_is_refused_and_changes_nothing(tmp_path):
    small = OnlineRNN(2, (Elman(5),), Readout(3, "softmax"), CrossEntropy(), seed=1)
    small.save(tmp_path / "small.npz")
    model = make(RTRL(), Adam())
    before, _ = model.state_dict()
    with pytest.raises(StateError, match="configured differently"):
        model.load(tmp_path / "small.npz")
    after, _ = model.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_memory_is_constant_over_a_long_stream():
    import tracemalloc

    model = OnlineRNN(1, (Elman(8),), learner=TruncatedBPTT(10, 2), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        model.step(rng.normal(size=1), rng.normal(size=1))
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    for _ in range(20000):
        model.step(rng.normal(size=1), rng.normal(size=1))
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    tracemalloc.stop()
    assert grown < 50_000  # bytes; the per-step arrays are reused, nothing accumulates


@pytest.mark.parametrize("learner_key", LEARNERS)
def test_pickle_and_deepcopy_continue_like_the_original(learner_key):
    import copy
    import pickle

    evs = events(40)
    model = make(LEARNERS[learner_key], OPTIMISERS["chain"], feedback=True)
    run(model, evs[:20])
    clones = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model)]
    expected = run(model, evs[20:])  # the original, which was never serialised
    for clone in clones:
        np.testing.assert_array_equal(run(clone, evs[20:]), expected)
    # the clone's parameters are still views of its own theta: an update reaches the forward pass
    clone = copy.deepcopy(model)
    clone.params["V"][...] = 0.0
    assert np.all(clone.network.B[:, :-1] == 0.0) and not np.all(model.network.B[:, :-1] == 0.0)


def test_from_file_rebuilds_the_model_from_its_header(tmp_path):
    model = make(TruncatedBPTT(6, 3), OPTIMISERS["chain"])
    run(model, events(25))
    model.save(tmp_path / "m.npz")
    restored = OnlineRNN.from_file(tmp_path / "m.npz")
    assert restored.config() == model.config()
    evs = events(10, seed=3)
    np.testing.assert_array_equal(run(restored, evs), run(model, evs))


def test_save_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    """The durability the README promises: the data reaches the disk before the rename makes it
    the state file, and the rename itself reaches the disk (fsync of the directory) after."""
    import os
    import stat

    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        calls.append(("fsync", "dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino, info.st_size))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = OnlineRNN(2, (Elman(3),), seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    assert [c[:2] for c in calls] == [("fsync", "file"), ("replace", calls[1][1]), ("fsync", "dir")]
    _, _, file_inode, size_at_fsync = calls[0]
    assert calls[1][2] == str(path) and calls[1][1] != str(path)
    assert file_inode == path.stat().st_ino and size_at_fsync == path.stat().st_size  # the whole file, synced
    assert calls[2][2] == tmp_path.stat().st_ino  # the directory holding the new name

    # a crash at the rename: the old state file stays whole and no temporary file is left
    model.step([1.0, 2.0], [0.5])
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        model.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_every_state_error_says_what_is_wrong(tmp_path):
    import re

    model = make(RTRL(), Adam())
    run(model, events(5))
    arrays, header = model.state_dict()

    def refused(match, arrays=arrays, header=header):
        with pytest.raises(StateError, match=match):
            model.load_state_dict(dict(arrays), dict(header))

    refused(re.escape("state format must be 'streamrnn-state' version 4 (this version of streamrnn also reads 1, 2, "
                      "3), got 'streamrnn-state' version 5"), header=dict(header, version=5))
    refused(re.escape("state format must be 'streamrnn-state' version 4 (this version of streamrnn also reads 1, 2, "
                      "3), got 'other' version 4"), header=dict(header, format="other"))
    other = dict(header["config"], clip_norm=3.0)
    refused(re.escape(f"state was saved by a model configured differently: saved {other!r}, "
                      f"this model {header['config']!r}"), header=dict(header, config=other))
    refused(re.escape("state has no array 'U0'"), arrays={k: v for k, v in arrays.items() if k != "U0"})
    refused(re.escape("state array 'U0' has shape (2, 2), expected (6, 6)"), arrays=dict(arrays, U0=np.zeros((2, 2))))
    refused(re.escape("learner state is missing array 'S1'"),
            arrays={k: v for k, v in arrays.items() if k != "learner.S1"})
    refused("^state has no valid random generator state: ", header=dict(header, rng={"bit_generator": "Nope"}))

    with pytest.raises(ValueError, match=re.escape("array name '__header__' is reserved")):
        state_io.save(tmp_path / "x.npz", {"__header__": np.zeros(1)}, header)
    missing = tmp_path / "missing.npz"
    with pytest.raises(StateError, match=f"^there is no state file {re.escape(str(missing))}$"):
        state_io.load(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(StateError, match=f"^cannot read state file {re.escape(str(garbage))}: ."):
        state_io.load(garbage)


def test_files_without_a_header_or_a_checksum_are_state_errors(tmp_path):
    import re

    bare = tmp_path / "bare.npz"
    np.savez(bare, U0=np.zeros(2))
    with pytest.raises(StateError, match=f"^state file {re.escape(str(bare))} has no header$"):
        state_io.load(bare)
    unreadable = tmp_path / "unreadable.npz"
    np.savez(unreadable, U0=np.zeros(2), __header__=np.frombuffer(b"\xff{", dtype=np.uint8))
    with pytest.raises(StateError, match=f"^state file {re.escape(str(unreadable))} has a corrupt header: "):
        state_io.load(unreadable)
    unchecked = tmp_path / "unchecked.npz"
    np.savez(unchecked, U0=np.zeros(2), __header__=np.frombuffer(b'{"format": "streamrnn-state"}', dtype=np.uint8))
    with pytest.raises(StateError, match="fails its checksum"):
        state_io.load(unchecked)


_UNPICKLED = []


def _record_unpickling(tag):
    _UNPICKLED.append(tag)
    return tag


class _Payload:
    def __reduce__(self):
        return _record_unpickling, ("ran",)


def test_load_never_unpickles(tmp_path):
    """A state file is data: an object array in it is refused, and its pickle never runs."""
    path = tmp_path / "evil.npz"
    arrays = {"U0": np.array([_Payload()], dtype=object)}
    header = {"checksum": state_io.checksum({"U0": np.zeros(1)})}
    np.savez(path, **arrays, __header__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    _UNPICKLED.clear()
    with pytest.raises(StateError, match="cannot read state file"):
        state_io.load(path)
    assert _UNPICKLED == []


def test_save_writes_through_a_hidden_temporary_file_beside_the_target(tmp_path, monkeypatch):
    """The temporary file sits in the target's directory (so the rename is atomic) and is named
    ``.<name>.*.tmp``, the pattern DirectoryStore.latest() sweeps after a crash."""
    import os

    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "gen-000000000001.npz"
    state_io.save(path, {"a": np.arange(3.0)}, {"format": "x"})
    [(tmp, dst)] = renames
    assert dst == path and tmp.parent == tmp_path
    assert tmp.name.startswith(".gen-000000000001.npz.") and tmp.name.endswith(".tmp")
    assert tmp.match(".gen-*.tmp")

def test_a_version_1_state_loads_and_continues_and_another_version_is_refused_naming_both():
    """Version 1 kept each BPTT step's recurrent Jacobian (tape.JT*); version 2 recomputes it from D
    and U.  A version-1 state (its JT arrays included) loads and continues like the version-2 state
    of the same model; a version this code does not know is refused, naming it and the current one."""
    model = make(TruncatedBPTT(5, 1), Adam(0.01))
    for x, y in events(30):
        model.step(x, y)
    arrays, header = model.state_dict()
    old = dict(arrays)
    for l, n in enumerate((6, 4)):  # what version 1 wrote beside the tape
        old[f"learner.tape.JT{l}"] = np.ones((5, n, n))
    twin = make(TruncatedBPTT(5, 1), Adam(0.01))
    twin.load_state_dict(old, dict(header, version=1))
    model.load_state_dict(arrays, header)
    for x, y in events(20, seed=1):
        assert twin.step(x, y).loss == model.step(x, y).loss
    before = twin.state_dict()[0]
    with pytest.raises(StateError, match=r"version 4 .*got 'streamrnn-state' version 5"):
        twin.load_state_dict(arrays, dict(header, version=5))
    after = twin.state_dict()[0]
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_the_last_gradient_is_not_kept_and_an_older_state_that_kept_it_loads():
    """Version 3 leaves out ``grad`` (continuing never reads it); a version-2 state carries it, and it
    loads into ``gradient`` and continues exactly like the version-3 state of the same model."""
    model = make(TruncatedBPTT(5, 1), Adam(0.01))
    for x, y in events(30):
        model.step(x, y)
    arrays, header = model.state_dict()
    assert header["version"] == 4 and "grad" not in arrays
    last = {k: v.copy() for k, v in model.gradient.items()}
    older, fresh = make(TruncatedBPTT(5, 1), Adam(0.01)), make(TruncatedBPTT(5, 1), Adam(0.01))
    older.load_state_dict(dict(arrays, grad=model._applied.copy()), dict(header, version=2))
    fresh.load_state_dict(arrays, header)
    assert all(np.array_equal(older.gradient[k], last[k]) for k in last)
    assert all(not fresh.gradient[k].any() for k in last)  # introspection only: zeros until the next update
    with pytest.raises(StateError, match=r"^state array 'grad' has shape \(2,\), expected "):
        fresh.load_state_dict(dict(arrays, grad=np.zeros(2)), dict(header, version=2))
    for x, y in events(20, seed=1):
        assert older.step(x, y).loss == fresh.step(x, y).loss == model.step(x, y).loss
    assert all(np.array_equal(older.gradient[k], fresh.gradient[k]) for k in last)


def test_truncated_bptt_memory_grows_with_the_window_not_its_square():
    """The tape holds O(h n) numbers: a window of 100,000 steps on 8 units is a few tens of MB,
    where the per-step Jacobians and the h x h table of ring orders of version 1 needed about 80 GB."""
    model = OnlineRNN(1, (Elman(8),), Readout(1), learner=TruncatedBPTT(100_000, 1), seed=0)
    size = sum(a.nbytes for a in model.learner.state_arrays().values())
    assert size <= 100_000 * (10 + 8 + 9 + 1) * 8 + 64  # per row: v = [h; x; 1], D, [h; 1], delta
    for t in range(50):
        model.step([np.sin(t / 3)], [np.cos(t / 3)])
    assert np.isfinite(model.grad_norm)


BEFORE_CELLS = Path(__file__).parent / "data" / "before_cells"


@pytest.mark.parametrize("name", ["rtrl_stack", "bptt", "uoro", "snap", "epoch"])
def test_checkpoints_written_before_the_cell_contract_load_and_continue(name):
    """tests/data/before_cells holds models saved by the engine of commit 4e3fd0a (before the cell
    contract) after 30 steps, and the predictions that engine made over the next 30 steps.  They
    load, and continue to rounding: the new engine sums some products in another order."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 2)), rng.normal(size=(60, 1))
    model = OnlineRNN.from_file(BEFORE_CELLS / f"{name}.npz")
    got = [model.step(x, y).prediction[0] for x, y in zip(X[30:], Y[30:])]
    np.testing.assert_allclose(got, np.load(BEFORE_CELLS / f"{name}.preds.npy"), rtol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "numpy"])
def test_a_bptt_tape_saves_only_what_its_states_do_not_give(activation, kernels, tmp_path):
    """For one Elman layer whose f' follows from f, the tape's read-out inputs [h_s; 1] and D_s = f'(z_s)
    are h_s (the next row's v head, or h_t) and a function of it: the state leaves them out, and a model
    loaded from it holds the very same tape and continues bit for bit, filling the window or wrapped."""
    def fresh():
        return OnlineRNN(2, (Elman(5, activation),), Readout(1), learner=TruncatedBPTT(4, 1),
                         optimizer=Adam(0.01), clip_norm=1.0, seed=3, kernels=kernels)

    rng = np.random.default_rng(2)
    model = fresh()
    for steps in (0, 2, 7):  # an empty window, a partly filled one, one that has wrapped
        for _ in range(steps):
            model.step(rng.normal(size=2), rng.normal(size=1))
        arrays, header = model.state_dict()
        assert header["derived"] == ["learner.tape.D0", "learner.tape.vr"]
        assert "learner.tape.vr" not in arrays and "learner.tape.D0" not in arrays
        model.save(tmp_path / "m.npz")
        loaded = fresh()  # on the path the model ran on
        loaded.load_state_dict(*state_io.load(tmp_path / "m.npz"))
        for name, a in model.learner.state_arrays().items():
            assert a.tobytes() == loaded.learner.state_arrays()[name].tobytes(), name
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    assert [loaded.step(a, b).loss for a, b in zip(x, y)] == [model.step(a, b).loss for a, b in zip(x, y)]


def test_tape_arrays_that_do_not_follow_from_the_states_are_saved():
    """A leaky unit's f(z) (so f') cannot be recovered from h bit for bit, nor a stack's read-out input from
    layer 0's v; and once the hidden state is zeroed behind the learner's back, the newest row's h is not
    h_t: all keep their tape, and load back to the bit."""
    rng = np.random.default_rng(4)
    for layers in ((Leaky(5, beta=0.5),), (Elman(5, "sigmoid"),), (Elman(4), Elman(3))):
        model = OnlineRNN(2, layers, Readout(1), learner=TruncatedBPTT(4, 1), seed=3)
        for _ in range(6):
            model.step(rng.normal(size=2), rng.normal(size=1))
        arrays, header = model.state_dict()
        assert "derived" not in header and "learner.tape.vr" in arrays and "learner.tape.D0" in arrays
    model = OnlineRNN(2, (Elman(5),), Readout(1), learner=TruncatedBPTT(4, 1), seed=3)
    for _ in range(6):
        model.step(rng.normal(size=2), rng.normal(size=1))
    model.network.stack.reset()  # the state alone, not the learner's tape
    arrays, header = model.state_dict()
    assert "derived" not in header and "learner.tape.vr" in arrays and "learner.tape.D0" in arrays
    twin = OnlineRNN(2, (Elman(5),), Readout(1), learner=TruncatedBPTT(4, 1), seed=3)
    twin.load_state_dict(arrays, header)
    for name, a in model.learner.state_arrays().items():
        assert a.tobytes() == twin.learner.state_arrays()[name].tobytes(), name


def test_a_state_that_leaves_out_what_cannot_be_derived_is_refused():
    model = OnlineRNN(2, (Leaky(5, beta=0.5),), Readout(1), learner=TruncatedBPTT(4, 1), seed=3)
    model.step([0.1, 0.2], [0.3])
    arrays, header = model.state_dict()
    before = model.state_dict()[0]
    bad = {k: v for k, v in arrays.items() if k != "learner.tape.vr"}
    with pytest.raises(StateError, match=r"leaves out \['learner.tape.vr'\], which do not follow"):
        model.load_state_dict(bad, dict(header, derived=["learner.tape.vr"]))
    with pytest.raises(StateError, match="derived must list learner arrays"):
        model.load_state_dict(arrays, dict(header, derived=["U0"]))
    after = model.state_dict()[0]
    assert all(np.array_equal(before[k], after[k]) for k in before)
