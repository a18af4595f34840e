"""The daemon's settings: pydantic models, validated apart from the server that uses them.

Where a setting comes from, lowest precedence first:

1. the embedded defaults below (a bare ``streamrnn serve`` runs on them);
2. a TOML file: ``--config FILE``, or the path in ``STREAMRNN_CONFIG``;
3. environment variables ``STREAMRNN_<SECTION>_<FIELD>``, e.g.
   ``STREAMRNN_MODEL_UNITS=32`` or ``STREAMRNN_SOURCES_TCP=127.0.0.1:7070,127.0.0.1:7071``;
4. command-line flags: ``--set section.field=value`` and the shortcuts of ``streamrnn serve -h``.

Values from the environment and from flags are strings: numbers and booleans
are parsed by pydantic, lists split on commas, ``none`` clears an optional
setting.  Every problem is a ``ConfigError`` naming the setting and where its
value came from; the command line turns it into exit code 2.

>>> config = load(environ={"STREAMRNN_MODEL_UNITS": "32"}, overrides={"model.learner": "bptt", "model.learner.h": "20"})
>>> config.model.units, config.model.learner.build(), config.sources.stdin
(32, TruncatedBPTT(h=20, h_prime=1), True)
>>> load(environ={"STREAMRNN_MODEL_UNITS": "0"})
Traceback (most recent call last):
...
streamrnn_service.config.ConfigError: invalid setting model.units = '0' (from environment variable STREAMRNN_MODEL_UNITS): Input should be greater than or equal to 1
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
import inspect
from typing import Annotated, Literal, Optional, Union

from pydantic import (
    BaseModel, ConfigDict, Field, Tag, ValidationError, create_model, field_validator, model_validator,
)

from . import names

ENV_PREFIX = "STREAMRNN_"
#: STREAMRNN_ variables that are not settings: the configuration file, and the library's own switches
#: (STREAMRNN_KERNELS turns the compiled kernels off for the whole process, as ``model.kernels`` does)
NOT_SETTINGS = {ENV_PREFIX + "CONFIG", ENV_PREFIX + "KERNELS"}


class ConfigError(ValueError):
    """An invalid setting; the message names it and where its value came from."""


def _choice(table) -> object:
    return Literal[tuple(table)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value, info):
        """Strings from the environment or flags: 'none' clears, lists split on commas."""
        if isinstance(value, str):
            annotation = str(cls.model_fields[info.field_name].annotation)
            if value.strip().lower() in ("none", "null") and "Optional" in annotation:
                return None
            if annotation.startswith("list["):
                return [part.strip() for part in value.split(",") if part.strip()]
        return value


class LearnerSection(BaseModel):
    """``[model.learner]``: ``kind`` names a registered learner, the other fields are its own settings."""

    model_config = ConfigDict(extra="forbid")

    def arguments(self) -> dict:
        return self.model_dump(exclude={"kind"})

    def build(self):
        return names.LEARNERS[self.kind](**self.arguments())

    @model_validator(mode="after")
    def _buildable(self):
        self.build()  # the learner's own checks, e.g. h_prime <= h (ValueError naming the argument)
        return self


def _learner_settings(name: str, cls) -> type:
    fields = {"kind": (Literal[name], name)}
    for arg, (kind, default) in cls.settings().items():
        fields[arg] = (kind, ... if default is inspect.Parameter.empty else default)
    return create_model(f"{cls.__name__}Settings", __base__=LearnerSection, __doc__=cls.__doc__, **fields)


#: one settings model per online learner, told apart by ``kind``
LearnerSettings = Annotated[
    Union[tuple(Annotated[_learner_settings(n, c), Tag(n)] for n, c in names.LEARNERS.items())],
    Field(discriminator="kind"),
]
#: settings of ``[model]`` that are tables of their own: set whole, or one entry as model.learner.h
TABLES = ("learner",)
#: settings that moved, and where to
MOVED = {"model.h": "model.learner.h", "model.h_prime": "model.learner.h_prime"}


class ModelSettings(Section):
    """The network every stream key starts from (names resolved in ``service.names``)."""

    cell: _choice(names.CELLS) = "elman"
    units: int = Field(16, ge=1, le=4096)
    layers: int = Field(1, ge=1, le=16)
    activation: _choice(names.ACTIVATIONS) = "tanh"
    beta: float = Field(0.5, gt=0.0, le=1.0, description="leak of a leaky cell")
    gain: float = Field(1.0, ge=0.0, le=10.0, description="initial U = random orthogonal matrix times gain")
    outputs: int = Field(1, ge=1, le=4096, description="outputs of supervised streams")
    readout: _choice(names.READOUTS) = "identity"
    loss: _choice(names.LOSS_NAMES) = "squared"
    learner: LearnerSettings = Field(default_factory=lambda: {"kind": "rtrl"},
                                     description="kind (a registered online learner: rtrl, bptt, ...) and that learner's "
                                     "own settings (bptt: h, h_prime)")
    optimizer: _choice(names.OPTIMIZERS) = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    schedule: _choice(names.SCHEDULES) = "constant"
    decay: float = Field(0.5, ge=0.0, description="exponential: rate per decay_steps; inverse_time: decay")
    decay_steps: int = Field(10_000, ge=1)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    clip_norm: Optional[float] = Field(1.0, gt=0.0)
    target_feedback: bool = False
    hybrid: bool = Field(True, description="supervised keys with squared error: the library's hybrid regressor "
                                            "(true) or the bare network, about 8 times faster per event (false)")
    seed: int = Field(0, ge=0)
    kernels: bool = Field(True, description="run each step as one compiled call where a kernel covers the model "
                                            "(streamrnn.kernels); false: the numpy engine (as STREAMRNN_KERNELS=0)")
    features: list[str] = Field(default_factory=list, description="ordered feature names; empty: the first event of a key fixes them")

    @field_validator("learner", mode="before")
    @classmethod
    def _kind(cls, value):
        """A name alone (``--learner bptt``) is that learner with its defaults; epochwise needs sequences."""
        table = {"kind": value.strip().lower()} if isinstance(value, str) else value
        if isinstance(table, dict):
            table = {"kind": "rtrl", **table}  # entries without a kind are for the default learner
        if isinstance(table, dict) and table.get("kind") == "epochwise":
            raise ValueError("epochwise learns over finite sequences, and a daemon's streams never end: "
                             f"use one of {', '.join(names.LEARNERS)}")
        return table

    @model_validator(mode="after")
    def _window(self):
        if len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat a name")
        return self


class ForecastSettings(Section):
    horizon: int = Field(1, ge=1, le=1000, description="forecast steps in each reply")
    season: list[int] = Field(default_factory=list, description="seasonal periods in steps; empty: detected per key")
    multiplicative: Optional[bool] = Field(None, description="log-scale smoothing: none = when the series is positive")

    @field_validator("season")
    @classmethod
    def _periods(cls, values):
        if any(m < 2 or m > 10_000 for m in values) or len(set(values)) != len(values):
            raise ValueError("season must be distinct periods in 2..10000")
        return values


class StreamSettings(Section):
    max_keys: int = Field(10_000, ge=1, description="live keys; the least recently used are checkpointed out")
    max_stored_keys: int = Field(100_000, ge=0, description="keys checkpointed out to disk, at most")
    when_full: Literal["refuse", "expire"] = Field(
        "refuse", description="max_stored_keys reached: refuse new keys (too_many_keys), or forget the stored "
        "key that has gone longest without an event")
    max_key_bytes: int = Field(16 << 20, ge=1024, description="state of one key, at most (a new key over it "
                               "is refused: too_large)")
    default_key: str = Field("default", min_length=1, max_length=256)
    batch: int = Field(64, ge=1, le=4096, description="events of distinct supervised keys stepped in one "
                       "compiled call, at most (keys held as rows of a pool: hybrid, one output, BPTT)")


class SourceSettings(Section):
    stdin: bool = True
    tcp: list[str] = Field(default_factory=list, description="HOST:PORT to listen on")
    unix: list[str] = Field(default_factory=list, description="socket paths to listen on")
    input: list[str] = Field(default_factory=list, description="JSON-lines files, or river:NAME series")
    input_rate: float = Field(0.0, ge=0.0, description="events per second from input files (0: no limit)")
    max_line_bytes: int = Field(1 << 20, ge=64)
    max_connections: int = Field(256, ge=1, description="open client connections; one more is told and closed")
    unix_mode: str = Field("0660", pattern=r"^0?[0-7]{3}$", description="permissions of the Unix sockets (octal)")
    auth_token_file: Optional[Path] = Field(None, description="a file holding the shared secret every TCP and "
                                            "Unix client sends first; none: clients do not authenticate")
    auth_timeout_seconds: float = Field(10.0, gt=0.0, description="with a token: a client that has not "
                                        "authenticated by then is told unauthenticated and closed")
    allow_unauthenticated: bool = Field(False, description="listen on a TCP address other hosts can reach "
                                        "without auth_token_file (anyone who can connect may write to any key)")

    @field_validator("auth_token_file", mode="before")
    @classmethod
    def _named(cls, value):
        if isinstance(value, str) and not value.strip():  # Path("") would be the working directory
            raise ValueError("must name a file (none: no authentication)")
        return value

    @field_validator("tcp")
    @classmethod
    def _address(cls, values):
        for value in values:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"{value!r} must be HOST:PORT with a port in 0..65535")
        return values


class RedisSettings(Section):
    url: Optional[str] = Field(None, description="read events from Redis Streams at this URL "
                               "(redis://HOST:PORT/DB); none: no Redis")
    partitions: int = Field(4, ge=1, le=4096, description="partition streams PREFIX:0 .. PREFIX:P-1; a key's "
                            "partition is crc32(key) mod P, so producers and workers must agree on P")
    prefix: str = Field("streamrnn", min_length=1, max_length=200, pattern=r"^[^\s]+$")
    ownership: Literal["static", "leases"] = Field(
        "static", description="static: worker_index of workers owns p mod workers = worker_index; leases: "
        "workers take partitions by leases in Redis, and take over those of a worker that stops renewing")
    lease_seconds: float = Field(10.0, ge=0.5, le=3600.0, description="leases: a partition whose owner has not "
                                 "renewed for this long goes to another worker (renewed every third of it)")
    worker_id: Optional[str] = Field(None, min_length=1, max_length=200, pattern=r"^[^\s]+$",
                                     description="leases: this worker's name; none: HOST-PID")
    workers: int = Field(1, ge=1, le=4096, description="workers sharing the partitions (static assignment)")
    worker_index: int = Field(0, ge=0, description="this worker's number, 0 .. workers-1: it owns the "
                              "partitions p with p mod workers = worker_index (a StatefulSet ordinal)")
    read_count: int = Field(256, ge=1, le=100_000, description="entries read per partition at a time, at most "
                            "(a slow worker never pulls more into memory)")
    block_ms: int = Field(100, ge=1, le=60_000, description="how long one read waits for new entries")
    retry_seconds: float = Field(5.0, gt=0.0, description="the longest wait between attempts while Redis is "
                                 "out of reach (the waits double from 0.1 s)")

    @model_validator(mode="after")
    def _owned(self):
        if self.worker_index >= self.workers:
            raise ValueError(f"worker_index must be below workers ({self.workers}), got {self.worker_index}")
        if self.url is not None and not self.url.startswith(("redis://", "rediss://", "unix://")):
            from .redis_log import redacted

            raise ValueError(f"url must start with redis://, rediss:// or unix://, got {redacted(self.url)!r}")
        return self


class CheckpointSettings(Section):
    enabled: bool = True
    dir: Path = Path("checkpoints")
    every_events: int = Field(10_000, ge=0, description="0: never by count")
    every_seconds: float = Field(60.0, ge=0.0, description="0: never by time")
    keep: int = Field(3, ge=1, description="generations kept; older ones are deleted")
    background: bool = Field(True, description="write the periodic checkpoints while events go on; the one at "
                             "shutdown is always written before exit")
    fork: bool = Field(True, description="with background: a forked child process copies and writes the keys' "
                       "states (Linux; its copy-on-write pages count toward the memory limit); off, or "
                       "elsewhere: a writer thread, after the states are copied between two events")
    max_share: float = Field(0.5, gt=0.0, le=1.0, description="the largest share of time spent writing background "
                             "checkpoints: after one that took T s, the next waits until T * (1 / max_share - 1) s "
                             "after it ended (1: back to back when they take longer than the events between them)")


class MetricsSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9310, ge=0, le=65535, description="0: any free port (logged)")


class LogSettings(Section):
    format: Literal["human", "json"] = "human"
    level: Literal["debug", "info", "warning", "error"] = "info"
    progress_seconds: float = Field(10.0, ge=0.0, description="a progress line this often (0: never)")


class ShutdownSettings(Section):
    timeout_seconds: float = Field(10.0, gt=0.0, description="bound on the graceful stop")


class Config(BaseModel):
    """All settings, one section per part of the daemon."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSettings = Field(default_factory=ModelSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    sources: SourceSettings = Field(default_factory=SourceSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)

    @model_validator(mode="after")
    def _one_input(self):
        src = self.sources
        if self.redis.url is not None and (src.stdin or src.tcp or src.unix or src.input):
            raise ValueError("with redis.url the events come from Redis alone (each partition's keys are "
                             "checkpointed with its position): turn off sources.stdin (--no-stdin) and leave "
                             "sources.tcp, unix and input empty")
        return self


