"""npnorm.save / npnorm.load: exact round trips, atomic writes, clear errors, and no pickle anywhere."""

from __future__ import annotations

import io
import os
import pathlib
import re
import zipfile

import numpy as np
import pytest

import npnorm
from npnorm import io as npnorm_io


def _state(rng) -> dict[str, np.ndarray]:
    return {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal(5),
        "idx": rng.integers(-1000, 1000, size=(2, 3)),
        "u8": rng.integers(0, 255, size=4, dtype=np.uint8),
        "i32": np.array([1, -2, 3], dtype=np.int32),
        "mask": np.array([True, False]),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
        "strided": rng.standard_normal((4, 6))[::2, ::3],  # not contiguous
        "layer.0.weight": rng.standard_normal((2, 2)),
        "file": np.array([7.0]),  # a key that would collide with np.savez's own argument name
    }


def _assert_same(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)  # same keys, same order
    for key, value in expected.items():
        value = np.asarray(value)
        assert type(loaded[key]) is np.ndarray, key
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------ round trip
def test_round_trip_is_exact(tmp_path, rng):
    state = _state(rng)
    npnorm.save(state, tmp_path / "ckpt.npz")
    _assert_same(npnorm.load(tmp_path / "ckpt.npz"), state)
    # An ordinary .npz: NumPy reads it too, without pickle.
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["w32"], state["w32"])


def test_numbers_and_tensors_are_converted(tmp_path):
    p = npnorm.tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    state = {"lr": 0.1, "step": 7, "flag": True, "f32": np.float32(1.5), "tensor": p}
    npnorm.save(state, tmp_path / "c.npz")
    loaded = npnorm.load(tmp_path / "c.npz")
    expected = {"lr": np.array(0.1), "step": np.array(7), "flag": np.array(True), "f32": np.array(1.5, np.float32),
                "tensor": p.data}  # fmt: skip
    _assert_same(loaded, expected)


def test_empty_dict_round_trips(tmp_path):
    npnorm.save({}, tmp_path / "empty.npz")
    assert npnorm.load(tmp_path / "empty.npz") == {}


@pytest.mark.parametrize("name", ["checkpoint", "model.pt", "weights.npz", "dir.with.dots/run 1.ckpt"])
def test_path_is_used_exactly(tmp_path, name):
    target = tmp_path / name
    target.parent.mkdir(exist_ok=True)
    npnorm.save({"a": np.ones(2)}, str(target))  # str and pathlib.Path both work
    assert _files(target.parent) == [target.name]  # no ".npz" appended, no temporary file left
    _assert_same(npnorm.load(target), {"a": np.ones(2)})


def test_save_overwrites_and_keeps_usual_permissions(tmp_path):
    target = tmp_path / "c.npz"
    npnorm.save({"a": np.zeros(3)}, target)
    npnorm.save({"b": np.ones(2)}, target)
    _assert_same(npnorm.load(target), {"b": np.ones(2)})
    assert _files(tmp_path) == ["c.npz"]
    if os.name == "posix":
        mask = os.umask(0o022)
        os.umask(mask)
        assert target.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.skipif(os.name != "posix", reason="umask permissions are POSIX's")
