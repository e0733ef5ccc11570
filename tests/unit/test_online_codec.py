"""The Feast byte formats the API and the Redis writer use without importing Feast
(``streamflow.features.online_codec``) are Feast's own: entity keys, ValueProto bytes and their
decoded values, Redis keys, hash fields and timestamps — edge values included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from streamflow.core.data_model import ENTITY, FEATURE_VIEWS, FLAG_FEATURES, FLOAT_FEATURES, INT_FEATURES
from streamflow.features.online_codec import (
    CodecError,
    decode_value,
    encode_value,
    entity_key,
    redis_field,
    redis_key,
    redis_ts_field,
    timestamp_proto,
    user_id_of,
)
from streamflow.features.redis_writer import _encoder

IDS = ["7590-VHVEG", "é-1", "日本", "a" * 300, "x", ""]
INTS = [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21, 2**31, 2**62, 2**63 - 1, -1, -(2**40), -(2**63)]
FLOATS = [0.0, -0.0, 1.0, 29.85, 0.1 + 0.2, 1e-5, 123456.789, 1e16, 5e-324, 1.7976931348623157e308, -2.5,
          float("inf")]  # fmt: skip
STRINGS = ["", "DSL", "Fiber optic", "é", "日本語", "y" * 128, "z" * 20000]


def _key(uid: str) -> EntityKey:
    return EntityKey(join_keys=[ENTITY], entity_values=[Value(string_val=uid)])


@pytest.mark.parametrize("uid", IDS)
def test_entity_keys_and_redis_keys_are_feasts(uid: str) -> None:
    assert entity_key(uid) == serialize_entity_key(_key(uid), 3)
    assert user_id_of(entity_key(uid)) == uid
    assert redis_key(uid, "streamflow") == _redis_key("streamflow", _key(uid), 3)


def test_foreign_entity_keys_are_refused() -> None:
    other = serialize_entity_key(EntityKey(join_keys=["account"], entity_values=[Value(string_val="a")]), 3)
    with pytest.raises(CodecError):
        user_id_of(other)
    with pytest.raises(CodecError):
        user_id_of(entity_key("abc")[:-1])


def _cases() -> list[tuple[str, Value]]:
    return (
        [(INT_FEATURES[0], Value(int64_val=v)) for v in INTS]
        + [(FLOAT_FEATURES[0], Value(double_val=v)) for v in FLOATS]
        + [(FLAG_FEATURES[0], Value(bool_val=v)) for v in (True, False)]
        + [("net_service", Value(string_val=v)) for v in STRINGS]
        + [(f, Value()) for f in (INT_FEATURES[0], FLOAT_FEATURES[0], FLAG_FEATURES[0], "net_service")]
    )


@pytest.mark.parametrize(("feature", "proto"), _cases())
def test_values_encode_and_decode_as_feast(feature: str, proto: Value) -> None:
    raw = proto.SerializeToString()
    assert decode_value(raw) == feast_value_type_to_python_type(proto)
    py = feast_value_type_to_python_type(proto)
    assert encode_value(feature, py) == raw
    assert _encoder(feature)(py) == raw


def test_malformed_values_are_refused() -> None:
    for raw in (b"\x29\x00", b"\x20", b"\x12\x05ab", b"\x50\x01"):
        with pytest.raises(CodecError):
            decode_value(raw)


def test_redis_fields_and_timestamps_are_feasts() -> None:
    for view, (_, features) in FEATURE_VIEWS.items():
        assert redis_ts_field(view) == f"_ts:{view}".encode()
        for f in features:
            assert redis_field(view, f) == _mmh3(f"{view}:{f}")
    for ts in (datetime(2024, 2, 29, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC), datetime(2024, 1, 31, 12, 0, 0, 5)):
        t = Timestamp()
        t.FromDatetime(ts if ts.tzinfo else ts.replace(tzinfo=UTC))
        assert timestamp_proto(ts) == t.SerializeToString()
