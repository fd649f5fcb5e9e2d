"""Hostile and damaged checkpoints and pickles: refused with one message naming the file (and
the tensor), never a crash, a read outside a storage, unbounded memory or code run.

Every crafted checkpoint starts from real `torch.save` output: its members are kept and its
data.pkl is rewritten by `pickle` (protocol 2, what torch.save writes) from stand-ins whose
`__reduce__` names `torch._utils._rebuild_tensor_v2` and whose storages are persistent ids
`("storage", torch.<T>Storage, key, "cpu", numel)`, so the valid files are ones
`torch.load(weights_only=True)` reads. Zips are written by a small writer below (sizes, CRCs,
names and compression as the case needs). Each file is also given to
`torch.load(weights_only=True)`: whatever torch refuses, animax must refuse too.
"""

import collections
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convert_weights
from animax.convert.torch_reader import (
    BROADCAST_ALLOWANCE,
    UnsafeCheckpointError,
    read_torch_checkpoint,
)
from animax.safe_pickle import UnsafePickleError
from animax.smal import load_pickle, load_smal
from helpers.smal_files import chumpy_pickle_bytes, random_smal_arrays

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
KEY = "state_dict/backbone.blocks.0.attn.qkv.weight"


# ---------------------------------------------------------------- zip writing

class Entry:
    """One zip member. `chunks` are the bytes written as the member's data (already compressed
    for method 8 when `raw` is true); size/crc are what the directory declares."""

    def __init__(self, name, data=b"", method=zipfile.ZIP_STORED, size=None, crc=None, chunks=None,
                 compress_size=None):
        if chunks is None:
            if method == zipfile.ZIP_DEFLATED:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                chunks = [c.compress(data) + c.flush()]
            else:
                chunks = [data]
        self.name, self.method, self.chunks = name, method, chunks
        self.size = len(data) if size is None else size
        self.crc = zlib.crc32(data) if crc is None else crc
        self.compress_size = compress_size


def write_zip(path, entries):
    """A plain (non-zip64) zip archive of `entries`, as declared: lies included."""
    central = []
    with open(path, "wb") as f:
        for e in entries:
            offset, name = f.tell(), e.name.encode()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, e.method, 0, 0x21, e.crc, 0, 0, len(name), 0))
            f.write(name)
            start = f.tell()
            f.writelines(e.chunks)
            csize = f.tell() - start if e.compress_size is None else e.compress_size
            end = f.tell()
            f.seek(offset + 18)
            f.write(struct.pack("<II", csize, e.size))
            f.seek(end)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, e.method, 0, 0x21, e.crc,
                                       csize, e.size, len(name), 0, 0, 0, 0, 0, offset) + name)
        cd_offset = f.tell()
        f.writelines(central)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                            f.tell() - cd_offset, cd_offset, 0))
    return path


# ---------------------------------------------------------------- pickles as torch.save writes them

class S:
    """A storage: persistent id ("storage", torch.<type>, key, "cpu", numel)."""

    def __init__(self, key="0", numel=64, type_name="FloatStorage"):
        self.key, self.numel, self.type_name = key, numel, type_name


class T:
    """A tensor: _rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, S):
            return ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def torch_members(obj) -> list:
    """(name, bytes) of the members torch.save writes for `obj`, in order."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


BASE_VALUES = np.arange(64, dtype=np.float32) * 1.5 - 7  # the 8 x 8 storage: 256 bytes
_BASE = None


def base_members():
    global _BASE
    if _BASE is None:
        _BASE = torch_members({"state_dict": {"w": torch.from_numpy(BASE_VALUES.reshape(8, 8).copy())}})
    return list(_BASE)


def checkpoint(path, tree=None, pkl=None, replace=None, extra=(), method=zipfile.ZIP_STORED):
    """torch.save's members with data.pkl rewritten from `tree` (or the bytes `pkl`), members
    replaced by `replace` {short name: Entry or bytes}, `extra` Entries appended."""
    replace = dict(replace or {})
    if pkl is None and tree is not None:
        pkl = torch_pickle(tree)
    entries = []
    for name, data in base_members():
        short = name.split("/", 1)[1]
        if short == "data.pkl" and pkl is not None:
            data = pkl
        if short in replace:
            item = replace.pop(short)
            entries.append(item if isinstance(item, Entry) else Entry(name, item, method))
        else:
            entries.append(Entry(name, data, method))
    entries += [e if isinstance(e, Entry) else Entry(*e) for e in extra]
    return write_zip(path, entries)