def test_each_save_takes_the_umask_of_its_moment(tmp_path):
    old = os.umask(0o022)
    try:
        npnorm.save({"a": np.ones(1)}, tmp_path / "open.npz")
        os.umask(0o077)  # set after the first save: a umask read once and kept would miss it
        npnorm.save({"a": np.ones(1)}, tmp_path / "private.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "open.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.npz").stat().st_mode & 0o777 == 0o600


def test_long_names_and_bytes_paths_work_as_for_open(tmp_path):
    long_name = tmp_path / ("n" * 250 + ".npz")  # 254 characters: the temporary name must not grow past 255
    npnorm.save({"a": np.arange(3.0)}, long_name)
    as_bytes = os.fsencode(tmp_path / "b.npz")
    npnorm.save({"a": np.arange(3.0)}, as_bytes)
    assert _files(tmp_path) == ["b.npz", long_name.name]
    for path in (long_name, as_bytes):
        _assert_same(npnorm.load(path), {"a": np.arange(3.0)})


# --------------------------------------------------------------------------------------- atomicity
def _fail_half_way(monkeypatch):
    """Make the array writer write half an array, then die."""

    def write_half_then_fail(fp, array, *args, **kwargs):
        fp.write(b"\x93NUMPY" + b"\x00" * 64)
        raise OSError("simulated crash half-way through the write")

    monkeypatch.setattr(np.lib.format, "write_array", write_half_then_fail)


def _fail_in_fsync(monkeypatch):
    def fail(fd):
        raise OSError("simulated fsync failure")

    monkeypatch.setattr(os, "fsync", fail)


def _fail_in_replace(monkeypatch):
    def fail(src, dst):
        raise OSError("simulated rename failure")

    monkeypatch.setattr(os, "replace", fail)


def _interrupt_in_write(monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupt)


@pytest.mark.parametrize(
    ("break_it", "error"),
    [(_fail_half_way, OSError), (_fail_in_fsync, OSError), (_fail_in_replace, OSError),
     (_interrupt_in_write, KeyboardInterrupt)],
    ids=["write", "fsync", "replace", "ctrl-c"],
)  # fmt: skip
def test_failed_save_leaves_old_checkpoint_intact_and_no_temp_files(tmp_path, monkeypatch, rng, break_it, error):
    target = tmp_path / "ckpt.npz"
    old = _state(rng)
    npnorm.save(old, target)
    old_bytes = target.read_bytes()
    break_it(monkeypatch)
    with pytest.raises(error):
        npnorm.save({"new": np.arange(10_000.0)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == old_bytes
    assert _files(tmp_path) == ["ckpt.npz"]
    _assert_same(npnorm.load(target), old)


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    _fail_half_way(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        npnorm.save({"a": np.ones(3)}, tmp_path / "new.npz")
    assert _files(tmp_path) == []


BAD_VALUES = [
    np.array([1, "a"], dtype=object),
    np.array(["a", "b"]),
    np.array([b"x"]),
    np.array(["2024-01-01"], dtype="datetime64[D]"),
    np.zeros(2, dtype=[("x", "f8"), ("y", "i4")]),
    [1.0, 2.0],
    None,
    "text",
    {"nested": np.ones(2)},
]


@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__ + str(getattr(v, "dtype", "")))
def test_save_rejects_non_numeric_values_before_touching_disk(tmp_path, value):
    with pytest.raises(TypeError, match="'bad'"):
        npnorm.save({"ok": np.ones(2), "bad": value}, tmp_path / "c.npz")
    assert _files(tmp_path) == []


def test_save_rejects_bad_keys_and_containers(tmp_path):
    with pytest.raises(TypeError, match="keys must be strings"):
        npnorm.save({1: np.ones(2)}, tmp_path / "c.npz")
    # a zip member's name ends at a NUL ("a\0x" and "a\0y" would both load as "a") and must be UTF-8
    for key in ("a\x00x", "\ud800"):
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            npnorm.save({"ok": np.ones(2), key: np.ones(2)}, tmp_path / "c.npz")
    with pytest.raises(TypeError, match="dict"):
        npnorm.save([("a", np.ones(2))], tmp_path / "c.npz")
    assert _files(tmp_path) == []


# ------------------------------------------------------------------------------------ load errors
def test_missing_file_raises_file_not_found_with_the_path(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as info:
        npnorm.load(missing)
    assert info.value.filename == str(missing)


def _expect_invalid(path):
    return pytest.raises(ValueError, match=re.escape(f"load: {path} is not a valid npnorm checkpoint: "))


def _serve_from_memory(monkeypatch, path: pathlib.Path) -> dict:
    """Let `load(path)` read `files[path]` from memory: thousands of damaged variants without disk I/O."""
    files = {}

    def fake_open(name, mode="r"):
        assert mode == "rb"
        return io.BytesIO(files[name])

    monkeypatch.setattr(npnorm_io, "open", fake_open, raising=False)
    return files


def test_truncated_file_on_disk_raises_a_clear_value_error(tmp_path, rng):
    path = tmp_path / "c.npz"
    npnorm.save({"w": rng.standard_normal(10)}, path)
    path.write_bytes(path.read_bytes()[:-30])
    with _expect_invalid(path):
        npnorm.load(path)


def test_every_truncation_raises_a_clear_value_error(tmp_path, monkeypatch, rng):
    good = tmp_path / "good.npz"
    npnorm.save({"w": rng.standard_normal((2, 3)).astype(np.float32), "n": np.array(3)}, good)
    raw = good.read_bytes()
    files = _serve_from_memory(monkeypatch, good)
    for size in range(len(raw)):
        files[str(good)] = raw[:size]
        with _expect_invalid(good):
            npnorm.load(good)


def test_corrupt_bytes_never_load_silently_wrong(tmp_path, monkeypatch, rng):
    """Flip bits in every byte: load raises the clear ValueError, or (for bytes nobody checks, like a
    timestamp) returns exactly the saved arrays. Never different data, never another exception."""
    state = {"w": rng.standard_normal((2, 3)).astype(np.float32), "b": np.array([1.5, -2.0]), "n": np.array(3)}
    good = tmp_path / "good.npz"
    npnorm.save(state, good)
    raw = good.read_bytes()
    files = _serve_from_memory(monkeypatch, good)
    caught = 0
    for i in range(len(raw)):
        for flip in (0x01, 0x80):  # a low and a high bit (a garbled length field needs the high one)
            damaged = bytearray(raw)
            damaged[i] ^= flip
            files[str(good)] = bytes(damaged)
            try:
                loaded = npnorm.load(good)
            except ValueError as exc:
                assert str(exc).startswith(f"load: {good} is not a valid npnorm checkpoint: "), (i, flip, exc)
                caught += 1
            else:
                _assert_same(loaded, state)
    assert caught > len(raw)  # most flips are caught (the array bytes are CRC-checked)


def test_flipped_array_byte_is_caught_by_the_crc(tmp_path):
    good = tmp_path / "c.npz"
    npnorm.save({"w": np.arange(100.0)}, good)
    raw = bytearray(good.read_bytes())
    at = raw.index(np.float64(50.0).tobytes())
    raw[at] ^= 0x01
    good.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        npnorm.load(good)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file\n", bytes(range(256)) * 4, b"PK\x03\x04" + b"\x00" * 100],
    ids=["empty", "text", "random", "zip-magic-only"],
)
def test_not_a_checkpoint_raises_a_clear_value_error(tmp_path, content):
    path = tmp_path / "c.npz"
    path.write_bytes(content)
    with _expect_invalid(path):
        npnorm.load(path)


def test_a_bare_npy_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))
    with _expect_invalid(path):
        npnorm.load(path)


def _npy_member(shape, data: bytes) -> bytes:
    """A .npy file whose header declares float64 `shape` and whose data is `data`, whatever its length."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return out.getvalue() + data


@pytest.mark.parametrize("shape", [(10**13,), (3,), (1,), ()], ids=["73 TiB", "too few", "too many", "0-d, too many"])
def test_a_header_that_does_not_match_its_data_is_invalid_without_allocating(tmp_path, shape):
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", _npy_member(shape, np.arange(2.0).tobytes()))
    invalid = re.escape(f"load: {path} is not a valid npnorm checkpoint: ")
    with pytest.raises(ValueError, match=invalid + ".*'w.npy' declares"):
        npnorm.load(path)  # never a MemoryError: the 73 TiB are checked against the 16 bytes held first
    with zipfile.ZipFile(path, "w") as archive:  # the same header with its data is a valid checkpoint
        archive.writestr("w.npy", _npy_member((2,), np.arange(2.0).tobytes()))
    _assert_same(npnorm.load(path), {"w": np.arange(2.0)})


def test_zip_with_a_foreign_member_is_rejected(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.ones(2))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("README.txt", "not an array")
    with pytest.raises(ValueError, match="README.txt"):
        npnorm.load(path)


class Canary:
    """Unpickling an instance calls __setstate__, which would record that the file ran code."""

    unpickled = False

    def __setstate__(self, state):
        Canary.unpickled = True


def test_object_arrays_in_a_file_are_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = Canary()
    payload[0].tag = "non-empty state, so that unpickling calls __setstate__"
    np.savez(path, w=np.ones(2), evil=payload, allow_pickle=True)  # object arrays need pickling to be written
    Canary.unpickled = False
    with _expect_invalid(path):
        npnorm.load(path)
    assert not Canary.unpickled


def test_the_package_never_uses_pickle():
    """Only `allow_pickle=False` may appear: no pickle import, no allow_pickle=True, no mention at all."""
    root = pathlib.Path(npnorm.__file__).parent
    offenders = []
    for source in sorted(root.rglob("*.py")):
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            if "pickle" in line.lower().replace("allow_pickle=false", ""):
                offenders.append(f"{source.relative_to(root.parent)}:{number}: {line.strip()}")
    assert not offenders, "pickle in the npnorm package:\n" + "\n".join(offenders)


# -------------------------------------------------------------------------------- model round trip
def test_model_state_dict_round_trip(tmp_path, rng):
    nn = pytest.importorskip("npnorm.nn")
    if not all(hasattr(nn, name) for name in ("Sequential", "Linear", "LayerNorm", "Tanh")):
        pytest.skip("npnorm.nn does not have these layers yet")

    def make_model(seed):
        npnorm.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))

    model = make_model(0)
    x = npnorm.tensor(rng.standard_normal((5, 4)), dtype=np.float32)
    expected = model(x).data.copy()
    npnorm.save(model.state_dict(), tmp_path / "model.npz")

    other = make_model(1)
    assert not np.array_equal(other(x).data, expected)  # a different initialisation
    state = npnorm.load(tmp_path / "model.npz")
    assert sorted(state) == sorted(model.state_dict())
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(x).data, expected)


def test_saving_into_a_missing_folder_names_the_target_not_a_temporary_file(tmp_path):
    target = tmp_path / "no_such_folder" / "ck.npz"
    with pytest.raises(FileNotFoundError, match="no_such_folder' does not exist") as info:
        npnorm.save({"a": np.ones(1)}, target)
    assert info.value.filename == str(target)  # it was the hidden .ck.npz.<random>.tmp
    assert not (tmp_path / "no_such_folder").exists()
