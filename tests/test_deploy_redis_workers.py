"""deploy/ for workers on Redis Streams: ``compose.redis.yaml`` and ``kubernetes/redis-workers/`` agree
with the daemon and with each other, and -- where redis-server is installed -- their definitions run
here as shipped: Redis with the pod's own start-up script, and workers with the image's environment
plus the file's, answering events that `streamrnn produce` partitioned."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from streamrnn_service.leases import owner_of
from streamrnn_service.redis_log import produce, reply_stream

from .redis_support import SERVER, free_port, needs_redis
from .test_deploy_support import (
    DEPLOY, KUBERNETES, REPO, container_environment, container_settings, image_environment, image_uid, kubernetes,
    kustomization, load_yaml, seconds, settings,
)
from .test_service_support import Daemon, supervised_events

REDIS_WORKERS = KUBERNETES / "redis-workers"
PASSWORD = "0123456789abcdef" * 2


def manifests() -> dict[tuple[str, str], dict]:
    return kubernetes(REDIS_WORKERS)


def pod(kind: str, name: str) -> tuple[dict, dict]:
    """(pod template, its one container) of a workload."""
    template = manifests()[(kind, name)]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    return template, container


def secret_values() -> dict[tuple[str, str], str]:
    """{(secret, key): value} of the kustomization's generated Secrets, from their env files as shipped."""
    out = {}
    for generator in kustomization(REDIS_WORKERS)["secretGenerator"]:
        for file in generator["envs"]:
            for line in (REDIS_WORKERS / file).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    out[(generator["name"], key)] = value
    return out


def worker_settings(pod_name: str = "streamrnn-worker-5c7d9-x2x8q"):
    _, container = pod("Deployment", "streamrnn-worker")
    return container_settings(container, secrets={("streamrnn-redis", "password"): PASSWORD}, pod_name=pod_name)


# ----- compose ------------------------------------------------------------------------------------------------


