#!/usr/bin/env python3
"""Mutation testing with mutmut, one module at a time, and a score per module.

    python tools/mutation.py                       # the target modules (TARGETS below)
    python tools/mutation.py streamrnn/optim.py    # one module (or several)
    python tools/mutation.py --all                 # every module in streamrnn/ and service/
    python tools/mutation.py --report              # the table from the last runs, no run
    python tools/mutation.py --survivors MODULE    # the surviving mutants' diffs

Each module runs in its own work directory, ``mutants/<module>/``, with a
``pyproject.toml`` whose ``[tool.mutmut]`` mutates that module alone and runs
only the fast in-process tests that cover it (``TESTS`` below; never the
daemon-subprocess or deploy tests).  mutmut then runs, for each mutant, only
the tests among those that call the mutated function, and stops at the first
failure.  Verdicts are cached per function: a second run re-tests only the
functions whose source changed, plus the mutants that survived last time (so a
new test gets its chance to kill them); ``--fresh`` starts over.

To look at one mutant, ``cd mutants/<module>`` and use mutmut there:
``mutmut show NAME``, ``mutmut browse``.  (``mutmut apply NAME`` writes the
mutant into the real source file: restore it with ``git checkout``.)

The score is (killed + timeout) / (mutants - skipped), as mutmut's badge
computes it: a mutant that no selected test reaches ("no tests") counts
as a survivor.  Results and wall-clock times are kept in
``mutants/scores.json``.  See tests/MUTATION.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"
SCORES = WORK / "scores.json"
PACKAGES = ("streamrnn", "service")
#: the repo's folders by the names the tests import them as: mutmut names a mutant by its file's path and
#: finds the tests that reach it by the module they import, so the daemon's folder is linked in each work
#: directory as streamrnn_service (the name it installs as), and mutated there under that name
IMPORTED = {"streamrnn": "streamrnn", "service": "streamrnn_service"}

# the in-process unit tests; the daemon-subprocess, deploy and estimator-check tests
# take seconds each and are left out of every selection
# (the forked writers' tests but the one that runs a daemon in a subprocess, which mutmut cannot reach)
_SERVICE = ["tests/test_service_worker.py", "tests/test_service_checkpointer.py", "tests/test_service_store.py",
            "tests/test_service_bounds.py", "tests/test_service_forked.py", "tests/test_service_pooled.py",
            "-k", "not dies_with_its_parent"]
# test_learning.py's slow learning claims (~20 s) would run for every surviving learner mutant: left out
_LEARNERS = ["tests/test_gradients.py", "tests/test_model.py", "tests/test_state.py", "tests/test_learning.py",
             "tests/test_grow.py", "tests/test_contract.py", "-m", "not slow"]
# the cell contract and the cells: every cell x learner, the cells' own tests, gradients, model and state
_CELLS = ["tests/test_contract.py", "tests/test_cell_dense.py", "tests/test_cell_gru.py", "tests/test_cell_lru.py",
          "tests/test_gradients.py", "tests/test_model.py", "tests/test_state.py", "tests/test_grow.py",
          "-m", "not slow"]
#: every in-process test file: pyproject.toml's [tool.mutmut] selection (for a plain `mutmut run`)
FAST = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]

#: module -> the tests that cover it (a module not listed gets FAST)
TESTS = {
    "streamrnn/learners/base.py": _LEARNERS,
    "streamrnn/learners/rtrl.py": _LEARNERS,
    "streamrnn/learners/tape.py": _LEARNERS,
    "streamrnn/learners/truncated_bptt.py": _LEARNERS,
    "streamrnn/learners/epochwise.py": _LEARNERS,
    "streamrnn/learners/__init__.py": _LEARNERS,
    "streamrnn/learners/snap.py": _LEARNERS + ["tests/test_snap.py"],
    "streamrnn/learners/uoro.py": _LEARNERS + ["tests/test_uoro.py"],
    "streamrnn/cells/base.py": _CELLS,
    "streamrnn/cells/dense.py": _CELLS,
    "streamrnn/cells/gru.py": _CELLS,
    "streamrnn/cells/lru.py": _CELLS,
    "streamrnn/state.py": ["tests/test_state.py", "tests/test_model.py", "tests/test_service_store.py"],
    "streamrnn/optim.py": ["tests/test_optim.py", "tests/test_model.py", "tests/test_state.py"],
    "service/worker.py": _SERVICE,
    "service/checkpointer.py": _SERVICE,
    "service/table.py": _SERVICE,
    "service/store.py": _SERVICE,
    "service/pooled.py": _SERVICE,
    "service/packing.py": ["tests/test_service_packing.py", "tests/test_service_store.py"],
    "streamrnn/kernels/regressor_pool.py": ["tests/test_kernels_regressor_pool.py", "tests/test_service_pooled.py"],
}

#: the modules the issue sets a score for
TARGETS = [
    "streamrnn/learners/__init__.py", "streamrnn/learners/base.py", "streamrnn/learners/epochwise.py",
    "streamrnn/learners/rtrl.py", "streamrnn/learners/tape.py", "streamrnn/learners/truncated_bptt.py",
    "streamrnn/learners/snap.py", "streamrnn/learners/uoro.py",
    "streamrnn/cells/base.py", "streamrnn/cells/dense.py", "streamrnn/cells/gru.py", "streamrnn/cells/lru.py",
    "streamrnn/state.py", "streamrnn/optim.py", "service/worker.py", "service/checkpointer.py", "service/table.py",
    "service/store.py",
]

# mutmut's exit codes -> our columns (mutmut.stats.status_by_exit_code names them)
COLUMNS = ("killed", "survived", "timeout", "no tests", "other")


def all_modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                  if "__pycache__" not in p.parts)


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def workdir(module: str) -> Path:
    return WORK / slug(module)


def imported(module: str) -> str:
    """A repo path (service/worker.py) as mutmut sees it in a work directory (streamrnn_service/worker.py)."""
    top, _, rest = module.partition("/")
    return f"{IMPORTED.get(top, top)}/{rest}"


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def _pyproject(module: str, tests: list[str]) -> str:
    """The project's pyproject.toml with a [tool.mutmut] table for this module alone."""
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text).rstrip() + "\n"
    return text + (
        "\n[tool.mutmut]  # written by tools/mutation.py\n"
        f"source_paths = {_toml_list(IMPORTED.values())}\n"
        f"only_mutate = {_toml_list([imported(module)])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        "use_git_change_detection = false\n"
    )