def one_tensor(offset=0, shape=(8, 8), stride=(8, 1), numel=64, key="0", type_name="FloatStorage"):
    return {"state_dict": {KEY.split("/", 1)[1]: T(S(key, numel, type_name), offset, shape, stride)}}


def torch_refuses(path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except Exception:
        return True
    return False


def animax_read(path):
    """Every tensor of the file as numpy, or the refusal."""
    tree = read_torch_checkpoint(path)
    return {k: v.numpy() for k, v in tree["state_dict"].items()}


def assert_refused(path, *patterns, key=KEY, exc=(UnsafeCheckpointError, UnsafePickleError)):
    with pytest.raises(exc) as info:
        animax_read(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"{path}: "), message
    if key:
        assert key in message, message
    for pattern in patterns:
        assert re.search(pattern, message), message
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the attacker's report

GEOMETRY_CASES = {
    # name: (offset, shape, stride, numel, expected message)
    "shape 4M x 8 on an 8 x 8 storage": (0, (4_000_000, 8), (8, 1), 64, "outside the storage"),
    "two rows past the end": (0, (10, 8), (8, 1), 64, "outside the storage"),
    "huge stride": (0, (8, 8), (2**40, 1), 64, "outside the storage"),
    "negative stride": (56, (8, 8), (-8, 1), 64, "negative offset, size or stride"),
    "offset 2**28": (2**28, (8, 8), (8, 1), 64, "offset past the end"),
    "offset -16": (-16, (8, 8), (8, 1), 64, "negative offset, size or stride"),
    "oversized storage count": (0, (8, 8), (8, 1), 2**40, r"holds 256 bytes, the pickle declares 4398046511104"),
    "storage count one short": (0, (8, 8), (8, 1), 63, "outside the storage|holds 256 bytes"),
    "negative size": (0, (-8, 8), (8, 1), 64, "negative offset, size or stride"),
    "stride and shape lengths differ": (0, (8, 8), (8,), 64, "differ in length"),
    "0-stride view of 16 GiB": (0, (2**32,), (0,), 64, "allowed to repeating views"),
    "offset 2**63 (int64 overflow)": (2**63 - 1, (1,), (1,), 64, "offset past the end"),
    "stride product overflowing int64": (0, (2**20, 2**20), (2**43, 2**43), 64, "outside the storage"),
    "sizes no array can hold": (0, (2**32, 2**32), (0, 0), 64, "beyond what an array can describe"),
}


# torch reads a 0-stride view of any size without allocating; animax would materialise it.
GEOMETRY_TORCH_ACCEPTS = {"0-stride view of 16 GiB"}


@pytest.mark.parametrize("case", list(GEOMETRY_CASES))
def test_tensor_geometry_outside_its_storage_is_refused(tmp_path, case):
    offset, shape, stride, numel, expected = GEOMETRY_CASES[case]
    path = checkpoint(tmp_path / "evil.pt", one_tensor(offset, shape, stride, numel))
    assert_refused(path, expected)
    assert torch_refuses(path) != (case in GEOMETRY_TORCH_ACCEPTS)
    assert convert_weights.main([str(path), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_the_crafting_is_realistic(tmp_path):
    """The same crafting with honest geometry reads in torch and animax alike (so the refusals
    above are due to the edits, not to the fixture)."""
    path = checkpoint(tmp_path / "ok.pt", one_tensor(8, (3, 4), (1, 10), 64))
    ref = torch.load(path, weights_only=True)["state_dict"][KEY.split("/", 1)[1]].numpy()
    got = animax_read(path)[KEY.split("/", 1)[1]]
    expected = np.array([[BASE_VALUES[8 + i + 10 * j] for j in range(4)] for i in range(3)], np.float32)
    np.testing.assert_array_equal(ref, expected)
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()


_MARKER_CODE = "open({marker!r}, 'w').write('ran')"


def _payloads(marker):
    """The six code-execution payloads, each writing `marker` if it ran (protocol 0/2/4 bytes)."""
    m = str(marker)
    shell = f"touch {m}".encode()
    inner = pickle.dumps(_System(f"touch {m}"), protocol=2)
    return {
        "REDUCE os.system": b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(shell)) + shell + b"\x85R.",
        "builtins.eval": b"cbuiltins\neval\n(V" + _MARKER_CODE.format(marker=m).encode() + b"\ntR.",
        "INST os.system": b"(S'touch " + m.encode() + b"'\nios\nsystem\n.",
        "STACK_GLOBAL os.system": (b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(shell)]) + shell
                                   + b"\x85R."),
        "nested pickle.loads": b"\x80\x02cpickle\nloads\nC" + bytes([len(inner)]) + inner + b"\x85R.",
        "getattr chain": (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V"
                          + f"touch {m}".encode() + b"\ntR."),
    }


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("case", list(_payloads("x")))
def test_code_execution_payloads_are_refused_without_running(tmp_path, case):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[case]
    path = checkpoint(tmp_path / "evil.pt", pkl=payload)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global '(posix|os|builtins|pickle)\.") as info:
        read_torch_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")
    assert convert_weights.main([str(path), str(tmp_path / "out")]) == 1
    assert torch_refuses(path)
    assert not marker.exists()
    # The payload is real: Python's own unpickler runs it.
    pickle.loads(payload)
    assert marker.exists()


