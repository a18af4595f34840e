"""Many keys' states as one byte array: how a checkpoint shard holds thousands of keys.

A key's state is a few dozen small named arrays (a 16-unit hybrid regressor
has about 60 of 1 to 300 numbers).  Written one array per member of an npz,
10,000 keys are 600,000 members, and the zip's per-member work and headers
cost more than the numbers.  Here a key's arrays are laid end to end in one
byte buffer instead, and their names, dtypes and shapes are said once per
*layout*: keys of one configuration share one.  A 1-D ``uint8`` array (a
nested JSON header) may differ in length from key to key; its length is kept
per key, so those keys still share a layout.  Every array starts on an
8-byte boundary.

    pack([(key, arrays, header), ...]) -> (data, table)    # table: JSON-able
    unpack(data, table) -> {key: (arrays, header)}         # arrays are views of data

On disk (a checkpoint's shard, an evicted key's file) both are compressed
with Zstandard, as Flink compresses its keyed-state snapshots: the numbers
themselves barely shrink (float64 mantissas are near random), but each key's
nested JSON header repeats its model's configuration, and level 1 runs at
about 500 MB/s, some 35 us for a 17 KB key, in the checkpoint writer:

    members(states) -> (arrays, header)      # for streamrnn.state.save: {"data", "table"}, {"codec": "zstd"}
    read_members(arrays, header) -> {key: (arrays, header)}   # also a file written uncompressed (no codec)

Byte for byte: unpacked arrays equal the packed ones in dtype, shape and bits.
"""

from __future__ import annotations

import json
import math

import numpy as np
import zstandard

#: every array starts at a multiple of 8 bytes, so the views unpack hands out are aligned
ALIGN = 8
#: how a file's members are compressed (its header's "codec"; files without one were written uncompressed)
CODEC = "zstd"
#: Zstandard's fastest level: the checkpoint writer's time is what the daemon's second core has to spare
LEVEL = 1
DATA, TABLE = "data", "table"


def members(states, codec: str | None = CODEC) -> tuple[dict[str, np.ndarray], dict]:
    """``pack``'s output as a file's members and header fields: compressed, or as they are (``codec=None``)."""
    data, table = pack(states)
    if codec is None:
        return {DATA: data}, {TABLE: table}
    if codec != CODEC:
        raise ValueError(f"codec {codec!r} is not one of None, {CODEC!r}")
    squeeze = zstandard.ZstdCompressor(level=LEVEL).compress  # one per call: a compressor is not thread-safe
    table_bytes = json.dumps(table, separators=(",", ":")).encode()
    return {DATA: _bytes(squeeze(data)), TABLE: _bytes(squeeze(table_bytes))}, {"codec": codec}


def read_members(arrays: dict, header: dict) -> dict[str, tuple[dict, dict]]:
    """Every key's (arrays, header) from a file's ``members`` and header; ValueError if they do not fit."""
    codec = header.get("codec")
    if codec is None:
        return unpack(arrays[DATA], header[TABLE])
    if codec != CODEC:
        raise ValueError(f"codec {codec!r} is not one this version reads ({CODEC!r})")
    expand = zstandard.ZstdDecompressor().decompress
    try:
        data = np.frombuffer(expand(np.ascontiguousarray(arrays[DATA])), dtype=np.uint8).copy()  # writable, aligned
        table = json.loads(expand(np.ascontiguousarray(arrays[TABLE])))
    except zstandard.ZstdError as err:
        raise ValueError(f"the compressed members do not expand: {err}") from None
    return unpack(data, table)


def _bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8)


def pack(states) -> tuple[np.ndarray, dict]:
    """One uint8 array holding every state's arrays, and the table that finds them again.

    ``states`` may be a generator: each state's arrays are copied into the buffer before the next state is
    asked for, so no more than one state's arrays need exist at a time (a checkpoint writer taking 10,000
    keys' snapshots one by one holds one, not all)."""
    layouts: dict[tuple, int] = {}
    rows = []
    buffer = bytearray()  # grown in place (the system remaps a large one rather than copying it)
    for key, arrays, header in states:
        layout, lengths, start = [], [], len(buffer)
        for name, a in arrays.items():
            size = a.nbytes
            if a.ndim == 1 and a.dtype.char == "B":  # a nested JSON header: its length is the key's own
                layout.append((name, a.dtype, None))
                lengths.append(size)
            else:
                layout.append((name, a.dtype, a.shape))
            buffer += a.tobytes()  # C order; for these small arrays cheaper than any view
            buffer += _PADDING[-size % ALIGN]
        index = layouts.setdefault(tuple(layout), len(layouts))
        rows.append([key, index, start, lengths, header])
    data = np.frombuffer(buffer, dtype=np.uint8)
    table = {"layouts": [[[name, dtype.str, None if shape is None else list(shape)] for name, dtype, shape in layout]
                         for layout in layouts], "keys": rows}
    return data, table


#: the zeros after an array of n bytes that bring the next to a multiple of ALIGN
_PADDING = [bytes(n) for n in range(ALIGN)]


def unpack(data: np.ndarray, table: dict) -> dict[str, tuple[dict, dict]]:
    """Every key's (arrays, header) from ``pack``'s output; ValueError if they do not fit together."""
    layouts = [[(name, np.dtype(dtype), None if shape is None else _shape(name, shape)) for name, dtype, shape in layout]
               for layout in table["layouts"]]
    out = {}
    for key, index, offset, lengths, header in table["keys"]:
        arrays, variable = {}, iter(lengths)
        for name, dtype, shape in layouts[index]:
            if shape is None:
                shape = _shape(name, (next(variable),))
            size = math.prod(shape) * dtype.itemsize  # Python ints: exact, and no numpy call per array
            if offset + size > data.shape[0]:
                raise ValueError(f"key {key!r}: array {name!r} runs past the end of the data")
            arrays[name] = data[offset: offset + size].view(dtype).reshape(shape)
            offset += size + (-size % ALIGN)
        out[key] = (arrays, header)
    return out


def _shape(name: str, dims) -> tuple[int, ...]:
    """A packed array's shape, checked once: whole numbers, none negative (ValueError otherwise)."""
    shape = tuple(dims)
    if not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"array {name!r}: shape {list(dims)!r} is not a list of whole numbers >= 0")
    return shape
