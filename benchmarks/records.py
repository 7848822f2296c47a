"""A consumed record as the encoder reads it, for the benchmarks that run without a broker."""

from __future__ import annotations


class Record:
    """Topic ``events``, partition 0, key ``k``, a fixed CreateTime; offset and value given."""

    __slots__ = ("_offset", "_value")

    def __init__(self, offset: int, value: bytes = b"{}") -> None:
        self._offset, self._value = offset, value

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_764_000_000_000)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None