# ---------------------------------------------------------------- zip bombs and member sizes

def deflated_zeros(total, chunk=1 << 20):
    """(compressed chunks, crc32) of `total` zero bytes as one raw deflate stream, computed
    chunk by chunk: the test never holds more than one chunk."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(chunk)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == block  # after a full flush: identical blocks
    crc = 0
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return [first] + [block] * (total // chunk - 2) + [c.compress(zeros) + c.flush()], crc


BOMB = 3 << 30  # 3 GiB of zeros in a ~3 MB member


@pytest.fixture(scope="module")
def bomb():
    return deflated_zeros(BOMB)


def bomb_file(path, bomb, numel, declared_size=BOMB, crc=None):
    chunks, bomb_crc = bomb
    name = [n for n, _ in base_members() if n.endswith("/data/0")][0]
    entry = Entry(name, method=zipfile.ZIP_DEFLATED, chunks=chunks, size=declared_size,
                  crc=bomb_crc if crc is None else crc)
    return checkpoint(path, one_tensor(numel=numel), replace={"data/0": entry})


def peak_rss_increase_mib(code: str):
    """Runs `code` in a fresh interpreter that has imported the reader: ("read" or "refused:
    <message>", increase of peak RSS (VmHWM, reset before `code`) over the RSS just before
    `code`, in MiB)."""
    lines = ["import re", "from animax.convert.torch_reader import read_torch_checkpoint",
             "from animax.safe_pickle import RefusedFileError",
             "def status(field):",
             "    return int(re.search(field + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) / 1024",
             "open('/proc/self/clear_refs', 'w').write('5')  # resets the peak (VmHWM) to the current RSS",
             "before = status('VmRSS')",
             "try:"]
    lines += ["    " + line for line in textwrap.dedent(code).strip().splitlines()]
    lines += ["    outcome = 'read'", "except RefusedFileError as e:", "    outcome = 'refused: ' + str(e)",
              "print(outcome)", "print(status('VmHWM') - before)"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    outcome, increase = out.stdout.strip().splitlines()[-2:]
    return outcome, float(increase)


def test_the_memory_measure_sees_an_allocation():
    """The bound below is not vacuous: 100 MiB touched in `code` shows as ~100 MiB."""
    outcome, increase = peak_rss_increase_mib("x = bytearray(100 << 20)")
    assert outcome == "read" and 95 < increase < 140, increase


BOMB_CASES = {
    # name: (storage numel, declared size, crc, expected message)
    "honest 3 GiB member, 64-element storage": (64, BOMB, None, r"holds 3221225472 bytes, the pickle declares 256"),
    "3 GiB member and storage, 256-byte tensor": (BOMB // 4, BOMB, None, r"over 64x: a zip bomb is refused"),
    "member declaring 256 bytes, inflating to 3 GiB": (64, 256, None, r"cannot be read \(BadZipFile: Bad CRC-32"),
}


@pytest.mark.parametrize("case", list(BOMB_CASES))
def test_zip_bomb_is_refused_in_bounded_memory(tmp_path, bomb, case):
    numel, size, crc, expected = BOMB_CASES[case]
    path = bomb_file(tmp_path / "bomb.pt", bomb, numel, size, crc)
    assert path.stat().st_size < 4 << 20
    outcome, increase = peak_rss_increase_mib(f"""
        tree = read_torch_checkpoint({str(path)!r})
        tree["state_dict"]["backbone.blocks.0.attn.qkv.weight"].numpy()
    """)
    assert outcome.startswith(f"refused: {path}: {KEY}: "), outcome
    assert re.search(expected, outcome), outcome
    # Reading the member whole would take 3 GiB; bounded reads keep the reader near nothing.
    assert increase < 64, f"{case}: peak RSS grew by {increase:.0f} MiB"
    print(f"{case}: peak RSS increase {increase:.1f} MiB")


def test_pickle_memo_bomb_takes_no_memory(tmp_path):
    """12 bytes naming memo index 2**28: CPython's C unpickler allocates and zeroes 4 GiB."""
    pkl = b"\x80\x02K\x01r" + struct.pack("<I", 2**28) + b"0" + torch_pickle(one_tensor())[2:]
    path = checkpoint(tmp_path / "memo.pt", pkl=pkl)
    outcome, increase = peak_rss_increase_mib(f"read_torch_checkpoint({str(path)!r})")
    assert outcome == "read" and increase < 64, (outcome, increase)


