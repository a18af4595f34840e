#!/usr/bin/env python3
"""Prove the learning tests have teeth: each passes, and each fails with the models frozen.

    .venv/bin/python tools/frozen_check.py            # every test marked "learning" (the slow ones too)
    .venv/bin/python tools/frozen_check.py --quick    # without the slow ones (a minute or so)

Runs ``pytest -m learning`` on the test modules that hold learning claims twice:
as it is, where every selected test must pass, and with ``STREAMRNN_TEST_FREEZE=1``,
where ``tests/frozen.py`` turns every weight update off (the optimisers, recursive
least squares, smoothing, logistic regression, the ML-Poly aggregation) and every
selected test must fail.  Prints one line per test and exits 1 if any test passed
frozen or failed as it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["tests/test_estimators.py", "tests/test_hybrid_models.py", "tests/test_learning.py", "tests/test_model.py",
           "tests/test_snap.py", "tests/test_uoro.py"]


def run(frozen: bool, marker: str) -> dict[str, str]:
    """{test id: "passed" | "failed" | "error" | "skipped"} of one pytest run."""
    env = dict(os.environ)
    env.pop("STREAMRNN_TEST_FREEZE", None)
    if frozen:
        env["STREAMRNN_TEST_FREEZE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
               f"--junitxml={report}", *MODULES]
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = {}
        for case in ET.parse(report).iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
            out[name] = outcome
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="leave out the tests marked slow")
    args = parser.parse_args()
    marker = "learning and not slow" if args.quick else "learning"
    normal, frozen = run(False, marker), run(True, marker)
    if not normal:
        print("no test selected", file=sys.stderr)
        return 1
    bad = 0
    for name in sorted(normal.keys() | frozen.keys()):
        a, b = normal.get(name, "missing"), frozen.get(name, "missing")
        ok = a == "passed" and b == "failed"
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'}  as is: {a:7}  frozen: {b:7}  {name}")
    print(f"{len(normal)} learning tests: {len(normal) - bad} pass as they are and fail frozen, {bad} do not")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
