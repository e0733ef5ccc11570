"""Feast's online-store byte formats for StreamFlow's one entity (``user_id``, a STRING join key)
and its four value types, without importing Feast (``import feast`` costs the API ~10 s and
~80 MB at start-up).

* entity key, serialization v3 (``feast.infra.key_encoding_utils.serialize_entity_key``):
  ``<u32 1><u32 STRING=2><u32 len(name)><name><u32 STRING=2><u32 len(value)><value>``;
* ``ValueProto`` (``feast/protos/feast/types/Value.proto``): ``string_val`` field 2, ``int64_val``
  field 4 (varint, two's complement for negatives), ``double_val`` field 5 (fixed64 little-endian),
  ``bool_val`` field 7; an empty message is a missing value;
* Redis (``feast.infra.online_stores.redis``): one hash per entity, key = entity key + project,
  one field per feature named ``mmh3("{view}:{feature}")`` (4 little-endian bytes) holding the
  ValueProto, and ``_ts:{view}`` holding the event time as a ``google.protobuf.Timestamp``.

Tests prove every function equal to Feast's own (edge values included) so that Feast stays the
reader of record of what these readers and writers touch."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cache

from streamflow.core.data_model import ENTITY, FEATURE_VIEWS, FLAG_FEATURES, FLOAT_FEATURES, INT_FEATURES

OnlineValue = int | float | bool | str | None

_STRING = 2
_KEY_PREFIX = struct.pack("<III", 1, _STRING, len(ENTITY.encode())) + ENTITY.encode() + struct.pack("<I", _STRING)
KEY_PREFIX_LENGTH = len(_KEY_PREFIX) + 4  # the user id starts here
_LE4 = struct.Struct("<I")
_LE8D = struct.Struct("<d")


class CodecError(ValueError):
    """Bytes that are not what Feast writes for StreamFlow's entity and value types."""


def entity_key(user_id: str) -> bytes:
    """Feast's serialized entity key (v3) of one user."""
    raw = user_id.encode()
    return _KEY_PREFIX + _LE4.pack(len(raw)) + raw


def user_id_of(key: bytes) -> str:
    """The user id inside a serialized entity key (v3); CodecError for any other key."""
    if not key.startswith(_KEY_PREFIX) or len(key) < KEY_PREFIX_LENGTH:
        raise CodecError(f"not a {ENTITY} entity key (serialization v3): {key[:40]!r}")
    (n,) = _LE4.unpack_from(key, len(_KEY_PREFIX))
    if len(key) != KEY_PREFIX_LENGTH + n:
        raise CodecError(f"entity key length does not match its value: {key[:40]!r}")
    return key[KEY_PREFIX_LENGTH:].decode()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CodecError(f"truncated varint in {data[:40]!r}")
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def decode_value(data: bytes) -> OnlineValue:
    """A serialized ValueProto of type string, int64, double or bool → its Python value
    (None for an empty message), as ``feast_value_type_to_python_type`` returns it."""
    if not data:
        return None
    tag = data[0]
    if tag == 0x29 and len(data) == 9:  # double_val
        return float(_LE8D.unpack_from(data, 1)[0])
    if tag == 0x20:  # int64_val
        v, end = _varint(data, 1)
        if end == len(data):
            return v - (1 << 64) if v >= 1 << 63 else v
    elif tag == 0x38:  # bool_val
        v, end = _varint(data, 1)
        if end == len(data):
            return bool(v)
    elif tag == 0x12:  # string_val
        n, start = _varint(data, 1)
        if start + n == len(data):
            return data[start:].decode()
    raise CodecError(f"unsupported ValueProto bytes {data[:40]!r}")


def feature_kind(feature: str) -> str:
    if feature in INT_FEATURES:
        return "int"
    if feature in FLOAT_FEATURES:
        return "float"
    if feature in FLAG_FEATURES:
        return "bool"
    return "string"


def _encode_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_value(feature: str, v: OnlineValue) -> bytes:
    """The ValueProto bytes Feast writes for ``v`` of ``feature`` (empty for a missing value)."""
    if v is None:
        return b""
    kind = feature_kind(feature)
    if kind == "int":
        return b"\x20" + _encode_varint(int(v))
    if kind == "float":
        return b"\x29" + _LE8D.pack(float(v))
    if kind == "bool":
        return b"\x38\x01" if v else b"\x38\x00"
    raw = str(v).encode()
    return b"\x12" + _encode_varint(len(raw)) + raw


# ---- Redis layout ---------------------------------------------------------------------------
@cache
def redis_field(view: str, feature: str) -> bytes:
    """Feast's hash field of a feature: murmur3_32 of ``"{view}:{feature}"``, 4 bytes little-endian."""
    import mmh3

    return _LE4.pack(mmh3.hash(f"{view}:{feature}", signed=False))


def redis_ts_field(view: str) -> bytes:
    return f"_ts:{view}".encode()


def redis_key(user_id: str, project: str) -> bytes:
    return entity_key(user_id) + project.encode()


def redis_fields() -> list[tuple[str, str, bytes]]:
    """(view, feature, hash field) of the 14 features, in FEATURE_VIEWS order."""
    return [(view, f, redis_field(view, f)) for view, (_, feats) in FEATURE_VIEWS.items() for f in feats]


def timestamp_proto(ts: datetime) -> bytes:
    """``google.protobuf.Timestamp`` bytes of ``ts`` as Feast writes them (``FromDatetime``)."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    seconds = delta.days * 86400 + delta.seconds
    nanos = delta.microseconds * 1000
    out = b""
    if seconds:
        out += b"\x08" + _encode_varint(seconds)
    if nanos:
        out += b"\x10" + _encode_varint(nanos)
    return out


def decode_row(values: Sequence[bytes | None], features: Iterable[str]) -> dict[str, OnlineValue]:
    """Raw ValueProto bytes (None: absent) of ``features`` → their values."""
    return {f: (decode_value(v) if v else None) for f, v in zip(features, values, strict=True)}