def test_allocation_payloads_are_refused(tmp_path):
    """bytes(n) and bytearray(n) would zero n bytes; numpy's _reconstruct would allocate the
    shape it is given."""
    for name, payload in {
        "bytes": b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.",
        "bytearray": b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.",
        "_reconstruct": (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x40\x85"
                         b"C\x01b\x87R."),
        "ndarray()": b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85\x81.",
    }.items():
        path = checkpoint(tmp_path / f"{name}.pt", pkl=payload)
        with pytest.raises(UnsafePickleError, match=r"is refused|may only be named") as info:
            read_torch_checkpoint(path)
        assert str(info.value).startswith(f"{path}: "), name


# ---------------------------------------------------------------- malformed archives

def _prefix():
    return base_members()[0][0].split("/")[0]


def malformed(tmp_path, case):
    p = _prefix()
    path = tmp_path / "bad.pt"
    if case == "empty file":
        path.write_bytes(b"")
    elif case == "not a zip (a pickle)":
        path.write_bytes(pickle.dumps({"state_dict": {}}))
    elif case == "truncated archive":
        checkpoint(path, one_tensor())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "stored member running past the end of the file":
        checkpoint(path, one_tensor(numel=2**18), replace={"data/0": Entry(f"{p}/data/0", BASE_VALUES.tobytes(),
                                                                           size=2**20, compress_size=2**20)})
    elif case == "duplicate member":
        checkpoint(path, one_tensor(), extra=[Entry(f"{p}/data/0", bytes(256))])
    elif case == "'..' in a member name":
        checkpoint(path, one_tensor(), extra=[Entry(f"{p}/../../etc/x", b"x")])
    elif case == "absolute member name":
        checkpoint(path, one_tensor(), extra=[Entry("/etc/passwd", b"x")])
    elif case == "member outside the archive folder":
        checkpoint(path, one_tensor(), extra=[Entry("other/data/0", bytes(256))])
    elif case == "two data.pkl":
        checkpoint(path, one_tensor(), extra=[Entry("other/data.pkl", torch_pickle({}))])
    elif case == "persistent id to a missing member":
        checkpoint(path, one_tensor(key="99"))
    elif case == "persistent id with a path":
        checkpoint(path, one_tensor(key="../data.pkl"))
    elif case == "data.pkl not a pickle":
        checkpoint(path, pkl=b"this is not a pickle at all")
    elif case == "truncated data.pkl":
        pkl = torch_pickle(one_tensor())
        checkpoint(path, pkl=pkl[: len(pkl) // 2])
    elif case == "data.pkl zip bomb":
        chunks, crc = deflated_zeros(200 << 20)
        checkpoint(path, replace={"data.pkl": Entry(f"{p}/data.pkl", method=zipfile.ZIP_DEFLATED,
                                                    chunks=chunks, size=200 << 20, crc=crc)})
    elif case == "storage member with a bad CRC":
        checkpoint(path, one_tensor(), replace={"data/0": Entry(f"{p}/data/0", BASE_VALUES.tobytes(), crc=1)})
    elif case == "stored member whose sizes disagree":
        checkpoint(path, one_tensor(), replace={"data/0": Entry(f"{p}/data/0", BASE_VALUES.tobytes(),
                                                               compress_size=128)})
    elif case == "member compressed with bzip2":
        checkpoint(path, one_tensor(), replace={"data/0": Entry(f"{p}/data/0", method=zipfile.ZIP_BZIP2,
                                                               chunks=[b"BZh9" + bytes(40)], size=256)})
    elif case == "one storage as two types":
        checkpoint(path, {"state_dict": {"a": T(S("0", 64), 0, (8, 8), (8, 1)),
                                         "b": T(S("0", 32, "DoubleStorage"), 0, (4,), (1,))}})
    elif case == "storage that is not a storage":
        checkpoint(path, {"state_dict": {"w": T(7, 0, (1,), (1,))}})
    elif case == "big-endian byteorder":
        checkpoint(path, one_tensor(), replace={"byteorder": b"big"})
    else:
        raise AssertionError(case)
    return path


MALFORMED = {
    # name: (message, key path expected in the message?)
    "empty file": ("empty file", False),
    "not a zip (a pickle)": ("not a zip-format PyTorch checkpoint", False),
    "truncated archive": ("not a zip-format|damaged zip", False),
    "stored member running past the end of the file": ("runs past the end of the file", True),
    "duplicate member": (r"members named twice: \['archive/data/0'\]", False),
    "'..' in a member name": ("absolute or leaves the archive", False),
    "absolute member name": ("absolute or leaves the archive", False),
    "member outside the archive folder": ("outside the archive's folder", False),
    "two data.pkl": ("expected one '<name>/data.pkl'", False),
    "persistent id to a missing member": ("member archive/data/99 does not exist", True),
    "persistent id with a path": ("is not a member name", True),
    "data.pkl not a pickle": ("not a valid pickle", False),
    "truncated data.pkl": ("not a valid pickle", False),
    "data.pkl zip bomb": ("zip bomb is refused", False),
    "storage member with a bad CRC": ("Bad CRC-32", True),
    "stored member whose sizes disagree": ("compressed size 128 != size 256", True),
    "member compressed with bzip2": ("compression method 12", True),
    "one storage as two types": ("declared as 64 x float32 and as 32 x float64", True),
    "storage that is not a storage": ("its storage is a int", False),
    "big-endian byteorder": ("not a little-endian checkpoint", False),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_archives_are_refused_in_one_line(tmp_path, case, capsys):
    path = malformed(tmp_path, case)
    message, named = MALFORMED[case]
    key = "state_dict/b" if case == "one storage as two types" else KEY if named else None
    if case == "storage that is not a storage":
        key = "state_dict/w"
    assert_refused(path, message, key=key)
    assert convert_weights.main([str(path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    if case not in READ_TIME:  # found when the tensor is read, which this conversion never gets to
        assert err.startswith(f"error: {path}: "), err
    assert torch_refuses(path) != (case in TORCH_ACCEPTS), case


# Files torch.load(weights_only=True) reads but animax refuses (stricter by design).
TORCH_ACCEPTS = {"duplicate member", "'..' in a member name", "one storage as two types", "big-endian byteorder",
                 "storage member with a bad CRC"}
# Refused when the tensor's bytes are read (a CRC is only known after reading the data).
READ_TIME = {"storage member with a bad CRC"}


# ---------------------------------------------------------------- legitimate files read exactly

def test_torch_save_output_reads_bit_exactly(tmp_path, monkeypatch):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    shared = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    state = {
        "contiguous": base, "transpose": base.t(), "slice": base[1:, 2:5], "offset_view": base.view(-1)[5:11],
        "scalar": torch.tensor(3.25), "empty": torch.zeros(0, 3), "empty_view": base[:, 6:],
        "bf16": torch.randn(3, 5).bfloat16(), "f16": torch.randn(7).half(), "f64": torch.randn(2, 2).double(),
        "i64": torch.arange(-3, 5), "i32": torch.arange(6, dtype=torch.int32),
        "i16": torch.tensor([-7, 9], dtype=torch.int16),
        "i8": torch.tensor([-3, 4], dtype=torch.int8), "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "broadcast": torch.ones(1).expand(4, 3),
        "tied_a": shared, "tied_b": shared, "tied_t": shared.t(), "param": torch.nn.Parameter(torch.randn(3)),
    }
    path = tmp_path / "ok.pt"
    torch.save({"state_dict": state, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}}, path)
    reference = torch.load(path, weights_only=True)["state_dict"]
    opened = []
    original = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(name) or original(self, name, *a, **k))
    tree = read_torch_checkpoint(path)
    for name, tensor in reference.items():
        got = tree["state_dict"][name].numpy()
        want = (tensor.view(torch.int16).numpy().view(got.dtype) if tensor.dtype == torch.bfloat16
                else tensor.detach().numpy())
        assert got.shape == want.shape and str(got.dtype) == str(want.dtype), name
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), name
        # A tensor saved under two keys is one object: named by its first key.
        first = "tied_a" if name == "tied_b" else name
        assert tree["state_dict"][name].name == f"state_dict/{first}"
    storages = [n for n in opened if "/data/" in str(n)]
    assert len(storages) == len(set(storages)), "a storage was read twice"  # tied_* share one read
    assert not any(n == tree["optimizer"]["state"][0]["exp_avg"].storage.member for n in storages)


# ---------------------------------------------------------------- property-based geometry

DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
          "ShortStorage": np.int16, "LongStorage": np.int64, "ByteStorage": np.uint8}
HUGE = [2**20, 2**31, 2**62, 2**63 - 1]


def reference_read(values, declared, offset, shape, stride):
    """What a correct reader returns, computed independently with Python ints: None for a
    refusal, else the array (float64 holds every value exactly)."""
    n, itemsize = len(values), values.dtype.itemsize
    if declared != n or offset < 0 or any(d < 0 for d in shape) or any(s < 0 for s in stride):
        return None
    numel = extent = 1
    for d in shape:
        numel, extent = numel * d, extent * max(d, 1)
    if extent * itemsize > 2**62:  # no array can describe it, empty or not
        return None
    if numel == 0:
        return np.zeros(shape) if offset <= n else None
    last = offset + sum((d - 1) * s for d, s in zip(shape, stride))
    if last >= n or numel * itemsize > max(n * itemsize, BROADCAST_ALLOWANCE):
        return None
    # Valid: every index is below n, so int64 holds them. index = offset + sum_k i_k * stride_k.
    index = np.full(shape, offset, np.int64)
    for axis, (d, s) in enumerate(zip(shape, stride)):
        index += (np.arange(d, dtype=np.int64) * s).reshape([-1 if k == axis else 1 for k in range(len(shape))])
    return values.astype(np.float64)[index]


@st.composite
def geometries(draw):
    n = draw(st.integers(0, 40))
    ndim = draw(st.integers(0, 3))
    small_dim = st.integers(0, 5)
    shape = tuple(draw(st.one_of(small_dim, small_dim, small_dim, st.sampled_from(HUGE + [-1]))) for _ in range(ndim))
    stride = tuple(draw(st.one_of(st.integers(0, 9), st.integers(-2, 0), st.sampled_from(HUGE))) for _ in range(ndim))
    offset = draw(st.one_of(st.integers(0, n + 2), st.integers(-3, -1), st.sampled_from(HUGE)))
    declared = draw(st.sampled_from([n, n, n, n, n + 1, max(n - 1, 0), 2**40]))
    return n, shape, stride, offset, declared


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry=geometries(), type_name=st.sampled_from(sorted(DTYPES)), deflate=st.booleans(),
       seed=st.integers(0, 2**16))
def test_any_geometry_reads_exactly_or_is_refused(tmp_path, geometry, type_name, deflate, seed):
    n, shape, stride, offset, declared = geometry
    values = (np.random.default_rng(seed).integers(0, 200, n)).astype(DTYPES[type_name])
    p = _prefix()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    path = checkpoint(tmp_path / f"g{seed}.pt", one_tensor(offset, shape, stride, declared, type_name=type_name),
                      replace={"data/0": Entry(f"{p}/data/0", values.tobytes(), method)})
    expected = reference_read(values, declared, offset, shape, stride)
    if expected is None:
        assert_refused(path)
        return
    got = animax_read(path)[KEY.split("/", 1)[1]]
    assert got.dtype == DTYPES[type_name] and got.shape == tuple(shape)
    np.testing.assert_array_equal(got.astype(np.float64), expected)  # exact: small integers
    assert not torch_refuses(path)
    ref = torch.load(path, weights_only=True)["state_dict"][KEY.split("/", 1)[1]].numpy()
    assert ref.tobytes() == got.tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry=geometries(), type_name=st.sampled_from(sorted(DTYPES)))
