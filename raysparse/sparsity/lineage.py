"""Mask lineage files whose size grows with churn, not with the model.

A mask update is stored as the flat positions that changed against its parent (sorted, each
gap as a varint, zlib), with a full snapshot every ``FULL_EVERY`` updates so that rebuilding one
step reads at most that many files. Both kinds start with ``MAGIC`` and a version byte, so a
later format can be told apart; a file without it is today's ``pack_masks`` snapshot (runs
logged before deltas existed). Everything works on packed masks (``pack_masks`` bytes): what a
``MaskEvent`` carries and what ``masks_hash`` hashes.

    full:  MAGIC | VERSION | b"F" | zlib(pack_masks bytes)
    delta: MAGIC | VERSION | b"D" | sha256 digest of the parent's packed masks (32 bytes)
           | zlib(varint(first index), varint(gap - 1), ...)

A file is read as possibly damaged or forged: every size in it is checked against the bytes that
follow before anything is allocated, and ``max_weights`` (what the run's own model holds) bounds
what a header may claim and what a zlib stream may inflate to.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"RSML"  # raysparse mask lineage
VERSION = 1
FULL, DELTA = "full", "delta"
# a full snapshot every 16 updates: rebuilding any step reads at most 16 files, and the
# snapshots cost 1/16 of logging every update whole (the deltas add what churned)
FULL_EVERY = 16
_KINDS = {b"F": FULL, b"D": DELTA}
_PREFIX = len(MAGIC) + 2
_DIGEST = 32
# a packed header lists the layers' names and shapes: ~60 bytes a layer, so 1 MiB is ~16k layers
# (a 70B-parameter LLM has ~600); a larger one is damage, not a model
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class Encoded:
    """One lineage file: ``encoding`` (full or delta) and its bytes."""

    encoding: str
    blob: bytes


def encode_full(packed: bytes) -> bytes:
    # level 6: 1-2% larger than 9 on a 1 M-weight mask here, 5x faster (the encoder compresses
    # every update's snapshot to see whether its delta is smaller)
    return MAGIC + bytes([VERSION]) + b"F" + zlib.compress(packed, 6)


def encode_delta(packed: bytes, parent: bytes) -> bytes:
    """``packed`` as the positions that differ from ``parent`` (same layers and shapes)."""
    indices = changed_indices(packed, parent)
    gaps = np.diff(indices, prepend=-1) - 1  # >= 0: positions are sorted and unique
    digest = hashlib.sha256(parent).digest()
    return MAGIC + bytes([VERSION]) + b"D" + digest + zlib.compress(varints(gaps), 9)


def encoding_of(blob: bytes) -> str:
    """``full`` or ``delta``; a file without the magic is an old full snapshot."""
    if not blob.startswith(MAGIC):
        return FULL
    if len(blob) < _PREFIX:
        raise ValueError(f"truncated: {len(blob)} bytes, shorter than the {_PREFIX}-byte start of a lineage file")
    version, kind = blob[len(MAGIC)], blob[len(MAGIC) + 1 : _PREFIX]
    if version != VERSION or kind not in _KINDS:
        raise ValueError(f"mask lineage file of version {version}, kind {kind!r}: this raysparse reads version "
                         f"{VERSION}, kinds {sorted(k.decode() for k in _KINDS)}")
    return _KINDS[kind]


def delta_parent_hash(blob: bytes) -> str:
    """The ``masks_hash`` of the masks a delta applies to."""
    return blob[_PREFIX : _PREFIX + _DIGEST].hex()


def decode(blob: bytes, parent: bytes | None = None, *, max_weights: int | None = None) -> bytes:
    """The packed masks of a lineage file; a delta needs its ``parent``'s packed masks (checked
    already: a delta changes bits, not sizes). ``max_weights``: the most weights the masks may
    have; a file claiming more, or a stream inflating past them, is refused before allocating."""
    encoding = encoding_of(blob)
    if encoding == FULL:
        packed = blob if not blob.startswith(MAGIC) else _inflate(blob[_PREFIX:], _packed_limit(max_weights))
        packed_weights(packed, max_weights)
        return packed
    if parent is None:
        raise ValueError("a delta file needs the packed masks of its parent")
    if len(blob) < _PREFIX + _DIGEST:  # a short digest's hex could look like the parent's own hash
        raise ValueError(f"truncated delta: {len(blob)} bytes, shorter than its {_PREFIX + _DIGEST}-byte start "
                         "(which names the masks it applies to)")
    if hashlib.sha256(parent).hexdigest() != delta_parent_hash(blob):
        raise ValueError(f"this delta applies to masks {delta_parent_hash(blob)[:12]}, "
                         f"not to {hashlib.sha256(parent).hexdigest()[:12]}")
    header, bits = _split(parent)
    total = packed_weights(parent)
    # each gap g takes at most g + 1 bytes and covers g + 1 positions: an honest stream is at most
    # one byte a weight
    gaps = from_varints(_inflate(blob[_PREFIX + _DIGEST :], total))
    # the last position (the gaps' sum) in floats: exact below 2**53, and a forged gap near 2**64
    # cannot wrap it as it would an integer sum
    end = float(gaps.sum(dtype=np.float64)) + gaps.size
    if end > total:
        raise ValueError(f"delta position {end - 1:.0f} is outside the parent's {total} weights")
    indices = np.cumsum(gaps + np.uint64(1)) - np.uint64(1)
    flat = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=total)
    flat[indices] ^= 1
    return header + b"\n" + np.packbits(flat).tobytes()


def packed_weights(packed: bytes, max_weights: int | None = None) -> int:
    """The number of weights packed masks hold, checked: a header of names and shapes, a total of
    at most ``max_weights``, and exactly the bytes that total needs after it. A ValueError names
    what is wrong; nothing the size of the claimed total is allocated."""
    header, newline, bits = packed.partition(b"\n")
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"a mask header of over {MAX_HEADER_BYTES} bytes; the names and shapes of a model take less")
    try:
        meta = json.loads(header)
        names, shapes = meta["names"], meta["shapes"]
        valid = (isinstance(names, list) and isinstance(shapes, list) and len(names) == len(shapes)
                 and all(isinstance(n, str) for n in names)
                 and all(isinstance(s, list) and all(type(d) is int and d >= 0 for d in s) for s in shapes))
    except (ValueError, TypeError, KeyError):
        valid = False
    if not newline or not valid:
        raise ValueError("not packed masks: the first line is not a JSON header of layer names and shapes")
    total = sum(int(np.prod(shape, dtype=object)) for shape in shapes)  # python ints: a forged shape cannot wrap
    if max_weights is not None and total > max_weights:
        raise ValueError(f"the header claims {total:,} weights, more than the run's masks have ({max_weights:,})")
    if len(bits) != (total + 7) // 8:
        raise ValueError(f"the header claims {total:,} weights ({(total + 7) // 8:,} bytes of bits), "
                         f"but {len(bits):,} bytes follow it: truncated or forged")
    return total


def _packed_limit(max_weights: int | None) -> int | None:
    return None if max_weights is None else MAX_HEADER_BYTES + 1 + (max_weights + 7) // 8


def _inflate(data: bytes, limit: int | None) -> bytes:
    """zlib ``data`` inflated to at most ``limit`` bytes: a stream inflating past it is refused
    having allocated ``limit``, not what it would inflate to."""
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(data, 0 if limit is None else limit + 1)
    except zlib.error as err:
        raise ValueError(f"a damaged zlib stream ({err})") from None
    if limit is not None and len(out) > limit:
        raise ValueError(f"its zlib stream inflates past {limit:,} bytes, more than the run's masks take")
    if not stream.eof:
        raise ValueError("truncated: its zlib stream ends early")
    return out


def changed_indices(packed: bytes, parent: bytes) -> np.ndarray:
    """Sorted flat positions (over all layers, in order) where two packed mask sets differ."""
    header, bits = _split(packed)
    parent_header, parent_bits = _split(parent)
    if header != parent_header:
        raise ValueError("a delta needs the same layers and shapes as its parent")
    diff = np.bitwise_xor(np.frombuffer(bits, dtype=np.uint8), np.frombuffer(parent_bits, dtype=np.uint8))
    return np.flatnonzero(np.unpackbits(diff, count=_total(header))).astype(np.uint64)


class LineageEncoder:
    """Chooses each row's encoding: a delta on the previous row, or a full snapshot on the first
    row, every ``full_every`` rows, after ``restart()`` (the next row's parent is not the
    previous row: a resume, an exploit), when layers or shapes changed, when asked (the run's
    end), and whenever the delta would not be smaller."""

    def __init__(self, full_every: int = FULL_EVERY):
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, but got full_every={full_every}")
        self.full_every = full_every
        self._parent: bytes | None = None
        self._since_full = 0

    def restart(self) -> None:
        self._parent = None

    def encode(self, packed: bytes, *, full: bool = False) -> Encoded:
        parent, self._parent = self._parent, packed
        if not full and parent is not None and self._since_full + 1 < self.full_every:
            if _split(packed)[0] == _split(parent)[0]:
                delta = encode_delta(packed, parent)
                whole = encode_full(packed)
                if len(delta) < len(whole):
                    self._since_full += 1
                    return Encoded(DELTA, delta)
                self._since_full = 0
                return Encoded(FULL, whole)
        self._since_full = 0
        return Encoded(FULL, encode_full(packed))


def varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, the high bit set on all but a value's last."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size == 0:
        return b""
    lengths = np.ones(values.size, dtype=np.int64)
    for k in range(1, 10):
        lengths += values >= np.uint64(1 << (7 * k))
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for k in range(int(lengths.max())):
        here = lengths > k
        byte = (values[here] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (lengths[here] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[here] + k] = (byte | more).astype(np.uint8)
    return out.tobytes()


def from_varints(data: bytes) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if raw[-1] & 0x80:
        raise ValueError("truncated varint stream")
    last = (raw & 0x80) == 0
    value_of = np.concatenate([[0], np.cumsum(last)[:-1]])  # which value each byte belongs to
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(raw.size) - starts[value_of]
    values = np.zeros(int(last.sum()), dtype=np.uint64)
    for k in range(int(position.max()) + 1):
        here = position == k
        values[value_of[here]] |= (raw[here] & np.uint8(0x7F)).astype(np.uint64) << np.uint64(7 * k)
    return values


def _split(packed: bytes) -> tuple[bytes, bytes]:
    header, _, bits = packed.partition(b"\n")
    return header, bits


def _total(header: bytes) -> int:
    return sum(int(np.prod(shape)) for shape in json.loads(header)["shapes"])