SECTIONS = tuple(Config.model_fields)


def _table(value) -> dict:
    """A table setting as a dict: a name alone is {"kind": name}."""
    if isinstance(value, dict):
        return dict(value)
    return {"kind": value} if isinstance(value, str) else {}


def _layer(target: dict, dotted: str, value, origin: str, origins: dict) -> None:
    section, _, field = dotted.partition(".")
    if section not in SECTIONS or not field:
        raise ConfigError(f"unknown setting {dotted!r} (from {origin}); sections are {', '.join(SECTIONS)}")
    if dotted in MOVED:
        raise ConfigError(f"setting {dotted} (from {origin}) is now {MOVED[dotted]}, in the [model.learner] "
                          'table with kind = "bptt"')
    fields = target.setdefault(section, {})
    head, dot, rest = field.partition(".")
    if section == "model" and head in TABLES:
        table = _table(fields.get(head))
        if dot:  # one entry: model.learner.h (the kind may come from another layer, or be the default)
            table[rest] = value
        else:  # the whole table, or a name; another kind starts from its own defaults
            new = _table(value) if isinstance(value, (str, dict)) else value
            if not isinstance(new, dict):
                fields[head] = new
                origins[(section, field)] = origin
                return
            if "kind" in table and new.get("kind") not in (None, table["kind"]):
                table = {}
            table.update(new)
        fields[head] = table
    else:
        fields[field] = value
    origins[(section, field)] = origin


