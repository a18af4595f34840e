"""Per-step cost of the engine, as ratios to baselines measured in the same run.

    python benchmarks/engine_speed.py            # the full table (about two minutes)
    python benchmarks/engine_speed.py --quick    # fewer sizes and repeats

Tables (median over repeats of the per-step time):
1. RTRL against its arithmetic floor, the one dense J.S product of shape
   (n, n) @ (n, P) that exact RTRL must do per step: the learner's own step,
   and the whole model step (forward, loss, RTRL, Adam).
2. BPTT(h; h') per step across sizes.
3. BPTT(h=20, h'=1) at 32 units against a straightforward PyTorch step that
   re-runs the 20-step window from a zero state with autograd on every event,
   as deep-river does (only if torch is installed: pip install torch==2.13.0).
4. Memory per stream over 100,000 steps (tracemalloc, after warm-up).
5. Approximate learners (``APPROXIMATE``) at 32 and 128 units against BPTT(1; 1)
   and exact RTRL: the learner's own step and the whole model step (Adam).
6. The diagonal complex cell (``LRU``) with exact RTRL against its own forward
   pass at 64 and 256 units, and dense (Elman) RTRL at the same sizes for contrast.
7. Approximate gradients against the exact one: the cosine similarity between
   each approximation's gradient and exact RTRL's, per step (mean) and summed
   over 1,000 steps at fixed weights, for every cell the learner runs on.
8. The compiled kernels (``streamrnn.kernels``) against the numpy engine, whole
   model step, RTRL (with its J.S floor) and BPTT(20; 1), at 8 to 64 units; and
   the compiled RTRL learner's own step (S_t and the gradient), as table 1 times
   the numpy learner's.
   Tables 1-7 time the numpy engine, the reference.
9. ``ModelBatch``: 64 streams stepped by one compiled call, per stream, on
   one thread and with the rows over both cores, against the same J.S floor
   and against one model's kernel step.

BLAS runs on one thread (threadpoolctl): on this 2-core machine two OpenBLAS
threads are slower than one for these small matrices.  ``--threads 2`` shows it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_limits

import streamrnn as sr


def per_step(fn, steps: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean time of ``steps`` calls, in microseconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append((time.perf_counter() - start) / steps)
    return 1e6 * statistics.median(times)


def per_steps(fns: dict, steps, repeats: int) -> dict:
    """``per_step`` of several functions, timed in turn within each repeat: a ratio of two of them
    compares moments of the shared machine that are close together (its speed drifts).  ``steps``:
    calls per timing, one number or one per function."""
    calls = steps if isinstance(steps, dict) else dict.fromkeys(fns, steps)
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: 1e6 * statistics.median(t) for name, t in times.items()}


def floor_of(n: int, P: int):
    """The J.S product RTRL must do per step, (n, n) @ (n, P), as a function to time."""
    J, S, out = np.random.rand(n, n), np.random.rand(n, P), np.empty((n, P))
    return lambda: np.matmul(J, S, out=out)


def model(units: int, learner, optimizer=None, n_inputs: int = 1, kernels: bool = False) -> sr.OnlineRNN:
    """Tables 1-7 time the numpy engine (the reference); table 8 puts the compiled kernels beside it."""
    return sr.OnlineRNN(n_inputs, (sr.Elman(units),), sr.Readout(1), sr.SquaredError(), learner,
                        optimizer or sr.Adam(1e-4), seed=0, kernels=kernels)


def stepper(m: sr.OnlineRNN, n_inputs: int = 1):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, n_inputs))
    Y = rng.normal(size=(4096, 1))
    counter = iter(range(1 << 62))

    def step():
        i = next(counter) & 4095
        m.step(X[i], Y[i])

    return step


def rtrl_table(sizes, repeats):
    print("\n### 1. Exact RTRL against its floor, the per-step J.S product (one input, one output)\n")
    print("| units | params P | J.S floor (us) | RTRL learner step (us) | ratio | model step, Adam (us) | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        m, timed = model(n, sr.RTRL()), model(n, sr.RTRL())
        P = m.network.n_recurrent
        steps = max(5, int(20000 / n**2))
        net, learner = m.network, m.learner
        m.step([0.1], [0.2])
        m.predict([0.3])  # a forward pass in the buffers for the learner to consume
        delta = np.array([0.5])
        t = per_steps({"floor": floor_of(n, P), "learner": lambda: learner.step(net, delta, m.grad),
                       "full": stepper(timed)}, steps, repeats)
        floor, learner_only, full = t["floor"], t["learner"], t["full"]
        print(f"| {n} | {P} | {floor:.1f} | {learner_only:.1f} | {learner_only / floor:.2f} "
              f"| {full:.1f} | {full / floor:.2f} |")


def bptt_table(sizes, repeats):
    print("\n### 2. Truncated BPTT(h; h') per model step (Adam, one input, one output)\n")
    configs = [(10, 1), (20, 1), (20, 5), (20, 20)]
    print("| units | " + " | ".join(f"BPTT({h}; {hp}) (us)" for h, hp in configs) + " |")
    print("|---:|" + "---:|" * len(configs))
    for n in sizes:
        cells = [per_step(stepper(model(n, sr.TruncatedBPTT(h, hp))), 200, repeats) for h, hp in configs]
        print(f"| {n} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


def torch_window_step(units: int, window: int):
    """deep-river style: keep the last `window` inputs, re-run them from h = 0 with autograd, step."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rnn = torch.nn.RNN(1, units, batch_first=True)
    head = torch.nn.Linear(units, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=4096).astype(np.float32), rng.normal(size=4096).astype(np.float32)
    buffer = [0.0] * window
    counter = iter(range(1 << 62))

    def step():
        i = next(counter) & 4095
        buffer.pop(0)
        buffer.append(float(xs[i]))
        seq = torch.tensor(buffer, dtype=torch.float32).view(1, window, 1)
        out, _ = rnn(seq)
        loss = (head(out[:, -1]) - float(ys[i])).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def torch_table(repeats):
    print("\n### 3. BPTT(h=20, h'=1) at 32 units against a PyTorch window re-run with autograd\n")
    fns = {"ours": stepper(model(32, sr.TruncatedBPTT(20, 1))),
           "compiled": stepper(model(32, sr.TruncatedBPTT(20, 1), kernels=True))}
    calls = {"ours": 500, "compiled": 2000, "theirs": 100}
    try:
        import torch
    except ImportError:
        t = per_steps(fns, calls, repeats)
        print(f"streamrnn BPTT(20; 1): numpy {t['ours']:.1f} us, kernel {t['compiled']:.1f} us per step; "
              "torch is not installed (pip install torch==2.13.0)")
        return
    fns["theirs"] = torch_window_step(32, 20)
    t = per_steps(fns, calls, repeats)  # in turn: the shared machine's speed drifts, and torch's more
    ours, compiled, theirs = t["ours"], t["compiled"], t["theirs"]
    print("| implementation | us per step | speed-up |")
    print("|---|---:|---:|")
    print(f"| PyTorch {torch.__version__}: nn.RNN over the 20-step window + backward + Adam | {theirs:.1f} | 1.0 |")
    print(f"| streamrnn TruncatedBPTT(20, 1) + Adam (float64) | {ours:.1f} | {theirs / ours:.1f} |")
    print(f"| streamrnn TruncatedBPTT(20, 1) + Adam (float64), compiled kernel | {compiled:.1f} | {theirs / compiled:.1f} |")


