"""Lineage files: deltas and full snapshots round-trip, a delta's size follows the churn, and a
damaged or forged file is refused before it allocates more than its own bytes or the bound allow."""

import hashlib
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from raysparse.sparsity import lineage
from raysparse.sparsity.lineage import DELTA, FULL, FULL_EVERY, LineageEncoder, decode, encode_delta, encode_full
from raysparse.sparsity.masks import masks_hash, pack_masks, unpack_masks


def random_masks(seed=0, density=0.1, shapes=(("conv", (8, 1, 3, 3)), ("fc", (50, 40)))):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(shape, generator=g) < density for name, shape in shapes}


def flipped(masks, fraction, seed=1):
    """``masks`` with ``fraction`` of all positions (over every layer) flipped."""
    flat = torch.cat([m.flatten() for m in masks.values()])
    g = torch.Generator().manual_seed(seed)
    flat[torch.randperm(flat.numel(), generator=g)[: int(fraction * flat.numel())]] ^= True
    out, offset = {}, 0
    for name, mask in masks.items():
        out[name] = flat[offset : offset + mask.numel()].reshape(mask.shape)
        offset += mask.numel()
    return out


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 1.0])  # no change, a little, a lot, every position
def test_a_delta_rebuilds_the_masks_exactly(fraction):
    parent = random_masks()
    child = flipped(parent, fraction)
    blob = encode_delta(pack_masks(child), pack_masks(parent))
    assert lineage.encoding_of(blob) == DELTA and blob.startswith(lineage.MAGIC)
    assert lineage.delta_parent_hash(blob) == masks_hash(parent)
    rebuilt = unpack_masks(decode(blob, pack_masks(parent)))
    assert masks_hash(rebuilt) == masks_hash(child)
    assert all(torch.equal(rebuilt[n], child[n]) for n in child)
    assert lineage.changed_indices(pack_masks(child), pack_masks(parent)).size == int(fraction * (72 + 2000))


def test_full_snapshots_and_old_files_decode_to_the_packed_masks():
    packed = pack_masks(random_masks())
    assert lineage.encoding_of(encode_full(packed)) == FULL and decode(encode_full(packed)) == packed
    assert lineage.encoding_of(packed) == FULL and decode(packed) == packed  # a file from before deltas


def test_a_delta_refuses_the_wrong_parent_a_missing_one_and_other_shapes():
    parent, other = random_masks(seed=0), random_masks(seed=5)
    blob = encode_delta(pack_masks(flipped(parent, 0.1)), pack_masks(parent))
    with pytest.raises(ValueError, match=f"applies to masks {masks_hash(parent)[:12]}"):
        decode(blob, pack_masks(other))
    with pytest.raises(ValueError, match="needs the packed masks of its parent"):
        decode(blob)
    smaller = random_masks(shapes=(("conv", (8, 1, 3, 3)),))
    with pytest.raises(ValueError, match="same layers and shapes"):
        encode_delta(pack_masks(smaller), pack_masks(parent))


def test_a_future_format_is_told_apart():
    blob = bytearray(encode_full(pack_masks(random_masks())))
    blob[len(lineage.MAGIC)] = lineage.VERSION + 1
    with pytest.raises(ValueError, match=f"version {lineage.VERSION + 1}.*reads version {lineage.VERSION}"):
        decode(bytes(blob))


def test_varints_round_trip_at_the_byte_boundaries():
    values = np.array([0, 1, 127, 128, 16383, 16384, 2**35 + 7, 2**64 - 1], dtype=np.uint64)
    encoded = lineage.varints(values)
    assert len(encoded) == 1 + 1 + 1 + 2 + 2 + 3 + 6 + 10
    assert np.array_equal(lineage.from_varints(encoded), values)
    assert lineage.from_varints(b"").size == 0
    with pytest.raises(ValueError, match="truncated"):
        lineage.from_varints(encoded[:-1])


def test_one_percent_churn_of_a_million_weights_costs_at_most_a_tenth_of_a_bit_per_weight():
    g = torch.Generator().manual_seed(0)
    parent = {"fc": torch.rand(1000, 1000, generator=g) < 0.1}
    child = flipped(parent, 0.01)
    blob = encode_delta(pack_masks(child), pack_masks(parent))
    assert len(blob) * 8 / 1_000_000 <= 0.1  # a property of the encoding: about 0.09 here
    assert decode(blob, pack_masks(parent)) == pack_masks(child)


