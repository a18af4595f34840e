"""A model's whole state as named arrays plus a JSON header, and its file format.

Array names:  U0 W0 b0 ... V c (parameters), h0 h1 ... (hidden states),
``feedback`` (fed-back target),
``learner.*`` (RTRL sensitivities S0..., or the BPTT tape), ``optimizer.*``
(moments and counters).  The header holds the format version, the model
configuration, counters, the newest loss and gradient norms, and the random
generator's state.

On disk: one .npz (no pickle) whose member ``__header__`` is the UTF-8 JSON
header; the header carries a SHA-256 of every array's name, dtype, shape and
bytes.  ``save`` writes atomically: temporary file, fsync, rename, fsync of
the directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "streamrnn-state"
#: 4: a learner's arrays that follow from the others are left out, and listed in the header's ``derived``
#:    (a BPTT tape's vr and D for one tanh, relu or identity Elman layer)
#: 3: the last applied gradient (``grad``) is no longer kept: continuing never reads it
#: 2: the BPTT tape no longer holds each step's recurrent Jacobian (tape.JT*), which version 1 had
VERSION = 4
#: versions this code loads; a version-1 state's tape.JT* arrays are ignored (recomputed from D and U),
#: and an older state's ``grad`` is read back into ``OnlineRNN.gradient``
READABLE = (1, 2, 3, 4)
HEADER = "__header__"


class StateError(ValueError):
    """A state file or mapping that cannot be loaded: corrupt, truncated or for another model."""


def checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.reshape(-1).view(np.uint8) if a.size else b"")  # the bytes of tobytes(), not copied
    return digest.hexdigest()


# ----- model <-> arrays -------------------------------------------------------


def _copy_c(a) -> np.ndarray:
    return np.array(a, order="C")


def model_state(model, copy: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """``OnlineRNN.state_dict``; ``copy=False`` gives views of the live arrays (only for memory nothing
    changes while they are read, such as a forked checkpoint writer's)."""
    net = model.network
    take = _copy_c if copy else np.asarray
    arrays = {name: take(view) for name, view in net.params().items()}
    for l in range(len(net.stack.layers)):
        arrays[f"h{l}"] = take(net.stack.hidden(l))
    arrays["feedback"] = take(model._feedback)
    learner = model.learner.state_arrays()
    # what follows from the rest is left out where it holds exactly what would be computed on load
    derived = [name for name, value in model.learner.derived(net, learner, net.stack.hidden(0)).items()
               if value.shape == learner[name].shape and value.tobytes() == learner[name].tobytes()]
    arrays.update({f"learner.{k}": take(v) for k, v in learner.items() if k not in derived})
    arrays.update({f"optimizer.{k}": np.array(v) if copy else np.asarray(v) for k, v in model.opt_state.items()})
    header = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config(),
        "counters": dict(model.counters),
        "last_loss": model.last_loss,
        "grad_norm": model.grad_norm,
        "grad_norm_clipped": model.grad_norm_clipped,
        "rng": model.rng_state,
    }
    if derived:
        header["derived"] = sorted(f"learner.{k}" for k in derived)
    return arrays, header


_PROBE = np.random.PCG64(0)  # what ``generator_state`` checks a state with (under its lock)
_PROBE_LOCK = threading.Lock()


def generator_state(state) -> dict:
    """A generator's state as numpy reads it back (a new dict): ValueError, TypeError or KeyError if
    numpy's default generator (PCG64) refuses it.  Checked on one kept generator, not a new one, which
    would gather entropy from the system first (about 20 µs a model restored)."""
    with _PROBE_LOCK:
        _PROBE.state = state
        return _PROBE.state