def test_animax_refuses_whatever_torch_refuses(tmp_path, geometry, type_name):
    n, shape, stride, offset, declared = geometry
    values = np.arange(n).astype(DTYPES[type_name])
    path = checkpoint(tmp_path / "t.pt", one_tensor(offset, shape, stride, declared, type_name=type_name),
                      replace={"data/0": Entry(f"{_prefix()}/data/0", values.tobytes())})
    if torch_refuses(path):
        assert_refused(path)


# ---------------------------------------------------------------- SMAL and prior pickles

def _array_pickle(shape, dtype, data, protocol=2):
    """A pickled ndarray whose header (shape, dtype) says what the test wants, with `data`."""
    class Lying:
        def __reduce__(self):
            return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                    (1, shape, np.dtype(dtype), False, data))
    return pickle.dumps({"v_template": Lying()}, protocol=protocol)


SMAL_CASES = {
    "array header 10**6 x 10**6 on 16 bytes": (_array_pickle((10**6, 10**6), "f8", bytes(16)), "does not match"),
    "2**62 elements of a 0-byte dtype": (_array_pickle((2**62,), "V0", b""), "does not match"),
    "object array longer than its list": (_array_pickle((3,), "O", [1]), "not a list of 3 items"),
    "negative dimension": (_array_pickle((-1,), "f8", b""), "shape .* is refused"),
}


