"""Settings: defaults, TOML file, environment and flags, in that order; invalid ones named."""

from __future__ import annotations

import pytest

from streamrnn_service import names
from streamrnn import RTRL, TruncatedBPTT
from streamrnn.learners import REGISTRY
from streamrnn_service.config import Config, ConfigError, load
from streamrnn_service.serve import overrides, parser


def test_bare_defaults():
    config = load(environ={})
    assert config == Config()
    assert (config.sources.stdin, config.sources.tcp, config.metrics.host) == (True, [], "127.0.0.1")
    assert str(config.checkpoint.dir) == "checkpoints" and config.model.learner.build() == RTRL()


def test_precedence_file_then_environment_then_flags(tmp_path):
    path = tmp_path / "streamrnn.toml"
    path.write_text('[model]\nunits = 8\n[model.learner]\nkind = "bptt"\nh = 20\n[sources]\ntcp = ["127.0.0.1:7070"]\n')
    config = load(path, environ={})
    assert (config.model.units, config.model.learner.build(), config.sources.tcp) == (8, TruncatedBPTT(20), ["127.0.0.1:7070"])
    env = {"STREAMRNN_MODEL_UNITS": "12", "STREAMRNN_SOURCES_TCP": "127.0.0.1:1,127.0.0.1:2",
           "STREAMRNN_MODEL_CLIP_NORM": "none", "STREAMRNN_CONFIG": str(path), "STREAMRNN_MODEL_LEARNER_H_PRIME": "4"}
    config = load(environ=env)
    assert (config.model.units, config.model.learner.build(), config.model.clip_norm) == (12, TruncatedBPTT(20, 4), None)
    assert config.sources.tcp == ["127.0.0.1:1", "127.0.0.1:2"]
    config = load(environ=env, overrides={"model.units": "3", "sources.tcp": ["[::1]:5"]})
    assert (config.model.units, config.sources.tcp) == (3, ["[::1]:5"])


@pytest.mark.parametrize("where, expected", [
    ({"environ": {"STREAMRNN_MODEL_UNITS": "-1"}}, "invalid setting model.units = '-1' (from environment variable STREAMRNN_MODEL_UNITS)"),
    ({"overrides": {"model.optimizer": "adamw"}}, "invalid setting model.optimizer = 'adamw' (from flag for model.optimizer)"),
    ({"overrides": {"sources.tcp": "localhost"}}, "invalid setting sources.tcp"),
    ({"overrides": {"model.nope": "1"}}, "unknown setting model.nope"),
    ({"overrides": {"nope.units": "1"}}, "unknown setting 'nope.units'"),
    ({"environ": {"STREAMRNN_LOG_FORMAT": "xml"}}, "invalid setting log.format"),
    ({"overrides": {"model.learner": "bptt", "model.learner.h": "2", "model.learner.h_prime": "5"}}, "invalid setting model.learner = {'kind': 'bptt', 'h': '2', 'h_prime': '5'} (from flag for model.learner): h_prime must be <= h (h = 2), got 5"),
    ({"overrides": {"model.learner": "bptt", "model.learner.h": "x"}}, "invalid setting model.learner.h = 'x' (from flag for model.learner.h): Input should be a valid integer"),
    ({"environ": {"STREAMRNN_MODEL_LEARNER_H": "5"}}, "unknown setting model.learner.h (from environment variable STREAMRNN_MODEL_LEARNER_H) for the rtrl learner; its settings are []"),
    ({"overrides": {"model.learner": "epochwise"}}, "epochwise learns over finite sequences, and a daemon's streams never end: use one of " + ", ".join(names.LEARNERS)),
    ({"overrides": {"model.learner": "lstm"}}, "Input tag 'lstm' found using 'kind' does not match any of the expected tags: " + ", ".join(f"'{n}'" for n in names.LEARNERS)),
    ({"overrides": {"model.h": "20"}}, 'setting model.h (from flag for model.h) is now model.learner.h, in the [model.learner] table with kind = "bptt"'),
    ({"overrides": {"model.loss": "logloss"}}, "invalid setting model: loss 'logloss' needs a readout activation in ['sigmoid']"),
])
def test_invalid_settings_are_named(where, expected):
    with pytest.raises(ConfigError) as err:
        load(**{"environ": {}, **where})
    assert expected in str(err.value)


def test_the_learner_table_takes_its_kind_and_that_learners_own_settings(tmp_path):
    """[model.learner] is kind plus the registered learner's constructor arguments; a name alone is that
    learner with its defaults; a higher layer naming another kind starts from that kind's defaults."""
    path = tmp_path / "streamrnn.toml"
    path.write_text('[model.learner]\nkind = "bptt"\nh = 20\nh_prime = 5\n')
    assert load(path, environ={}).model.learner.build() == TruncatedBPTT(20, 5)
    assert load(path, environ={}, overrides={"model.learner.h": "30"}).model.learner.build() == TruncatedBPTT(30, 5)
    assert load(path, environ={}, overrides={"model.learner": "rtrl"}).model.learner.build() == RTRL()
    assert load(path, environ={"STREAMRNN_MODEL_LEARNER": "bptt"}).model.learner.build() == TruncatedBPTT(20, 5)
    args = parser().parse_args(["--learner", "bptt", "--set", "model.learner.h=8"])
    assert load(environ={}, overrides=overrides(args)).model.learner.build() == TruncatedBPTT(8)
    dumped = load(path, environ={}).model_dump(mode="json")["model"]["learner"]
    assert dumped == {"kind": "bptt", "h": 20, "h_prime": 5}  # what --print-config shows
    assert set(names.LEARNERS) == {name for name, cls in REGISTRY.items() if not cls.epochwise} >= {"rtrl", "bptt"}
    assert "epochwise" in REGISTRY and "epochwise" not in names.LEARNERS


