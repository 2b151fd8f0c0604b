"""The [wyoming] table and the remote-engine keys: bad values are errors that name the key."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from voice.config import from_tables


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"stt": {"engine": "wyoming"}}, r"stt.engine = 'wyoming' needs stt.uri"),
        ({"tts": {"engine": "wyoming", "uri": "10.0.0.2:10200"}}, r"tts.uri = .* expected tcp://"),
        ({"stt": {"engine": "cloud"}}, "stt.engine must be one of"),
        ({"stt": {"fallback": "maybe"}}, "stt.fallback must be one of"),
        ({"tts": {"timeout_s": 0}}, "tts.timeout_s must be 0.1 to 600"),
        ({"wyoming": {"uri": "http://127.0.0.1:10700"}}, "wyoming.uri = .* expected tcp://"),
        ({"wyoming": {"uri": "tcp://127.0.0.1:99999"}}, "wyoming.uri = .* not a valid address"),
        ({"wyoming": {"uri": "tcp://127.0.0.1:10700/asr"}}, "wyoming.uri = .* expected tcp://"),
        ({"stt": {"engine": "wyoming", "uri": "tcp://h:1?x=1"}}, "stt.uri = .* expected tcp://"),
        ({"wyoming": {"uri": "unix:///" + "x" * 200}}, "longer than 107 bytes"),
        ({"wyoming": {"uri": "unix://tmp/va.sock"}}, "absolute path .* unix:///tmp/va.sock"),
        ({"tts": {"engine": "wyoming", "uri": "unix:run/p.sock"}}, "e.g. unix:///run/p.sock"),
        ({"wyoming": {"programs": ["asr", "wake"]}}, "wyoming.programs must list some of"),
        ({"wyoming": {"programs": []}}, "wyoming.programs must list some of"),
        ({"wyoming": {"room_keys": []}}, "wyoming.room_keys must list context keys"),
        ({"wyoming": {"default_room": "../up"}}, "wyoming.default_room: room id"),
        ({"wyoming": {"max_payload_bytes": 10**9}}, "wyoming.max_payload_bytes must be 1024 to"),
        ({"wyoming": {"client_timeout_s": 0}}, "wyoming.client_timeout_s must be 0.1 to 3600"),
        ({"wyoming": {"listen": True}}, "unknown key wyoming.listen"),
    ],
)
def test_bad_values_name_the_key(tables: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_tables(tables)


def test_remote_engines_and_a_unix_socket_are_accepted() -> None:
    config = from_tables(
        {
            "stt": {"engine": "wyoming", "uri": "tcp://192.168.1.20:10300", "fallback": "eager"},
            "tts": {"engine": "wyoming", "uri": "unix:///run/piper.sock"},
            "wyoming": {"uri": "unix:///tmp/va.sock", "programs": ["handle"]},
        }
    )
    assert config.stt.uri == "tcp://192.168.1.20:10300" and config.tts.fallback == "lazy"
    assert config.wyoming.programs == ("handle",)
