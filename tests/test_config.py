"""OLLAMA_HOST parsing (spec §15.1, every row of its table) and the settings table (§15)."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from pathlib import Path

import pytest

from mlx_ollama_bridge.config import (
    SETTINGS,
    HostAddress,
    Settings,
    parse_go_bool,
    parse_ollama_host,
)

# -- OLLAMA_HOST -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "scheme", "host", "port", "path", "shown"),
    [
        # the table of §15.1, row by row
        (None, "http", "127.0.0.1", 11434, "", "http://127.0.0.1:11434"),
        ("", "http", "127.0.0.1", 11434, "", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http", "0.0.0.0", 11434, "", "http://0.0.0.0:11434"),
        ("1.2.3.4:1234", "http", "1.2.3.4", 1234, "", "http://1.2.3.4:1234"),
        (":1234", "http", "", 1234, "", "http://:1234"),
        ("example.com", "http", "example.com", 11434, "", "http://example.com:11434"),
        ("[::1]", "http", "::1", 11434, "", "http://[::1]:11434"),
        ("::1", "http", "::1", 11434, "", "http://[::1]:11434"),
        ("[::]", "http", "::", 11434, "", "http://[::]:11434"),
        ("http://1.2.3.4", "http", "1.2.3.4", 80, "", "http://1.2.3.4:80"),
        ("https://1.2.3.4", "https", "1.2.3.4", 443, "", "https://1.2.3.4:443"),
        (
            "https://example.com/ollama",
            "https",
            "example.com",
            443,
            "/ollama",
            "https://example.com:443/ollama",
        ),
        (":66000", "http", "", 11434, "", "http://:11434"),
        # and the rules behind it
        ("ollama.com", "https", "ollama.com", 443, "", "https://ollama.com:443"),
        ("[::1]:8080", "http", "::1", 8080, "", "http://[::1]:8080"),
        ("http://[::1]", "http", "::1", 80, "", "http://[::1]:80"),
        ("https://example.com:8443", "https", "example.com", 8443, "", "https://example.com:8443"),
        ("example.com:abc", "http", "example.com", 11434, "", "http://example.com:11434"),
        ("example.com:-1", "http", "example.com", 11434, "", "http://example.com:11434"),
        ("example.com:+80", "http", "example.com", 80, "", "http://example.com:80"),
        ("localhost:0", "http", "localhost", 0, "", "http://localhost:0"),
        (":", "http", "", 11434, "", "http://:11434"),
        ("tcp://host", "tcp", "host", 11434, "", "tcp://host:11434"),
        ("  '127.0.0.1:11435'  ", "http", "127.0.0.1", 11435, "", "http://127.0.0.1:11435"),
        ('"0.0.0.0:80"', "http", "0.0.0.0", 80, "", "http://0.0.0.0:80"),
        ("0:0:0:0:0:0:0:1", "http", "::1", 11434, "", "http://[::1]:11434"),
        ("::ffff:1.2.3.4", "http", "1.2.3.4", 11434, "", "http://1.2.3.4:11434"),
        ("1.2.3.4/", "http", "1.2.3.4", 11434, "", "http://1.2.3.4:11434"),
    ],
)
def test_ollama_host(value, scheme, host, port, path, shown):
    address = parse_ollama_host(value)
    assert address == HostAddress(scheme, host, port, path)
    assert str(address) == shown


def test_invalid_port_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert parse_ollama_host(":66000").port == 11434
    assert "invalid port" in caplog.text


@pytest.mark.parametrize(
    ("value", "url", "bind", "loopback"),
    [
        ("", "http://127.0.0.1:11434", "127.0.0.1:11434", True),
        (":1234", "http://127.0.0.1:1234", "0.0.0.0:1234", False),
        ("0.0.0.0", "http://127.0.0.1:11434", "0.0.0.0:11434", False),
        ("[::1]", "http://[::1]:11434", "[::1]:11434", True),
        ("[::]:9", "http://[::1]:9", "[::]:9", False),
        ("localhost:8000", "http://localhost:8000", "localhost:8000", True),
        ("127.0.0.2", "http://127.0.0.2:11434", "127.0.0.2:11434", True),
        ("192.168.1.5", "http://192.168.1.5:11434", "192.168.1.5:11434", False),
        ("https://example.com/ollama", "https://example.com:443/ollama", "example.com:443", False),
    ],
)
def test_host_address_views(value, url, bind, loopback):
    address = parse_ollama_host(value)
    assert (address.url, address.bind, address.is_loopback) == (url, bind, loopback)


# -- the settings table ---------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A minimal environment whose home is tmp_path (nothing from the real one)."""
    return {"HOME": str(tmp_path)}