@pytest.mark.parametrize("case", list(SMAL_CASES))
def test_smal_pickle_with_a_lying_array_header_is_refused(tmp_path, case):
    raw, expected = SMAL_CASES[case]
    path = tmp_path / "smal.pkl"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError, match=expected) as info:
        load_smal(path)
    assert str(info.value).startswith(f"{path}: ")


def test_smal_pickle_with_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    arrays = random_smal_arrays()
    arrays["weights"] = _System(f"touch {marker}")
    path = tmp_path / "smal.pkl"
    path.write_bytes(chumpy_pickle_bytes(arrays, {"v_template", "shapedirs"}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load global '(posix|os)\.system'"):
        load_smal(path)
    assert not marker.exists()


def _sparse_smal(tmp_path, mutate):
    arrays = random_smal_arrays()
    regressor = arrays["J_regressor"].tocsc()
    mutate(regressor)
    arrays["J_regressor"] = regressor
    path = tmp_path / "smal.pkl"
    path.write_bytes(chumpy_pickle_bytes(arrays, {"v_template"}, protocol=2))
    return path


def test_smal_sparse_regressor_with_indices_outside_is_refused(tmp_path):
    """scipy's densifying kernel writes wherever the indices say: run in a subprocess so that a
    regression shows as a crash report, not a dead test session."""
    def poison(m):
        m.indices[:] = 10**9
    path = _sparse_smal(tmp_path, poison)
    code = (f"from animax.smal import load_smal\ntry:\n    load_smal({str(path)!r})\n"
            "except ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"{path}: smal: J_regressor: invalid sparse matrix"), out.stdout


def test_smal_sparse_regressor_with_a_lying_shape_is_refused(tmp_path):
    def grow(m):
        m._shape = (10**9, 10**9)
    path = _sparse_smal(tmp_path, grow)
    with pytest.raises(ValueError, match=r"J_regressor has shape \(1000000000, 1000000000\)"):
        load_smal(path)


def test_prior_pickles_still_load(tmp_path):
    pic = np.random.default_rng(1).normal(size=(6, 6))
    path = tmp_path / "prior.pkl"
    for protocol in (0, 1, 2, 4):
        path.write_bytes(chumpy_pickle_bytes({"pic": pic, "mean_pose": np.arange(6.0), "name": b"x"},
                                             {"pic"}, protocol=protocol))
        data = load_pickle(path)
        np.testing.assert_array_equal(data["pic"], pic)
        assert data["name"] == b"x"