def test_bad_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nunits = 3")
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load(path, environ={})
    path.write_text("units = 3\n")
    with pytest.raises(ConfigError, match="must be a \\[section\\] table"):
        load(path, environ={})


def test_flags_become_settings():
    args = parser().parse_args(["--tcp", "127.0.0.1:1", "--tcp", "127.0.0.1:2", "--no-stdin", "--units", "4",
                                "--set", "model.seed=7", "--no-metrics"])
    config = load(environ={}, overrides=overrides(args))
    assert config.sources.tcp == ["127.0.0.1:1", "127.0.0.1:2"] and not config.sources.stdin
    assert (config.model.units, config.model.seed, config.metrics.enabled) == (4, 7, False)


@pytest.mark.parametrize("name", sorted(names.CELLS))
def test_every_cell_learner_loss_and_optimiser_by_name(name):
    for learner in names.LEARNERS:
        for optimizer in names.OPTIMIZERS:
            for schedule in names.SCHEDULES:
                overrides = {"model.cell": name, "model.learner": learner, "model.optimizer": optimizer,
                             "model.schedule": schedule, "model.weight_decay": "0.001"}
                if learner == "snap1" and name not in ("elman", "leaky"):  # defined for dense layers only
                    with pytest.raises(ConfigError, match=f"invalid setting model: SnAp-1 .* {name.upper()}"):
                        load(environ={}, overrides=overrides)  # refused when the settings load, by name
                    continue
                config = load(environ={}, overrides=overrides)
                model = names.ModelTemplate(config.model).build(2, 1)
                assert model.step([0.1, 0.2], [0.3]).loss is not None
    for loss, readout in (("squared", "identity"), ("logloss", "sigmoid"), ("crossentropy", "softmax")):
        config = load(environ={}, overrides={"model.loss": loss, "model.readout": readout, "model.outputs": "2"})
        assert names.ModelTemplate(config.model).build(1, 2).loss.name == loss


def test_the_kernels_setting_turns_the_compiled_step_off_for_the_process(monkeypatch):
    from streamrnn import kernels

    monkeypatch.setenv(kernels.ENV, "1")  # restored after the test: the setting acts on the whole process
    on = names.ModelTemplate(load(environ={}, overrides={}).model)
    assert on.build(2, 1)._kernel is not None or not kernels.AVAILABLE
    off = names.ModelTemplate(load(environ={}, overrides={"model.kernels": "false"}).model)
    assert off.build(2, 1)._kernel is None and not kernels.enabled()


def test_the_library_kernel_switch_in_the_environment_is_not_a_setting():
    """STREAMRNN_KERNELS is the library's process-wide switch: the daemon starts with it set."""
    config = load(environ={"STREAMRNN_KERNELS": "0", "STREAMRNN_MODEL_UNITS": "8"}, overrides={})
    assert config.model.units == 8 and config.model.kernels is True


def test_a_password_in_the_redis_url_stays_out_of_messages_and_printed_settings(monkeypatch, capsys):
    from streamrnn_service.redis_log import RedisUnreachable, connect, redacted
    from streamrnn_service.serve import main

    assert redacted("redis://:s3cret-pass@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redacted("rediss://user:p%40ss@h/1") == "rediss://user:***@h/1"
    assert redacted("redis://redis:6379/0") == "redis://redis:6379/0" and redacted("unix:///r.sock") == "unix:///r.sock"
    assert redacted("unix:///r.sock?db=0&password=s3cret-pass") == "unix:///r.sock?db=0&password=***"
    with pytest.raises(ConfigError) as bad:  # a mistyped scheme: the message names the URL, not its password
        load(environ={"STREAMRNN_REDIS_URL": "http://:s3cret-pass@redis:6379/0", "STREAMRNN_SOURCES_STDIN": "false"})
    assert "s3cret-pass" not in str(bad.value) and "http://:***@redis:6379/0" in str(bad.value)
    with pytest.raises(RedisUnreachable) as err:  # nothing listens on port 1
        connect("redis://:s3cret-pass@127.0.0.1:1/0", timeout=0.5)
    assert "s3cret-pass" not in str(err.value) and "redis://:***@127.0.0.1:1/0" in str(err.value)
    for name in [n for n in __import__("os").environ if n.startswith("STREAMRNN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STREAMRNN_REDIS_URL", "redis://:s3cret-pass@redis:6379/0")
    assert main(["--no-stdin", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "s3cret-pass" not in printed and '"url": "redis://:***@redis:6379/0"' in printed
    kept = load(environ={"STREAMRNN_REDIS_URL": "redis://:s3cret-pass@redis:6379/0", "STREAMRNN_SOURCES_STDIN": "false"})
    assert kept.redis.url == "redis://:s3cret-pass@redis:6379/0"  # the settings themselves keep it