def _from_environment(environ) -> dict[str, str]:
    out = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        section, _, field = name[len(ENV_PREFIX):].lower().partition("_")
        for table in TABLES:  # STREAMRNN_MODEL_LEARNER_H is model.learner.h
            if section == "model" and field.startswith(table + "_"):
                field = f"{table}.{field[len(table) + 1:]}"
        out[f"{section}.{field}"] = (value, f"environment variable {name}")
    return out


def load(path=None, environ=None, overrides=None) -> Config:
    """Defaults < TOML file ``path`` (or $STREAMRNN_CONFIG) < environment < ``overrides``.

    ``overrides`` maps "section.field" to a value (a string from the command line).
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    raw: dict = {}
    origins: dict = {}
    if path:
        try:
            document = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read configuration file {path}: {err}") from None
        for section, fields in document.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"setting {section!r} in {path} must be a [section] table")
            for field, value in fields.items():
                _layer(raw, f"{section}.{field}", value, f"file {path}", origins)
    for dotted, (value, origin) in _from_environment(environ).items():
        _layer(raw, dotted, value, origin, origins)
    for dotted, value in (overrides or {}).items():
        _layer(raw, dotted, value, f"flag for {dotted}", origins)
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, raw, origins)) from None
    try:  # combinations only the engine knows, e.g. a log-loss on an identity readout
        names.ModelTemplate(config.model, config.forecast)
    except ValueError as err:
        raise ConfigError(f"invalid setting model: {err}") from None
    return config


def _describe(err: ValidationError, raw: dict, origins: dict) -> str:
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across sections
        return f"invalid settings: {message}"
    if len(loc) == 1:  # a rule across one section's fields
        return f"invalid setting {loc[0]}: {message}"
    section, field = loc[0], loc[1]
    if section == "model" and field in TABLES:  # ("model", "learner", <kind>, "h"): model.learner.h
        table = raw.get(section, {}).get(field, {})
        entry = loc[3] if len(loc) > 3 else None
        name = f"{field}.{entry}" if entry else field
        where = origins.get((section, name)) or origins.get((section, field))
        source = f" (from {where})" if where else ""
        if first["type"] == "extra_forbidden":
            kind = table.get("kind", "rtrl") if isinstance(table, dict) else None
            return (f"unknown setting {section}.{name}{source} for the {kind} learner; its settings are "
                    f"{sorted(names.LEARNERS[kind].settings()) if kind in names.LEARNERS else []}")
        value = table.get(entry, "<default>") if entry and isinstance(table, dict) else table
        return f"invalid setting {section}.{name} = {value!r}{source}: {message}"
    if first["type"] == "extra_forbidden":
        return f"unknown setting {section}.{field} (from {origins.get((section, field), 'defaults')})"
    where = origins.get((section, field))
    value = raw.get(section, {}).get(field, "<default>")
    source = f" (from {where})" if where else ""
    return f"invalid setting {'.'.join(loc)} = {value!r}{source}: {message}"