def test_the_table_is_read_off_the_dataclass_with_one_variable_each():
    names = [s.name for s in SETTINGS]
    assert names == [f.name for f in dataclasses.fields(Settings)]
    assert [s.default_for({"HOME": "/h"}) for s in SETTINGS if s.name == "threads"] == [16]
    assert Settings().threads == 16  # the same default, written once
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    assert all(s.help and s.env.startswith(("OLLAMA_", "MLX_BRIDGE_")) for s in SETTINGS)


def test_defaults(home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    settings = Settings.from_env(home)
    assert settings.host == HostAddress("http", "127.0.0.1", 11434, "")
    assert settings.models_dir == tmp_path / ".local/share/mlx-ollama-bridge/models"
    assert settings.config_dir == tmp_path / ".config/mlx-ollama-bridge"
    assert settings.keep_alive_s == 300.0
    assert settings.context_length == 4096
    assert settings.num_parallel == 0  # auto (engine/kv_memory.py)
    assert settings.max_queue == 512
    assert settings.max_loaded_models == 0
    assert settings.loaded_models_limit == 3
    assert settings.load_timeout_s == 300.0
    assert settings.debug is False
    assert settings.origins == ()
    assert settings.max_body_bytes == 64 * 1024 * 1024
    assert settings.threads == 16


def test_xdg_directories(home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    env = {**home, "XDG_DATA_HOME": str(tmp_path / "d"), "XDG_CONFIG_HOME": str(tmp_path / "c")}
    settings = Settings.from_env(env)
    assert settings.models_dir == tmp_path / "d/mlx-ollama-bridge/models"
    assert settings.config_dir == tmp_path / "c/mlx-ollama-bridge"


def test_macos_directories(home, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    settings = Settings.from_env(home)
    support = tmp_path / "Library/Application Support/mlx-ollama-bridge"
    assert settings.models_dir == support / "models"
    assert settings.config_dir == support


def test_every_variable_is_read(home, tmp_path):
    env = {
        **home,
        "OLLAMA_HOST": "0.0.0.0:8080",
        "MLX_BRIDGE_MODELS": str(tmp_path / "m"),
        "MLX_BRIDGE_CONFIG_DIR": str(tmp_path / "c"),
        "OLLAMA_KEEP_ALIVE": "10m",
        "OLLAMA_CONTEXT_LENGTH": "8192",
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_MAX_QUEUE": "10",
        "OLLAMA_MAX_LOADED_MODELS": "2",
        "OLLAMA_LOAD_TIMEOUT": "90",
        "OLLAMA_DEBUG": "1",
        "OLLAMA_ORIGINS": "https://a.example, chrome-extension://*,,",
        "MLX_BRIDGE_MAX_BODY_BYTES": "1024",
        "MLX_BRIDGE_THREADS": "8",
    }
    settings = Settings.from_env(env)
    assert settings == Settings(
        host=HostAddress("http", "0.0.0.0", 8080, ""),
        models_dir=tmp_path / "m",
        config_dir=tmp_path / "c",
        keep_alive_s=600.0,
        context_length=8192,
        num_parallel=4,
        max_queue=10,
        max_loaded_models=2,
        load_timeout_s=90.0,
        debug=True,
        origins=("https://a.example", "chrome-extension://*"),
        max_body_bytes=1024,
        threads=8,
    )


def test_values_are_trimmed_of_spaces_and_quotes(home):
    env = {**home, "OLLAMA_NUM_PARALLEL": ' "3" ', "OLLAMA_KEEP_ALIVE": "'-1'"}
    settings = Settings.from_env(env)
    assert settings.num_parallel == 3
    assert settings.keep_alive_s == math.inf


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("OLLAMA_KEEP_ALIVE", "3600", "keep_alive_s", 3600.0),
        ("OLLAMA_KEEP_ALIVE", "-1", "keep_alive_s", math.inf),
        ("OLLAMA_KEEP_ALIVE", "0", "keep_alive_s", 0.0),
        ("OLLAMA_KEEP_ALIVE", "1h", "keep_alive_s", 3600.0),
        ("OLLAMA_KEEP_ALIVE", "nonsense", "keep_alive_s", 300.0),
        ("OLLAMA_LOAD_TIMEOUT", "0", "load_timeout_s", math.inf),
        ("OLLAMA_LOAD_TIMEOUT", "-5m", "load_timeout_s", math.inf),
        ("OLLAMA_LOAD_TIMEOUT", "2m", "load_timeout_s", 120.0),
        ("OLLAMA_MAX_LOADED_MODELS", "0", "max_loaded_models", 0),
        ("OLLAMA_NUM_PARALLEL", "0", "num_parallel", 0),  # 0 = auto (engine/kv_memory.py)
    ],
)
def test_duration_and_auto_values(home, variable, value, field, expected):
    assert getattr(Settings.from_env({**home, variable: value}), field) == expected


@pytest.mark.parametrize(
    ("variable", "value", "field", "default"),
    [
        ("OLLAMA_NUM_PARALLEL", "two", "num_parallel", 0),
        ("OLLAMA_NUM_PARALLEL", "-1", "num_parallel", 0),
        ("OLLAMA_NUM_PARALLEL", "+2", "num_parallel", 0),  # ParseUint takes no sign
        ("OLLAMA_MAX_QUEUE", "1.5", "max_queue", 512),
        ("OLLAMA_MAX_QUEUE", "0", "max_queue", 512),
        ("OLLAMA_CONTEXT_LENGTH", "4k", "context_length", 4096),
        ("OLLAMA_MAX_LOADED_MODELS", "x", "max_loaded_models", 0),
        ("OLLAMA_LOAD_TIMEOUT", "soon", "load_timeout_s", 300.0),
        ("MLX_BRIDGE_THREADS", "many", "threads", 16),
        ("MLX_BRIDGE_MAX_BODY_BYTES", "64MiB", "max_body_bytes", 64 * 1024 * 1024),
    ],
)
def test_bad_numbers_fall_back_to_the_default_with_a_warning(
    home, caplog, variable, value, field, default
):
    with caplog.at_level(logging.WARNING):
        settings = Settings.from_env({**home, variable: value})
    assert getattr(settings, field) == default
    assert variable in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("t", True),
        ("T", True),
        ("TRUE", True),
        ("true", True),
        ("True", True),
        ("0", False),
        ("f", False),
        ("F", False),
        ("FALSE", False),
        ("false", False),
        ("False", False),
        ("2", True),  # Ollama: trace level; unparsable non-empty counts as true
        ("yes", True),
        ("off", True),
    ],
)
def test_go_parse_bool_semantics(home, value, expected):
    assert parse_go_bool(value) is expected
    assert Settings.from_env({**home, "OLLAMA_DEBUG": value}).debug is expected