def _take(arrays, name, like: np.ndarray) -> np.ndarray:
    """The named array as a copy of like's shape and dtype: StateError if it is missing, of another shape,
    or of values that are no numbers (checked here, so that writing it later cannot fail half-way)."""
    if name not in arrays:
        raise StateError(f"state has no array {name!r}")
    a = np.asarray(arrays[name])
    if a.shape != like.shape:
        raise StateError(f"state array {name!r} has shape {a.shape}, expected {like.shape}")
    try:
        return np.array(a, dtype=like.dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise StateError(f"state array {name!r} does not hold {like.dtype} values: {err}") from None


def _derived(model, learner: dict, h: np.ndarray, names) -> dict[str, np.ndarray]:
    """The learner arrays a state left out (its header's ``derived``), computed from the others."""
    if not names:
        return {}
    if not isinstance(names, list) or not all(isinstance(n, str) and n.startswith("learner.") for n in names):
        raise StateError(f"state header's derived must list learner arrays, got {names!r}")
    try:
        made = model.learner.derived(model.network, learner, h)
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as err:
        raise StateError(f"state arrays {names} cannot be derived from the rest: {err!r}") from None
    missing = [n for n in names if n[len("learner."):] not in made]
    if missing:
        raise StateError(f"state leaves out {missing}, which do not follow from the rest for this model")
    return {n[len("learner."):]: made[n[len("learner."):]] for n in names}


def plan_model_state(model, arrays: dict[str, np.ndarray], header: dict):
    """Check (arrays, header) against ``model`` and return the function that writes them into it: StateError,
    and nothing changed, if they do not fit (a network inside a larger state is checked with the rest of it
    before anything is written)."""
    if header.get("format") != FORMAT or header.get("version") not in READABLE:
        raise StateError(
            f"state format must be {FORMAT!r} version {VERSION} (this version of streamrnn also reads "
            f"{', '.join(str(v) for v in READABLE if v != VERSION)}), "
            f"got {header.get('format')!r} version {header.get('version')!r}"
        )
    if header.get("config") != model.config():
        raise StateError(
            "state was saved by a model configured differently: "
            f"saved {header.get('config')!r}, this model {model.config()!r}"
        )
    net = model.network
    # check everything before writing anything
    params = {name: _take(arrays, name, view) for name, view in net.params().items()}
    hidden = [_take(arrays, f"h{l}", net.stack.hidden(l)) for l in range(len(net.stack.layers))]
    feedback = _take(arrays, "feedback", model._feedback)
    grad = _take(arrays, "grad", model._applied) if "grad" in arrays else np.zeros_like(model._applied)
    opt = {k: _take(arrays, f"optimizer.{k}", np.asarray(v)) for k, v in model.opt_state.items()}
    learner = {k[len("learner.") :]: v for k, v in arrays.items() if k.startswith("learner.")}
    learner.update(_derived(model, learner, hidden[0], header.get("derived", [])))
    probe = model.learner.bind(net)  # validate the learner state on a scratch copy first
    try:
        probe.load_state_arrays(learner)
    except (TypeError, ValueError, OverflowError) as err:
        raise StateError(str(err)) from None
    try:
        rng = generator_state(header["rng"])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise StateError(f"state has no valid random generator state: {err}") from None
    try:
        counters = {k: int(v) for k, v in header["counters"].items()}
        numbers = header["last_loss"], header["grad_norm"], header["grad_norm_clipped"]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise StateError(f"state header has no valid counters and norms: {err!r}") from None

    def write() -> None:
        for name, view in net.params().items():
            view[...] = params[name]
        net.stack.refresh()
        for l, h in enumerate(hidden):
            net.stack.hidden(l)[...] = h
        model._feedback[...] = feedback
        model._applied[...] = grad
        model.learner.load_state_arrays(learner)
        for k, v in opt.items():
            model.opt_state[k][...] = v
        model.rng_state = rng
        model.counters = counters
        model.last_loss, model.grad_norm, model.grad_norm_clipped = numbers

    return write


# ----- arrays <-> file ----------------------------------------------------------


def save(path, arrays: dict[str, np.ndarray], header: dict) -> None:
    """Atomically write arrays and header (plus their checksum) to ``path``."""
    if HEADER in arrays:
        raise ValueError(f"array name {HEADER!r} is reserved")
    header = dict(header, checksum=checksum(arrays))
    payload = dict(arrays)
    payload[HEADER] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a state file.

    StateError names what is wrong with a missing, corrupt or truncated file; an OSError
    that leaves the file's content unknown (permissions, a disk out of reach) propagates.
    """
    try:
        data = Path(path).read_bytes()  # other OSErrors (disk out of reach) propagate as they are
    except FileNotFoundError:
        raise StateError(f"there is no state file {path}") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise StateError(f"cannot read state file {path}: {err}") from None
    raw = arrays.pop(HEADER, None)
    if raw is None:
        raise StateError(f"state file {path} has no header")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateError(f"state file {path} has a corrupt header: {err}") from None
    expected = header.pop("checksum", None)
    if expected != checksum(arrays):
        raise StateError(f"state file {path} fails its checksum")
    return arrays, header
