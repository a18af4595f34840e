"""Many keys' states in one byte array: bit for bit back, aligned, one layout per configuration."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn_service import packing


def _state(rng, header_text: str) -> dict:
    return {
        "U": rng.normal(size=(3, 3)),
        "count": np.array(7, dtype=np.int64),
        "seen": np.array(True),
        "__header__": np.frombuffer(header_text.encode(), dtype=np.uint8),  # a nested JSON header: any length
        "odd": rng.normal(size=5).astype(np.float32),  # 20 bytes: the next array must still start aligned
        "ring": np.arange(4, dtype=np.int64)[::2],  # not contiguous
        "mask": np.array([True, False, True]),
    }


def test_states_come_back_bit_for_bit_with_their_headers():
    rng = np.random.default_rng(0)
    states = [("a", _state(rng, '{"x": 1}'), {"events": 3}), ("b", _state(rng, '{"longer": [1, 2, 3]}'), {"events": 9})]
    states[1][1]["U"][0, 0] = -0.0
    states[1][1]["U"][1, 1] = np.nan
    data, table = packing.pack(states)
    assert data.dtype == np.uint8 and data.ndim == 1
    got = packing.unpack(data, table)
    assert list(got) == ["a", "b"]
    for key, arrays, header in states:
        back, back_header = got[key]
        assert back_header == header and list(back) == list(arrays)
        for name, a in arrays.items():
            assert back[name].dtype == a.dtype and back[name].shape == a.shape
            assert back[name].tobytes() == np.ascontiguousarray(a).tobytes()  # bits: -0.0 and NaN included
            assert back[name].ctypes.data % packing.ALIGN == data.ctypes.data % packing.ALIGN


def test_a_generator_of_states_is_packed_one_state_at_a_time():
    """pack copies a state's arrays before it asks for the next: a writer may hand out one key's arrays at a
    time, in buffers it reuses (here overwritten with NaN as soon as the next state is asked for)."""
    rng = np.random.default_rng(3)
    states = [(f"k{i}", _state(rng, '{"i": %d}' % i), {"events": i}) for i in range(4)]
    want_data, want_table = packing.pack(states)

    def reused():
        for key, arrays, header in states:
            scratch = {name: a.copy() for name, a in arrays.items()}
            yield key, scratch, header
            for a in scratch.values():  # the next key's turn: this buffer is someone else's now
                a[...] = np.nan if a.dtype.kind == "f" else 0

    data, table = packing.pack(reused())
    assert table == want_table and data.tobytes() == want_data.tobytes()


def test_keys_of_one_configuration_share_a_layout_whatever_their_headers():
    rng = np.random.default_rng(1)
    states = [(f"k{i}", _state(rng, "{}" + " " * i), {}) for i in range(5)]
    states.append(("wider", dict(_state(rng, "{}"), U=np.zeros((4, 4))), {}))
    _, table = packing.pack(states)
    assert len(table["layouts"]) == 2
    assert [row[1] for row in table["keys"]] == [0, 0, 0, 0, 0, 1]
    assert [row[3] for row in table["keys"]] == [[2], [3], [4], [5], [6], [2]]  # per key: the header lengths


def test_nothing_packs_to_nothing_and_a_short_buffer_is_refused():
    data, table = packing.pack([])
    assert data.shape == (0,) and packing.unpack(data, table) == {}
    data, table = packing.pack([("a", {"w": np.arange(4.0)}, {})])
    with pytest.raises(ValueError, match=r"^key 'a': array 'w' runs past the end of the data$"):
        packing.unpack(data[:-8], table)


@pytest.mark.parametrize("where, bad", [("layout", [2.0]), ("layout", [-1, 2]), ("layout", ["2"]),
                                        ("length", 3.0), ("length", -4)])
def test_a_table_whose_shapes_are_not_whole_numbers_is_refused(where, bad):
    data, table = packing.pack([("a", {"w": np.arange(2.0), "__header__": np.zeros(3, dtype=np.uint8)}, {})])
    assert packing.unpack(data, table)["a"][0]["w"].tolist() == [0.0, 1.0]
    if where == "layout":
        table["layouts"][0][0][2] = bad
    else:
        table["keys"][0][3] = [bad]
    name = "w" if where == "layout" else "__header__"  # the error names the array whose shape is wrong
    with pytest.raises(ValueError, match=rf"^array '{name}': shape .* is not a list of whole numbers"):
        packing.unpack(data, table)


def test_the_bytes_are_pinned_arrays_on_8_byte_boundaries_zero_padded():
    """The on-disk layout itself: a reader in another language (or version) relies on it."""
    arrays = {"a": np.arange(3, dtype=np.int16), "h": np.frombuffer(b"{}", np.uint8), "b": np.array([1.5])}
    data, _ = packing.pack([("k", arrays, {"events": 1})])
    assert data.tobytes() == arrays["a"].tobytes() + bytes(2) + b"{}" + bytes(6) + arrays["b"].tobytes()


def test_two_variable_length_byte_arrays_in_one_key_keep_their_own_lengths():
    arrays = {"h1": np.frombuffer(b"abc", np.uint8), "h2": np.frombuffer(b"0123456789", np.uint8)}
    (back, _), = packing.unpack(*packing.pack([("k", arrays, {})])).values()
    assert bytes(back["h1"]) == b"abc" and bytes(back["h2"]) == b"0123456789"


def test_byte_arrays_that_are_not_1_d_keep_their_shape():
    arrays = {"s": np.array(5, dtype=np.uint8), "m": np.arange(6, dtype=np.uint8).reshape(2, 3)}
    (back, _), = packing.unpack(*packing.pack([("k", arrays, {})])).values()
    assert back["s"].shape == () and back["m"].shape == (2, 3) and int(back["s"]) == 5


# ----- on disk: compressed members ---------------------------------------------------------------


@pytest.mark.parametrize("codec", [packing.CODEC, None])
def test_members_come_back_bit_for_bit_compressed_or_not(codec):
    rng = np.random.default_rng(2)
    states = [(f"k{i}", _state(rng, '{"config": "the same for every key"}'), {"events": i}) for i in range(3)]
    arrays, fields = packing.members(states, codec)
    assert set(arrays) == ({"data", "table"} if codec else {"data"})
    assert all(a.dtype == np.uint8 and a.ndim == 1 for a in arrays.values())
    got = packing.read_members(arrays, fields)
    want = packing.unpack(*packing.pack(states))
    assert list(got) == list(want)
    for key in want:
        assert got[key][1] == want[key][1]
        for name, a in want[key][0].items():
            b = got[key][0][name]
            assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes()
            assert b.flags.writeable and b.ctypes.data % packing.ALIGN == 0


def test_compression_shrinks_what_keys_of_one_configuration_repeat():
    rng = np.random.default_rng(3)
    header = '{"config": {"layers": [{"units": 16, "activation": "tanh"}], "optimizer": "Adam"}}' * 4
    states = [(f"k{i}", _state(rng, header), {"events": i}) for i in range(50)]
    plain = sum(a.nbytes for a in packing.members(states, None)[0].values())
    squeezed = sum(a.nbytes for a in packing.members(states)[0].values())
    assert squeezed < 0.6 * plain


def test_an_unknown_codec_or_damaged_compressed_data_is_a_value_error_naming_it():
    states = [("k", {"w": np.arange(4.0)}, {})]
    with pytest.raises(ValueError, match=r"^codec 'lz4' is not one of None, 'zstd'$"):
        packing.members(states, "lz4")
    arrays, fields = packing.members(states)
    with pytest.raises(ValueError, match=r"^codec 'brotli' is not one this version reads \('zstd'\)$"):
        packing.read_members(arrays, {"codec": "brotli"})
    damaged = dict(arrays, data=arrays["data"][:-3])
    with pytest.raises(ValueError, match="^the compressed members do not expand: "):
        packing.read_members(damaged, fields)