def prepare(module: str, fresh: bool) -> Path:
    """mutants/<module>/: links to the sources and tests, and the module's pyproject.toml."""
    where = workdir(module)
    if fresh and where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True, exist_ok=True)
    for name, as_name in (*IMPORTED.items(), ("tests", "tests")):
        link = where / as_name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(ROOT / name, where))
    text = _pyproject(module, TESTS.get(module, FAST))
    target = where / "pyproject.toml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return where


def mutmut(where: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """mutmut's own command line, run in ``where`` with this interpreter."""
    code = "import sys; from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()"
    # the numpy engine is what the mutants change: the compiled per-event kernels (streamrnn.kernels) would
    # run a dense layer's step without it, so they are turned off (as .ci/run's second pass does)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", STREAMRNN_KERNELS="0")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=where, env=env, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None)


def verdicts(module: str) -> dict[str, str]:
    """mutant name -> mutmut's status, from the .meta file mutmut writes for the module."""
    from mutmut.stats import status_by_exit_code

    meta = workdir(module) / "mutants" / (imported(module) + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def tally(statuses: dict[str, str]) -> dict:
    row = dict.fromkeys(COLUMNS, 0)
    for status in statuses.values():
        row[status if status in row else "other"] += 1
    skipped = sum(s == "skipped" for s in statuses.values())
    tested = len(statuses) - skipped
    row["mutants"] = len(statuses)
    row["score"] = 100.0 * (row["killed"] + row["timeout"]) / tested if tested else None
    return row


def run_module(module: str, fresh: bool, children: int) -> dict:
    where = prepare(module, fresh)
    started = time.monotonic()
    before = verdicts(module)
    mutmut(where, "run", "--max-children", str(children))
    # verdicts are cached: give the previous survivors another chance against the current tests
    again = [name for name, status in verdicts(module).items()
             if status in ("survived", "no tests") and before.get(name) in ("survived", "no tests")]
    if again:
        print(f"re-testing {len(again)} earlier survivors of {module}", flush=True)
        mutmut(where, "run", "--max-children", str(children), *again)
    row = tally(verdicts(module))
    row["seconds"] = round(time.monotonic() - started, 1)
    row["when"] = time.strftime("%Y-%m-%d %H:%M")
    return row


def load_scores() -> dict:
    return json.loads(SCORES.read_text()) if SCORES.exists() else {}


def table(scores: dict, modules: list[str], markdown: bool = False) -> str:
    head = ["module", "mutants", *COLUMNS, "score %", "wall s"]
    rows = []
    for m in modules:
        r = scores.get(m)
        if r is None:
            rows.append([m, "-", *["-"] * len(COLUMNS), "not run", "-"])
            continue
        score = "-" if r["score"] is None else f"{r['score']:.1f}"
        rows.append([m, r["mutants"], *[r[c] for c in COLUMNS], score, r["seconds"]])
    done = [scores[m] for m in modules if m in scores]
    if len(done) > 1:
        total = {c: sum(r[c] for r in done) for c in (*COLUMNS, "mutants")}
        tested = total["mutants"]  # skipped mutants are rare; they sit in "other"
        score = 100.0 * (total["killed"] + total["timeout"]) / tested if tested else 0.0
        rows.append(["all", total["mutants"], *[total[c] for c in COLUMNS], f"{score:.1f}",
                     round(sum(r["seconds"] for r in done), 1)])
    cells = [head, *[[str(c) for c in row] for row in rows]]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths]), *map(fmt, cells[1:])])