def test_redis_compose_runs_two_workers_on_leases_over_one_shared_checkpoint_volume():
    (compose,) = load_yaml(DEPLOY / "compose.redis.yaml")
    services = compose["services"]
    assert set(services) == {"redis", "worker-a", "worker-b"}
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    ids, volumes = set(), set()
    for name in ("worker-a", "worker-b"):
        worker = services[name]
        assert (REPO / worker["build"]["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        config = settings({**image_environment(), **worker["environment"]})  # valid: Redis alone, leases
        assert config.redis.url == "redis://redis:6379/0" and config.redis.ownership == "leases"
        assert config.sources.tcp == [] and not config.sources.stdin
        assert seconds(worker["stop_grace_period"]) > config.shutdown.timeout_seconds
        ids.add(config.redis.worker_id)
        volume, target = worker["volumes"][0].split(":")[:2]
        assert volume in compose["volumes"] and Path(target) == config.checkpoint.dir
        volumes.add(volume)
    assert ids == {"worker-a", "worker-b"} and len(volumes) == 1  # distinct names, one shared volume


# ----- Kubernetes: the files ----------------------------------------------------------------------------------


def test_every_redis_workers_manifest_is_in_the_kustomization():
    k = kustomization(REDIS_WORKERS)
    on_disk = {p.name for p in REDIS_WORKERS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) <= on_disk and on_disk - set(k["resources"]) == {"podmonitor.yaml"}
    assert "# - podmonitor.yaml" in (REDIS_WORKERS / "kustomization.yaml").read_text()
    assert k["namespace"] == "streamrnn" and {"Namespace", "Deployment", "StatefulSet"} <= {kind for kind, _ in manifests()}
    assert set(secret_values()) == {("streamrnn-redis", "password")}


def test_redis_workers_validate_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    version = kubernetes_validate.latest_version()
    objects = {name: doc for name, doc in manifests().items() if name[0] != "PodMonitor"}
    assert {kind for kind, _ in objects} == {"Namespace", "Service", "StatefulSet", "Deployment",
                                             "PersistentVolumeClaim", "NetworkPolicy"}
    for doc in objects.values():
        kubernetes_validate.validate(doc, version, strict=True)
    broken = copy.deepcopy(objects[("Deployment", "streamrnn-worker")])
    broken["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"] = {"secretRef": {"name": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_redis_workers():
    out = subprocess.run(["kubectl", "kustomize", str(REDIS_WORKERS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import yaml

    docs = list(yaml.safe_load_all(out.stdout))
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Namespace", "NetworkPolicy", "NetworkPolicy",
                                               "PersistentVolumeClaim", "Secret", "Service", "StatefulSet"]
    assert all(d["metadata"].get("namespace") == "streamrnn" for d in docs if d["kind"] != "Namespace")
    (secret,) = [d for d in docs if d["kind"] == "Secret"]  # its name carries the content hash
    for kind in ("Deployment", "StatefulSet"):
        (workload,) = [d for d in docs if d["kind"] == kind]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert refs == [secret["metadata"]["name"]], kind  # a new password rolls Redis and the workers
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "streamrnn:0.1.0"


def test_the_workers_reach_the_redis_service_share_one_volume_and_take_partitions_by_leases():
    k8s = manifests()
    worker_pod, worker = pod("Deployment", "streamrnn-worker")
    redis_pod, redis = pod("StatefulSet", "streamrnn-redis")
    config = worker_settings(pod_name="streamrnn-worker-5c7d9-x2x8q")
    # Redis by its Service, with the password from the Secret
    service = k8s[("Service", "streamrnn-redis")]["spec"]
    (port,) = service["ports"]
    assert service["selector"].items() <= redis_pod["metadata"]["labels"].items()
    assert {p["name"]: p["containerPort"] for p in redis["ports"]}[port["targetPort"]] == 6379
    assert config.redis.url == f"redis://:{PASSWORD}@streamrnn-redis:{port['port']}/0"
    # leases, named by the pod; events from Redis alone
    assert config.redis.ownership == "leases" and config.redis.worker_id == "streamrnn-worker-5c7d9-x2x8q"
    assert not config.sources.stdin and config.sources.tcp == [] and config.sources.unix == []
    deployment = k8s[("Deployment", "streamrnn-worker")]["spec"]
    assert 1 < deployment["replicas"] <= config.redis.partitions
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # a rollout adds before it removes
    # one ReadWriteMany claim at the checkpoint directory
    mounts = {m["name"]: Path(m["mountPath"]) for m in worker["volumeMounts"]}
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in worker_pod["spec"]["volumes"]
                if v["name"] in mounts and mounts[v["name"]] == config.checkpoint.dir]
    assert k8s[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]
    # metrics and probes, a clean stop, the image's user
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"metrics": config.metrics.port} and config.metrics.host == "0.0.0.0"
    assert worker_pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # the first partitions are taken (and restored) after /healthz is up: the start-up probe waits for /readyz
    assert worker["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker_pod["spec"]["terminationGracePeriodSeconds"] > config.shutdown.timeout_seconds
    assert worker_pod["spec"]["securityContext"]["runAsUser"] == image_uid()
    # Redis keeps an append-only file on its volume
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    (data,) = k8s[("StatefulSet", "streamrnn-redis")]["spec"]["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in redis["volumeMounts"]}[data["metadata"]["name"]] \
        == args[args.index("--dir") + 1]


def test_network_policies_admit_workers_and_producers_to_redis_and_prometheus_to_the_workers():
    k8s = manifests()
    worker_pod, worker = pod("Deployment", "streamrnn-worker")
    redis_pod, redis = pod("StatefulSet", "streamrnn-redis")
    labels = worker_pod["metadata"]["labels"]

    def rule(policy: str, pod_labels: dict, ports: list) -> list:
        spec = k8s[("NetworkPolicy", policy)]["spec"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items() and spec["policyTypes"] == ["Ingress"]
        (ingress,) = spec["ingress"]
        assert [p["port"] for p in ingress["ports"]] == [p["name"] for p in ports] and ingress["from"]
        return ingress["from"]

    workers, producers = rule("streamrnn-redis", redis_pod["metadata"]["labels"], redis["ports"])
    assert workers["podSelector"]["matchLabels"].items() <= labels.items() and "namespaceSelector" not in workers
    assert producers["podSelector"] == {"matchLabels": {"streamrnn-client": "true"}}
    assert not producers["podSelector"]["matchLabels"].items() <= redis_pod["metadata"]["labels"].items()
    (prometheus,) = rule("streamrnn-worker", labels, worker["ports"])
    assert prometheus["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    monitor = k8s[("PodMonitor", "streamrnn-worker")]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert labels[monitor["jobLabel"]] == "streamrnn"  # the job the alert rules watch


# ----- Kubernetes and compose: run here as shipped -------------------------------------------------------------


def redis_command(data: Path, port: int) -> list[str]:
    """The Redis container's command and arguments, on this machine: its data directory and a free port."""
    _, redis = pod("StatefulSet", "streamrnn-redis")
    args = [str(data) if a == "/data" else a for a in redis["args"]]
    return [*redis["command"], *args, "--port", str(port), "--bind", "127.0.0.1"]


def start_redis_pod(tmp_path: Path, password: str) -> subprocess.Popen:
    (tmp_path / "data").mkdir(exist_ok=True)
    env = {"PATH": f"{Path(SERVER).parent}:{os.environ['PATH']}", "REDIS_PASSWORD": password}
    port = free_port()
    proc = subprocess.Popen(redis_command(tmp_path / "data", port), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.port = port
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def client(port: int, password: str | None):
    import redis

    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=10)


def wait_ping(port: int, password: str, proc: subprocess.Popen) -> None:
    import redis

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if client(port, password).ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("the Redis pod's command did not start Redis")


def answers_events(env: dict, port: int, password: str | None, partitions: int, workdir: Path,
                   worker_id: str) -> None:
    """A worker with ``env`` (and metrics on 127.0.0.1) takes every partition's lease and answers events."""
    lines = [json.dumps(e).encode() for e in supervised_events(60, keys=tuple(f"k{i}" for i in range(9)), seed=3)]
    log = client(port, password)
    assert produce(log, lines, "streamrnn", partitions) == len(lines)
    # the image's and the pod's numba cache folders would start cold here: the machine's cache (the package's)
    env = {k: v for k, v in env.items() if k != "NUMBA_CACHE_DIR"}
    with Daemon(workdir, env={**env, "STREAMRNN_METRICS_HOST": "127.0.0.1"}) as daemon:
        daemon.wait_for(r"ready: ", timeout=120)  # a first compile of the kernels takes some 20-25 s
        deadline = time.monotonic() + 60
        replies = []
        while len(replies) < len(lines) and time.monotonic() < deadline:
            assert daemon.proc.poll() is None, daemon.log()
            replies = [json.loads(f[b"reply"]) for p in range(partitions)
                       for _, f in log.xrange(reply_stream("streamrnn", p))]
            time.sleep(0.05)
        assert len(replies) == len(lines) and all("prediction" in r for r in replies), replies[:3]
        assert {owner_of(log, "streamrnn", p)[0] for p in range(partitions)} == {worker_id}
        assert daemon.get("/readyz")[0] == 200
        assert daemon.stop() == 0
    assert all(owner_of(log, "streamrnn", p) is None for p in range(partitions))  # released on SIGTERM


@needs_redis
def test_the_redis_pod_refuses_the_placeholder_password_and_a_short_one(tmp_path):
    placeholder = secret_values()[("streamrnn-redis", "password")]
    for password, says in ((placeholder, "is redis.env still the placeholder?"), ("k8s-secret", "has 10 characters")):
        proc = start_redis_pod(tmp_path, password)
        try:
            _, err = proc.communicate(timeout=10)
        finally:
            stop(proc)
        assert proc.returncode == 1 and says in err, err


@needs_redis
def test_the_kubernetes_redis_and_worker_run_as_shipped(tmp_path):
    """Redis from the pod's script (password on stdin), then a worker with the Deployment's environment
    over the image's: it reaches Redis through the URL with the password, takes every partition's lease
    under its pod name, answers each event, and releases its leases when stopped."""
    proc = start_redis_pod(tmp_path, PASSWORD)
    try:
        wait_ping(proc.port, PASSWORD, proc)
        import redis

        with pytest.raises(redis.AuthenticationError):
            client(proc.port, None).ping()
        _, worker = pod("Deployment", "streamrnn-worker")
        env = container_environment(worker, secrets={("streamrnn-redis", "password"): PASSWORD},
                                    pod_name="streamrnn-worker-5c7d9-x2x8q")
        env["STREAMRNN_REDIS_URL"] = env["STREAMRNN_REDIS_URL"].replace("streamrnn-redis:6379", f"127.0.0.1:{proc.port}")
        answers_events({**image_environment(), **env}, proc.port, PASSWORD, worker_settings().redis.partitions,
                       tmp_path / "worker", "streamrnn-worker-5c7d9-x2x8q")
    finally:
        stop(proc)


@needs_redis
def test_a_compose_worker_runs_as_shipped(tmp_path):
    """compose.redis.yaml's worker environment over the image's (whose socket token file a Redis worker
    does not mount) starts and answers, against a Redis as compose runs it."""
    from .redis_support import RedisServer

    (compose,) = load_yaml(DEPLOY / "compose.redis.yaml")
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = {**image_environment(), **compose["services"]["worker-a"]["environment"], "STREAMRNN_REDIS_URL": server.url}
        answers_events(env, server.port, None, int(env["STREAMRNN_REDIS_PARTITIONS"]), tmp_path / "worker", "worker-a")
    finally:
        server.stop()