def test_the_encoder_writes_a_full_snapshot_every_k_rows_after_a_restart_and_when_asked():
    encoder, masks, kinds = LineageEncoder(), random_masks(), []
    for i in range(FULL_EVERY + 2):
        masks = flipped(masks, 0.001, seed=i)
        kinds.append(encoder.encode(pack_masks(masks)).encoding)
    assert kinds == [FULL] + [DELTA] * (FULL_EVERY - 1) + [FULL, DELTA]
    encoder.restart()  # a resume: the next row's parent is not the previous row
    assert encoder.encode(pack_masks(masks)).encoding == FULL
    assert encoder.encode(pack_masks(masks)).encoding == DELTA
    assert encoder.encode(pack_masks(masks), full=True).encoding == FULL
    other_shapes = random_masks(shapes=(("fc", (5, 5)),))
    assert encoder.encode(pack_masks(other_shapes)).encoding == FULL  # a compacted network


def test_the_encoder_writes_a_full_snapshot_when_a_delta_would_not_be_smaller():
    encoder, masks = LineageEncoder(), random_masks(density=0.5)
    encoder.encode(pack_masks(masks))
    assert encoder.encode(pack_masks(flipped(masks, 0.5))).encoding == FULL


def test_the_encoder_refuses_a_period_below_one():
    with pytest.raises(ValueError, match="full_every=0"):
        LineageEncoder(full_every=0)


def test_masks_decode_with_a_bound_of_exactly_their_weights_and_not_one_less():
    masks = random_masks()  # 72 + 2000 weights
    parent, child = pack_masks(masks), pack_masks(flipped(masks, 0.01))
    assert lineage.packed_weights(parent) == 2072
    assert decode(encode_full(parent), max_weights=2072) == parent and decode(parent, max_weights=2072) == parent
    assert decode(encode_delta(child, parent), parent, max_weights=2072) == child
    refused = r"^the header claims 2,072 weights, more than the run's masks have \(2,071\)$"
    for blob in (encode_full(parent), parent):
        with pytest.raises(ValueError, match=refused):
            decode(blob, max_weights=2071)


@pytest.mark.parametrize(("header", "bits", "expected"), [
    (b'{"names": ["fc"], "shapes": [[100000, 100000]]}', b"",
     r"claims 10,000,000,000 weights \(1,250,000,000 bytes of bits\), but 0 bytes follow it: truncated or forged"),
    (b'{"names": ["fc"], "shapes": [[4, 4]]}', b"\x00" * 3, r"claims 16 weights \(2 bytes of bits\), but 3 bytes"),
    (b'{"names": ["fc"], "shapes": [[-4, 4]]}', b"", "not packed masks"),
    (b'{"names": ["fc", "x"], "shapes": [[4]]}', b"", "not packed masks"),
    (b"\xff\xfe", b"", "not packed masks"),
    (b"[1, 2]", b"", "not packed masks"),
], ids=["claims_more_than_follows", "more_bits_than_claimed", "negative_dim", "names_without_shapes", "not_utf8",
        "not_an_object"])
def test_packed_masks_are_checked_against_their_own_bytes_before_anything_is_allocated(header, bits, expected):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=expected):
            decode(header + b"\n" + bits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_zlib_stream_inflating_past_the_bound_is_refused_having_inflated_little():
    header = b'{"names": ["fc"], "shapes": [[268435456]]}\n'  # 2**28 weights: consistent, 32 MiB of bits
    bomb = lineage.MAGIC + bytes([lineage.VERSION]) + b"F" + zlib.compress(header + bytes(32 << 20), 9)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"^its zlib stream inflates past [\d,]+ bytes, more than the run's masks"):
            decode(bomb, max_weights=2072)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(bomb) < 64_000 and peak < lineage.MAX_HEADER_BYTES + (4 << 20)


def test_a_truncated_file_says_so_and_names_no_hash():
    parent = pack_masks(random_masks())
    blob = encode_delta(pack_masks(flipped(random_masks(), 0.01)), parent)
    for kept, expected in [(4, "truncated: 4 bytes, shorter than the 6-byte start"),
                           (20, "truncated delta: 20 bytes, shorter than its 38-byte start"),
                           (len(blob) - 2, "truncated: its zlib stream ends early")]:
        with pytest.raises(ValueError, match=expected) as raised:
            decode(blob[:kept], parent)
        assert masks_hash(unpack_masks(parent))[:12] not in str(raised.value)  # once: "applies to masks X, not to X"
    with pytest.raises(ValueError, match="truncated: its zlib stream ends early"):
        decode(encode_full(parent)[:-2])


def test_a_delta_whose_positions_run_past_its_parent_is_refused_even_where_the_sum_would_wrap():
    parent = pack_masks(random_masks())
    start = lineage.MAGIC + bytes([lineage.VERSION]) + b"D" + hashlib.sha256(parent).digest()
    for gaps in ([2072], [2**64 - 1, 5], [2**63, 2**63, 3]):  # the last two wrap a uint64 sum back inside
        with pytest.raises(ValueError, match="is outside the parent's 2072 weights"):
            decode(start + zlib.compress(lineage.varints(np.array(gaps, dtype=np.uint64))), parent)