_SHOW = """
import sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path = sys.argv[1]
for name in sys.argv[2:]:
    lines = get_diff_for_mutant(name, path=path).splitlines()
    changed = [l for l in lines if l[:1] in "+-" and l[:3] not in ("---", "+++")]
    print(name, *changed, "", sep="\\n")
"""


def show_survivors(module: str) -> None:
    """The diff of every mutant of ``module`` that survived (or that no test reached)."""
    names = [name for name, status in verdicts(module).items() if status in ("survived", "no tests")]
    if names:
        subprocess.run([sys.executable, "-c", _SHOW, imported(module), *names], cwd=workdir(module), check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="paths such as streamrnn/state.py (default: the targets)")
    parser.add_argument("--all", action="store_true", help="every module in streamrnn/ and service/")
    parser.add_argument("--fresh", action="store_true", help="forget cached verdicts and start over")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutmut workers (default 2)")
    parser.add_argument("--report", action="store_true", help="print the table of the last runs; run nothing")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--survivors", action="store_true", help="print the diffs of the surviving mutants")
    args = parser.parse_args(argv)

    known = all_modules()
    modules = known if args.all else [m.removeprefix("./") for m in args.modules] or TARGETS
    unknown = [m for m in modules if m not in known]
    if unknown:
        parser.error(f"not a module of {' or '.join(PACKAGES)}: {', '.join(unknown)}")
    if args.survivors:
        for m in modules:
            show_survivors(m)
        return 0
    scores = load_scores()
    if not args.report:
        WORK.mkdir(exist_ok=True)
        for m in modules:
            print(f"=== {m}", flush=True)
            scores[m] = run_module(m, args.fresh, args.max_children)
            SCORES.write_text(json.dumps(scores, indent=1, sort_keys=True))
            print(table(scores, [m]), flush=True)
    print(table(scores, modules, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
