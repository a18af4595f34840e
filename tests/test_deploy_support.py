"""Helpers for the deploy/ tests: the shipped files, the PromQL they hold, and settings they set.

Every PromQL expression deploy/ ships is found here once -- alert rules, dashboard panels and
dashboard variables -- so the promtool, Prometheus and name checks all cover the same list.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the deploy/ manifests (pip install -e '.[dev]')")

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamrnn.json"

#: what Grafana puts for its variables when the tests evaluate a panel's query
GRAFANA_VARIABLES = {"__rate_interval": "10s", "__interval": "5s", "__range": "5m", "job": ".+", "instance": ".+"}


def load_yaml(path: Path) -> list:
    """Every document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# ----- PromQL in the shipped files ------------------------------------------------------------------


def alert_rules() -> list[dict]:
    (doc,) = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict | None = None) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for panel in (board or dashboard())["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def grafana(expr: str, variables: dict | None = None) -> str:
    """A dashboard query with Grafana's variables ($job, ${job}, $__rate_interval) put in."""
    values = {**GRAFANA_VARIABLES, **(variables or {})}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)


def dashboard_queries(board: dict | None = None) -> dict[str, str]:
    """{where: PromQL} for every panel target and query variable, variables put in."""
    board = board or dashboard()
    out = {}
    for panel in panels(board):
        for target in panel.get("targets", []):
            out[f"panel {panel['id']} {panel['title']!r} {target['refId']}"] = grafana(target["expr"])
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
            out[f"variable ${var['name']}"] = grafana(inner.group(1) if inner else query)
    return out


_COMPARISON = re.compile(r"==|!=|>=|<=|>|<")


def with_bool(expr: str) -> str:
    """``expr`` with every comparison made a ``bool`` one, so it keeps its series when the
    comparison is false: a quiet alert still shows that its metrics exist and its labels match.

    >>> with_bool('time() - x{a!="b"} > 900 and on (job) (rate(y[5m]) >= bool 0)')
    'time() - x{a!="b"} > bool 900 and on (job) (rate(y[5m]) >= bool 0)'
    """
    out, i, depth = [], 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":  # a string: copy it whole
            end = expr.index(c, i + 1)
            while c != "`" and expr[end - 1] == "\\":
                end = expr.index(c, end + 1)
            out.append(expr[i:end + 1])
            i = end + 1
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        match = _COMPARISON.match(expr, i) if depth == 0 else None
        if match:
            out.append(match.group())
            i = match.end()
            if not re.match(r"\s*bool\b", expr[i:]):
                out.append(" bool")
            continue
        out.append(c)
        i += 1
    return "".join(out)


_SELECTOR = re.compile(r"(?<![\w:])(streamrnn_\w+|up)\b\s*(\{[^}]*\})?(?!\s*\()")


def selectors(expr: str) -> list[str]:
    """The metric selectors of a PromQL expression (range and offset left out).

    >>> selectors('sum by (le) (rate(streamrnn_x_bucket{job=~"a"}[5m])) / up')
    ['streamrnn_x_bucket{job=~"a"}', 'up']
    """
    return [name + (labels or "") for name, labels in _SELECTOR.findall(expr)]


def metric_names(expr: str) -> set[str]:
    return {re.match(r"\w+", s).group() for s in selectors(expr)} - {"up"}


def shipped_queries() -> dict[str, str]:
    """{where: PromQL} for every alert rule and dashboard query."""
    out = {f"alert {rule['alert']}": rule["expr"].strip() for rule in alert_rules()}
    out.update(dashboard_queries())
    return out


# ----- settings the deploy files give the daemon ------------------------------------------------------


def dockerfile_instructions(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:]


def image_environment() -> dict[str, str]:
    """The ENV of the image's last stage."""
    env = {}
    for word, rest in final_stage(dockerfile_instructions()):
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def settings(environ: dict[str, str]):
    """The daemon's settings from these environment variables (service.config does the reading)."""
    from streamrnn_service.config import load

    return load(environ={k: v for k, v in environ.items() if k.startswith("STREAMRNN_")})


def test_helpers_find_every_alert_and_panel_query():
    queries = shipped_queries()
    assert sum(k.startswith("alert ") for k in queries) == len(alert_rules()) >= 9
    assert sum(k.startswith("panel ") for k in queries) >= 20
    assert all("$" not in q for q in queries.values()), "a Grafana variable is left in a query"
    assert all(metric_names(q) or "up{" in q for q in queries.values())


# ----- compose, Kubernetes and the image -------------------------------------------------------------------

KUBERNETES = DEPLOY / "kubernetes"


def seconds(duration) -> float:
    """'20s', '1m30s', '2min', 30 -> seconds (compose, systemd and Kubernetes spellings)."""
    if isinstance(duration, (int, float)) or re.fullmatch(r"[\d.]+", str(duration)):
        return float(duration)
    units = {"ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"([\d.]+)\s*(ms|sec|min|s|m|h)", str(duration))
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


def kubernetes(directory: Path = KUBERNETES) -> dict[tuple[str, str], dict]:
    """{(kind, name): object} of the manifests in ``directory`` (not its subdirectories)."""
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in load_yaml(path):
            if doc["kind"] != "Kustomization":
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def kustomization(directory: Path = KUBERNETES) -> dict:
    return load_yaml(directory / "kustomization.yaml")[0]


def container_environment(container: dict, secrets: dict | None = None, pod_name: str = "pod-0") -> dict[str, str]:
    """A container's environment as Kubernetes makes it: ``secrets`` {(secret, key): value} for
    secretKeyRef, the pod's name for fieldRef metadata.name, and $(NAME) replaced by a variable defined
    above it."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            value = (secrets or {})[(ref["name"], ref["key"])]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", item
            value = pod_name
        env[item["name"]] = value
    return env


def container_settings(container: dict, **resolve):
    """The daemon's settings in a pod: the image's environment, then the container's."""
    return settings({**image_environment(), **container_environment(container, **resolve)})


def image_uid() -> int:
    run = " ".join(rest for word, rest in final_stage(dockerfile_instructions()) if word == "RUN")
    return int(re.search(r"useradd [^&]*--uid (\d+)", run).group(1))
