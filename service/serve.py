"""``streamrnn serve``: the daemon.  Flags become settings here; ``service.config`` validates them.

Exit codes: 0 after a clean stop (signal, or every finite input ended), 1 when
the daemon cannot start or its last checkpoint fails, 2 for an invalid setting.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

from . import config as config_module

#: flag -> setting; list settings take the flag repeatedly
SHORTCUTS = {
    "tcp": "sources.tcp", "unix": "sources.unix", "input": "sources.input", "rate": "sources.input_rate",
    "checkpoint_dir": "checkpoint.dir", "metrics_host": "metrics.host", "metrics_port": "metrics.port",
    "log_format": "log.format", "log_level": "log.level", "progress": "log.progress_seconds",
    "learner": "model.learner", "cell": "model.cell", "units": "model.units", "optimizer": "model.optimizer",
    "lr": "model.lr", "loss": "model.loss", "horizon": "forecast.horizon", "max_keys": "streams.max_keys",
    "redis": "redis.url", "partitions": "redis.partitions", "workers": "redis.workers",
    "worker_index": "redis.worker_index",
}
SWITCHES = {"no_stdin": "sources.stdin", "no_checkpoint": "checkpoint.enabled", "no_metrics": "metrics.enabled"}
#: Many keys are a heap of long-lived small objects (a few hundred per key) that each full collection
#: walks; rarer collections: 10,000 keys, 50,000 events, 895 -> 1,021 events/s, and a start-up read-back
#: of 10,000 keys 8.1 -> 6.8 s
GC_THRESHOLDS = (20_000, 50, 100)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrnn serve",
        description="Serve online RNNs on JSON lines from stdin, files, sockets and Redis Streams, with Prometheus "
                    "metrics.",
        epilog="Precedence: defaults < --config file (or $STREAMRNN_CONFIG) < STREAMRNN_<SECTION>_<FIELD> "
               "environment variables < flags.  Any setting: --set section.field=value.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[], help="any setting")
    p.add_argument("--tcp", metavar="HOST:PORT", action="append", help="listen on TCP (repeatable)")
    p.add_argument("--unix", metavar="PATH", action="append", help="listen on a Unix socket (repeatable)")
    p.add_argument("--input", metavar="FILE", action="append", help="JSON-lines file or river:NAME (repeatable)")
    p.add_argument("--rate", metavar="EVENTS_PER_S", help="pace --input files")
    p.add_argument("--redis", metavar="URL", help="read events from Redis Streams (redis://HOST:PORT/DB)")
    p.add_argument("--partitions", metavar="P", help="partition streams on Redis (producers must agree)")
    p.add_argument("--workers", metavar="N", help="workers sharing the partitions")
    p.add_argument("--worker-index", metavar="I", help="this worker's number, 0 .. N-1")
    p.add_argument("--no-stdin", action="store_true", help="do not read standard input")
    p.add_argument("--checkpoint-dir", metavar="DIR")
    p.add_argument("--no-checkpoint", action="store_true", help="keep no checkpoints")
    p.add_argument("--metrics-host", metavar="HOST")
    p.add_argument("--metrics-port", metavar="PORT", help="0: any free port (logged)")
    p.add_argument("--no-metrics", action="store_true")
    p.add_argument("--log-format", choices=["human", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--progress", metavar="SECONDS", help="a progress line this often (0: never)")
    for name in ("learner", "cell", "units", "optimizer", "lr", "loss", "horizon", "max_keys"):
        p.add_argument(f"--{name.replace('_', '-')}", metavar=name.upper(), help=f"setting {SHORTCUTS[name]}")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as JSON and exit")
    p.add_argument("--print-schema", action="store_true", help="print the protocol's JSON Schema and exit")
    return p


def assignments(items: list[str]) -> dict:
    """``--set SECTION.FIELD=VALUE`` items as {setting: value}; ConfigError for one without "=".
    (``streamrnn replay`` takes --set too.)"""
    out = {}
    for item in items:
        dotted, sep, value = item.partition("=")
        if not sep:
            raise config_module.ConfigError(f"--set needs SECTION.FIELD=VALUE, got {item!r}")
        out[dotted.strip()] = value
    return out


def overrides(args: argparse.Namespace) -> dict:
    """The settings ``streamrnn serve``'s flags give: --set, then the shortcut flags and switches."""
    out = assignments(args.set)
    for flag, dotted in SHORTCUTS.items():
        if getattr(args, flag) is not None:
            out[dotted] = getattr(args, flag)
    for flag, dotted in SWITCHES.items():
        if getattr(args, flag):
            out[dotted] = False
    return out


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.print_schema:
        from .protocol import schema

        print(json.dumps(schema(), indent=2))
        return 0
    try:
        config = config_module.load(args.config, overrides=overrides(args))
    except config_module.ConfigError as err:
        print(f"streamrnn serve: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        from .redis_log import redacted

        shown = config.model_copy(deep=True)
        if shown.redis.url is not None:  # a password in the URL stays out of terminals and logs
            shown.redis.url = redacted(shown.redis.url)
        print(shown.model_dump_json(indent=2))
        return 0
    from threadpoolctl import threadpool_limits

    from . import logs
    from .server import Server

    logs.setup(config.log)
    threadpool_limits(1)  # one BLAS thread: faster for these small matrices, and fair to other processes
    gc.set_threshold(*GC_THRESHOLDS)
    return Server(config).run()