def memory_table(steps):
    print(f"\n### 4. Memory per stream over {steps:,} steps (32 units)\n")
    print("| learner | Python heap growth after warm-up (bytes) | state arrays (bytes) |")
    print("|---|---:|---:|")
    for name, learner in (("RTRL", sr.RTRL()), ("BPTT(10; 1)", sr.TruncatedBPTT(10, 1))):
        m = model(32, learner)
        step = stepper(m)
        for _ in range(1000):
            step()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(steps):
            step()
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
        arrays, _ = m.state_dict()
        print(f"| {name} | {growth} | {sum(a.nbytes for a in arrays.values())} |")


#: the approximate learners of table 5, each timed against BPTT(1; 1) and exact RTRL
APPROXIMATE = [
    ("SnAp-1", sr.SnAp1()),
    ("UORO", sr.UORO()),
]


def approximate_table(sizes, repeats):
    print("\n### 5. Approximate learners against BPTT(1; 1) and exact RTRL (one input, one output, Adam)\n")
    print("| learner | units | learner step (us) | / BPTT(1) | / RTRL | model step (us) | / BPTT(1) | / RTRL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        rows = [("BPTT(1; 1)", sr.TruncatedBPTT(1, 1)), ("RTRL", sr.RTRL())] + APPROXIMATE
        times = {}
        for name, learner in rows:
            m = model(n, learner)
            steps = max(5, int(100_000 / n**2)) if name == "RTRL" else max(100, int(16_000 / n))
            m.step([0.1], [0.2])
            m.predict([0.3])  # a forward pass in the buffers for the learner to consume
            net, bound, delta = m.network, m.learner, np.array([0.5])
            own = per_step(lambda: bound.step(net, delta, m.grad), steps, repeats)
            times[name] = (own, per_step(stepper(m), steps, repeats))
        base, exact = times["BPTT(1; 1)"], times["RTRL"]
        for name, (own, full) in times.items():
            print(f"| {name} | {n} | {own:.1f} | {own / base[0]:.2f} | {own / exact[0]:.3f} "
                  f"| {full:.1f} | {full / base[1]:.2f} | {full / exact[1]:.3f} |")


def diagonal_table(sizes, repeats):
    print("\n### 6. Diagonal complex cell (LRU) with exact RTRL against its forward pass (one input, one output)\n")
    print("| cell | units | params P | layer forward (us) | RTRL learner step (us) | / forward "
          "| network forward (us) | model step, Adam (us) | / network forward |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        for name, cell in (("LRU", sr.LRU(n)), ("Elman", sr.Elman(n))):
            m = sr.OnlineRNN(1, (cell,), sr.Readout(1), sr.SquaredError(), sr.RTRL(), sr.Adam(1e-4), seed=0, kernels=False)
            dense = name == "Elman"
            steps = max(2, int(2_000_000 / n**3)) if dense else max(100, int(40_000 / n))
            reps = min(repeats, 3) if dense and n > 128 else repeats
            net, learner, delta = m.network, m.learner, np.array([0.5])
            layer, x = net.stack.layers[0], np.array([[0.3]])
            m.step([0.1], [0.2])
            m.predict([0.3])
            fwd = per_step(lambda: layer.forward(x), 20 * steps, reps)
            own = per_step(lambda: learner.step(net, delta, m.grad), steps, reps)
            net_fwd = per_step(lambda: net.forward(np.array([0.3])), 20 * steps, reps)
            full = per_step(stepper(m), steps, reps)
            print(f"| {name} | {n} | {net.n_params} | {fwd:.1f} | {own:.1f} | {own / fwd:.2f} "
                  f"| {net_fwd:.1f} | {full:.1f} | {full / net_fwd:.2f} |")


def gradient_cosines(cell, learner, steps=1000, seed=0):
    """Cosines of ``learner``'s gradient to exact RTRL's at fixed weights: (mean per step, of the sums),
    over all parameters and over the recurrent ones alone (every learner gets the readout's exactly)."""
    build = lambda lrn: sr.OnlineRNN(3, (cell,), sr.Readout(1), sr.SquaredError(), lrn, sr.SGD(0.0), seed=seed)  # noqa: E731
    approx, exact = build(learner), build(sr.RTRL())
    P = approx.network.n_recurrent
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(steps, 3)), rng.normal(size=(steps, 1))
    cos = lambda a, e: float(a @ e / (np.linalg.norm(a) * np.linalg.norm(e)))  # noqa: E731
    sum_a, sum_e, per_step = 0.0, 0.0, []
    for x, y in zip(X, Y):
        approx.step(x, y)
        exact.step(x, y)
        a, e = approx._applied.copy(), exact._applied.copy()
        per_step.append((cos(a, e), cos(a[:P], e[:P])))
        sum_a, sum_e = sum_a + a, sum_e + e
    mean_all, mean_rec = np.mean(per_step, axis=0)
    return mean_all, cos(sum_a, sum_e), mean_rec, cos(sum_a[:P], sum_e[:P])


def cosine_table(units=16, steps=1000):
    print(f"\n### 7. Cosine similarity to the exact (RTRL) gradient, {steps:,} steps at fixed weights "
          f"({units} units, 3 inputs)\n")
    print("| learner | cell | all parameters: mean per step | all: of the sums "
          "| recurrent only: mean per step | recurrent: of the sums |")
    print("|---|---|---:|---:|---:|---:|")
    for name, learner in APPROXIMATE:
        for kind, cls in sorted(sr.cells.CELLS.items()):
            try:
                figures = gradient_cosines(cls(units), learner, steps)
            except ValueError as err:  # a learner that is not defined for this cell says so
                print(f"| {name} | {kind} | refused: {err} | | | |")
                continue
            print(f"| {name} | {kind} | " + " | ".join(f"{f:.3f}" for f in figures) + " |")


#: the learners tables 8 and 9 compare the kernels on
KERNEL_LEARNERS = (("RTRL", sr.RTRL), ("BPTT(20; 1)", lambda: sr.TruncatedBPTT(20, 1)))


def kernel_cases(sizes):
    """(learner name, its factory, units, steps per timing, the J.S floor to time) for tables 8 and 9."""
    for name, make in KERNEL_LEARNERS:
        for n in sizes:
            P = model(n, make()).network.n_recurrent
            steps = max(20, int(100_000 / n**2)) if name == "RTRL" else 1000
            yield name, make, n, steps, floor_of(n, P)


def kernel_learner(m: sr.OnlineRNN):
    """The compiled RTRL learner's own step on the model's arrays (``dense_step.rtrl_learn``: S_t and the
    recurrent gradient), as table 1 times the numpy learner's; the call's own overhead included."""
    from streamrnn.kernels import dense_step
    from streamrnn.kernels.table import with_spare_row

    k, arrays = m._kernel, m.learner._arrays[0]
    a = [k.slots[name] for name in ("A", "D", "v")]
    leak = k.slots.get("leak", np.zeros(0))
    S, S_next = arrays["S"][0], with_spare_row(arrays["_next"][0])
    J, g, grad = k.slots["J"], k.slots["g"], m.grad
    g[:] = 1.0
    return lambda: dense_step.rtrl_learn(*a, leak, S, S_next, J, g, grad, True)


def kernel_table(sizes, repeats):
    print("\n### 8. Compiled kernels against the numpy engine, whole model step (one input, one output, Adam)\n")
    print("| learner | units | J.S floor (us) | numpy step (us) | kernel step (us) | speed-up | kernel ÷ floor "
          "| kernel RTRL learner (us) | learner ÷ floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, make, n, steps, floor_fn in kernel_cases(sizes):
        fast_model = model(n, make(), kernels=True)
        fns = {"floor": floor_fn, "slow": stepper(model(n, make())), "fast": stepper(fast_model)}
        if name == "RTRL":
            fns["own"] = kernel_learner(model(n, make(), kernels=True))
        t = per_steps(fns, steps, repeats)
        floor, slow, fast = t["floor"], t["slow"], t["fast"]
        ratio, learner, learner_ratio = "", "", ""
        if name == "RTRL":
            ratio, learner, learner_ratio = f"{fast / floor:.2f}", f"{t['own']:.1f}", f"{t['own'] / floor:.2f}"
        print(f"| {name} | {n} | {floor:.1f} | {slow:.1f} | {fast:.1f} | {slow / fast:.1f} | {ratio} "
              f"| {learner} | {learner_ratio} |")


def batch_table(sizes, repeats, streams=64):
    from streamrnn.batch import ModelBatch

    print(f"\n### 9. ModelBatch: {streams} streams in one compiled call, per stream (one input, one output, Adam)\n")
    print("| learner | units | J.S floor (us) | one model's kernel step (us) | per stream, one thread (us) "
          "| ÷ floor | per stream, rows over both cores (us) | ÷ floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, streams, 1)), rng.normal(size=(64, streams, 1))
    for name, make, n, steps, floor_fn in kernel_cases(sizes):
        fns, calls = {"floor": floor_fn, "one": stepper(model(n, make(), kernels=True))}, {"floor": steps, "one": steps}
        for parallel in (False, True):
            batch = ModelBatch([model(n, make(), kernels=True) for _ in range(streams)], parallel=parallel)
            counter = iter(range(1 << 62))

            def step(batch=batch, counter=counter):
                i = next(counter) & 63
                batch.step(X[i], Y[i])

            fns[parallel], calls[parallel] = step, max(4, steps // streams)
        t = per_steps(fns, calls, repeats)
        floor, one, per = t["floor"], t["one"], [t[False] / streams, t[True] / streams]
        ratios = [f"{p / floor:.2f}" if name == "RTRL" else "" for p in per]
        print(f"| {name} | {n} | {floor:.1f} | {one:.1f} | {per[0]:.1f} | {ratios[0]} | {per[1]:.1f} | {ratios[1]} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes, repeats and memory steps")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--only", type=int, nargs="*", help="run only these tables (1-9)")
    args = parser.parse_args()
    sizes = [16, 32, 64] if args.quick else [8, 16, 32, 64, 128]
    repeats = 3 if args.quick else 7
    with threadpool_limits(args.threads):
        print(f"streamrnn {sr.__version__}, numpy {np.__version__}, BLAS threads {args.threads}, "
              f"medians of {repeats} repeats")
        tables = {
            1: lambda: rtrl_table(sizes, repeats),
            2: lambda: bptt_table(sizes, repeats),
            3: lambda: torch_table(repeats),
            4: lambda: memory_table(10_000 if args.quick else 100_000),
            5: lambda: approximate_table([32, 128], repeats),
            6: lambda: diagonal_table([64, 256], repeats),
            9: lambda: batch_table(sizes[:-1] if not args.quick else sizes, repeats),
            7: lambda: cosine_table(steps=300 if args.quick else 1000),
            8: lambda: kernel_table([8, 16, 32, 64], repeats),
        }
        for number, table in tables.items():
            if not args.only or number in args.only:
                table()


if __name__ == "__main__":
    main()