def test_empty_values_mean_unset(home):
    assert Settings.from_env({**home, "OLLAMA_DEBUG": "", "OLLAMA_HOST": "  "}) == (
        Settings.from_env(home)
    )


def test_config_file_sits_between_env_and_defaults(home, tmp_path):
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(
        'keep_alive_s = "10m"\n'
        "context_length = 8192\n"
        "num_parallel = 2\n"
        "debug = true\n"
        'origins = ["https://a.example", "https://b.example"]\n'
        'host = ":9999"\n'
        "unknown_knob = 1\n"
    )
    env = {**home, "MLX_BRIDGE_CONFIG_DIR": str(config_dir), "OLLAMA_NUM_PARALLEL": "3"}
    settings = Settings.from_env(env)
    assert settings.keep_alive_s == 600.0
    assert settings.context_length == 8192
    assert settings.num_parallel == 3  # the environment wins over the file
    assert settings.debug is True
    assert settings.origins == ("https://a.example", "https://b.example")
    assert settings.host == HostAddress("http", "", 9999, "")
    assert settings.max_queue == 512  # neither: the default


def test_unreadable_config_file_is_ignored(home, tmp_path, caplog):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.toml").write_text("this is = not [toml")
    with caplog.at_level(logging.WARNING):
        settings = Settings.from_env({**home, "MLX_BRIDGE_CONFIG_DIR": str(tmp_path / "conf")})
    assert settings.context_length == 4096
    assert "config file" in caplog.text


def test_with_overrides(home):
    settings = Settings.from_env(home)
    changed = settings.with_overrides(threads=4, debug=True)
    assert (changed.threads, changed.debug) == (4, True)
    assert (settings.threads, settings.debug) == (16, False)
    with pytest.raises(TypeError):
        settings.with_overrides(no_such_setting=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.threads = 2  # type: ignore[misc]


def test_from_env_defaults_to_os_environ(monkeypatch, tmp_path):
    monkeypatch.setenv("OLLAMA_CONTEXT_LENGTH", "2048")
    monkeypatch.setenv("MLX_BRIDGE_CONFIG_DIR", str(tmp_path / "none"))
    assert Settings.from_env().context_length == 2048
