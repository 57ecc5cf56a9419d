"""Import the published DeBCR (m-rBCR) TensorFlow checkpoints without TensorFlow.

A TensorFlow 2 object-based checkpoint is a *tensor bundle*: a prefix such as
``.../ckpt-best`` names an index file (``ckpt-best.index``) and one or more data
shards (``ckpt-best.data-00000-of-00001``).

* The index is a LevelDB-format sorted string table.  A 48-byte footer at the
  end of the file holds two block handles (metaindex and index, each an
  offset/size pair of varint64s) and a magic number.  Each block is a run of
  prefix-compressed entries (``shared``, ``non_shared`` and ``value_length``
  varint32s, then the unshared key bytes and the value) followed by an array
  of uint32 restart offsets and their count; each block is followed by a
  five-byte trailer (compression type and masked CRC32C of block + type).
* The value of the entry with the empty key is a ``BundleHeaderProto``
  (number of shards, endianness); every other value is a ``BundleEntryProto``
  (dtype, shape, shard id, byte offset and size in that shard, masked CRC32C of
  the tensor bytes).  The protobuf wire format is decoded here by hand.
* Tensor bytes are stored little-endian and C-ordered in the data shard.

Keras stores each weight under ``<layer path>/{kernel,bias}/.ATTRIBUTES/
VARIABLE_VALUE``; :func:`debcr_layer_map` encodes where every layer of the
published network sits in that tree and :func:`debcr_state_dict` converts the
Keras layouts to PyTorch (conv kernels HWIO -> OIHW, ``Dense`` (in, out) -> a
1x1 convolution, ``Conv1D`` (width, in, out) -> a ``(1, width)`` convolution).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sharpscope.errors import InputError, ModelFormatError

__all__ = [
    "DEBCR_CREDIT",
    "TensorEntry",
    "crc32c",
    "debcr_header",
    "debcr_layer_map",
    "debcr_state_dict",
    "import_debcr",
    "mask_crc",
    "read_bundle_index",
    "read_checkpoint",
    "resolve_checkpoint_prefix",
    "unmask_crc",
]

DEBCR_CREDIT = (
    "DeBCR / m-rBCR weights by Rui Li, Artem Yushkevich, Xiaofeng Chu, Mikhail Kudryashev "
    "and Artur Yakimovich (DeBCR, 2024/2025; m-rBCR, Li, Kudryashev & Yakimovich, 2024); "
    "converted from the published TensorFlow checkpoint"
)
DEBCR_LICENSE = (
    "CC-BY-4.0 (Creative Commons Attribution 4.0 International, "
    "https://creativecommons.org/licenses/by/4.0/legalcode); the full text ships with the "
    "published weights as weights/LICENSE. Credit the DeBCR authors when using these weights."
)

# ----------------------------------------------------------------------------- CRC32C

_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reversed
_MASK_DELTA = 0xA282EAD8


def _crc_tables() -> list[list[int]]:
    first = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        first.append(c)
    tables = [first]
    for _ in range(7):  # slicing-by-8 tables
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ first[prev[n] & 0xFF] for n in range(256)])
    return tables


_T = _crc_tables()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``.

    Parameters
    ----------
    data : bytes-like
        Bytes to checksum.
    crc : int, optional
        A previous CRC to extend (0 starts a new checksum).

    Returns
    -------
    int
        The unmasked 32-bit CRC.

    Examples
    --------
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    buf = bytes(data)
    crc ^= 0xFFFFFFFF
    n8 = len(buf) - len(buf) % 8
    if n8:
        words = struct.unpack(f"<{n8 // 8}Q", buf[:n8])
        for w in words:
            w ^= crc
            crc = (
                t7[w & 0xFF]
                ^ t6[(w >> 8) & 0xFF]
                ^ t5[(w >> 16) & 0xFF]
                ^ t4[(w >> 24) & 0xFF]
                ^ t3[(w >> 32) & 0xFF]
                ^ t2[(w >> 40) & 0xFF]
                ^ t1[(w >> 48) & 0xFF]
                ^ t0[w >> 56]
            )
    for b in buf[n8:]:
        crc = (crc >> 8) ^ t0[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """The masked form of a CRC that LevelDB and TensorFlow store on disk.

    Examples
    --------
    >>> unmask_crc(mask_crc(0x12345678)) == 0x12345678
    True
    """
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Inverse of :func:`mask_crc`.

    Examples
    --------
    >>> mask_crc(unmask_crc(7)) == 7
    True
    """
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- varints / protobuf


class _Corrupt(Exception):
    """Internal: a structural problem in the checkpoint bytes."""


def _varint(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    end = len(buf) if limit is None else limit
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("varint too long")


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a protobuf message."""
    pos = 0
    n = len(buf)
    while pos < n:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Corrupt("protobuf field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise _Corrupt("truncated fixed64")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise _Corrupt("truncated length-delimited field")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > n:
                raise _Corrupt("truncated fixed32")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


# TensorFlow DataType enum -> numpy dtype (little-endian)
_TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DT_STRING = 7


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint bundle, as described by its ``BundleEntryProto``.

    Attributes
    ----------
    key : str
        Checkpoint key, e.g. ``model/layer_with_weights-0/.../kernel/.ATTRIBUTES/VARIABLE_VALUE``.
    dtype : int
        TensorFlow ``DataType`` enum value (1 = float32, 7 = string, 9 = int64, ...).
    shape : tuple of int
        Tensor shape.
    shard_id, offset, size : int
        Where the bytes live in the data shards.
    crc32c : int
        Masked CRC32C of the stored bytes.
    """

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, wire, value in _proto_fields(buf):
        if field == 2 and wire == 2:  # Dim
            size = 0
            for f2, w2, v2 in _proto_fields(value):
                if f2 == 1 and w2 == 0:
                    size = v2 - (1 << 64) if v2 >= 1 << 63 else v2
            if size < 0:
                raise _Corrupt("tensor with unknown dimension")
            dims.append(size)
        elif field == 3 and wire == 0 and value:
            raise _Corrupt("tensor with unknown rank")
    return tuple(dims)


def _parse_entry(key: str, buf: bytes) -> TensorEntry:
    dtype = 0
    shape: tuple[int, ...] = ()
    shard_id = offset = size = crc = 0
    for field, wire, value in _proto_fields(buf):
        if field == 1 and wire == 0:
            dtype = value
        elif field == 2 and wire == 2:
            shape = _parse_shape(value)
        elif field == 3 and wire == 0:
            shard_id = value
        elif field == 4 and wire == 0:
            offset = value
        elif field == 5 and wire == 0:
            size = value
        elif field == 6 and wire == 5:
            crc = value
        elif field == 7:
            raise _Corrupt(f"partitioned (sliced) variable {key!r} is not supported")
    return TensorEntry(key, dtype, shape, shard_id, offset, size, crc)


def _parse_header(buf: bytes) -> dict[str, int]:
    header = {"num_shards": 1, "endianness": 0}
    for field, wire, value in _proto_fields(buf):
        if field == 1 and wire == 0:
            header["num_shards"] = value
        elif field == 2 and wire == 0:
            header["endianness"] = value
    return header


# ----------------------------------------------------------------------------- LevelDB table

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5


def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int]) -> bytes:
    offset, size = handle
    if offset + size + _BLOCK_TRAILER > len(data):
        raise _Corrupt("block extends past the end of the index file")
    block = data[offset : offset + size]
    ctype = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if crc32c(data[offset : offset + size + 1]) != unmask_crc(stored):
        raise _Corrupt("index block checksum mismatch")
    if ctype == 1:
        raise _Corrupt("index block is snappy-compressed, which is not supported")
    if ctype != 0:
        raise _Corrupt(f"unknown block compression type {ctype}")
    return block


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt("bad restart array")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        non_shared, pos = _varint(block, pos, limit)
        vlen, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise _Corrupt("bad block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + vlen]
        pos += vlen


def _table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_SIZE:
        raise _Corrupt("index file too short")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, _FOOTER_SIZE - 8)[0] != _TABLE_MAGIC:
        raise _Corrupt("not a TensorFlow checkpoint index (bad table magic)")
    _metaindex, pos = _block_handle(footer, 0)
    index_handle, _ = _block_handle(footer, pos)
    for _last_key, handle_bytes in _block_entries(_read_block(data, index_handle)):
        handle, _ = _block_handle(handle_bytes, 0)
        yield from _block_entries(_read_block(data, handle))


def read_bundle_index(index_path: str | Path) -> tuple[dict[str, int], dict[str, TensorEntry]]:
    """Parse a TensorFlow tensor-bundle index file.

    Parameters
    ----------
    index_path : str or Path
        The ``<prefix>.index`` file.

    Returns
    -------
    header : dict
        ``num_shards`` and ``endianness`` (0 = little) from the ``BundleHeaderProto``.
    entries : dict
        Checkpoint key -> :class:`TensorEntry`, in key order.

    Raises
    ------
    ModelFormatError
        The file is missing, truncated or not a tensor-bundle index.

    Examples
    --------
    >>> header, entries = read_bundle_index("ckpt-best.index")  # doctest: +SKIP
    >>> header["num_shards"]  # doctest: +SKIP
    1
    """
    path = Path(index_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"cannot read checkpoint index {path}: {exc.strerror}") from exc
    header: dict[str, int] | None = None
    entries: dict[str, TensorEntry] = {}
    try:
        for raw_key, value in _table_items(data):
            if raw_key == b"":
                header = _parse_header(value)
                continue
            key = raw_key.decode("utf-8")
            entries[key] = _parse_entry(key, value)
    except (_Corrupt, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"corrupt checkpoint index {path}: {exc}") from exc
    if header is None:
        raise ModelFormatError(f"corrupt checkpoint index {path}: no bundle header entry")
    if header["endianness"] != 0:
        raise ModelFormatError(f"checkpoint {path} is big-endian, which is not supported")
    return header, entries


def resolve_checkpoint_prefix(path: str | Path) -> Path:
    """Turn a checkpoint prefix, index file or folder into the checkpoint prefix.

    A folder must contain exactly one ``*.index`` file (``ckpt-best.index`` is
    preferred when several are present).

    Examples
    --------
    >>> resolve_checkpoint_prefix("weights/2D_denoising")  # doctest: +SKIP
    PosixPath('weights/2D_denoising/ckpt-best')
    """
    p = Path(path)
    if p.is_dir():
        indexes = sorted(p.glob("*.index"))
        best = [i for i in indexes if i.name == "ckpt-best.index"]
        if best:
            indexes = best
        if len(indexes) != 1:
            found = "no" if not indexes else f"{len(indexes)}"
            raise ModelFormatError(f"{found} checkpoint index files (*.index) in {p}")
        return indexes[0].with_suffix("")
    if p.suffix == ".index":
        p = p.with_suffix("")
    if not Path(str(p) + ".index").is_file():
        raise ModelFormatError(f"checkpoint not found: {p}.index does not exist")
    return p


def _string_tensor_crc(raw: bytes, n: int) -> tuple[int, int]:
    """CRC of a serialized DT_STRING tensor as the bundle writer computes it.

    Layout: ``n`` varint64 lengths, a masked CRC32C of the lengths (each taken as
    a little-endian uint32, or uint64 for strings of 4 GiB and more), then the
    string bytes.  Returns (crc, bytes consumed).
    """
    pos = 0
    lengths = []
    for _ in range(n):
        length, pos = _varint(raw, pos)
        lengths.append(length)
    len_bytes = b"".join(
        struct.pack("<I", n_) if n_ <= 0xFFFFFFFF else struct.pack("<Q", n_) for n_ in lengths
    )
    crc = crc32c(len_bytes)
    if pos + 4 > len(raw):
        raise _Corrupt("truncated string tensor")
    len_crc = raw[pos : pos + 4]
    if struct.unpack("<I", len_crc)[0] != mask_crc(crc):
        raise _Corrupt("string tensor length checksum mismatch")
    crc = crc32c(len_crc, crc)
    pos += 4
    crc = crc32c(raw[pos:], crc)
    return crc, len(raw)


def read_checkpoint(prefix: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Read every numeric tensor of a TensorFlow checkpoint bundle.

    Parameters
    ----------
    prefix : str or Path
        The checkpoint prefix (``.../ckpt-best``), its ``.index`` file, or the folder.
    verify : bool, optional
        Check the CRC32C of every tensor (string tensors included) against the index.

    Returns
    -------
    dict
        Checkpoint key -> numpy array (numeric tensors only; string tensors such
        as the object graph are verified and skipped).

    Raises
    ------
    ModelFormatError
        Missing files, a truncated shard, or a checksum mismatch.

    Examples
    --------
    >>> tensors = read_checkpoint("weights/2D_denoising/ckpt-best")  # doctest: +SKIP
    """
    prefix = resolve_checkpoint_prefix(prefix)
    header, entries = read_bundle_index(str(prefix) + ".index")
    nshards = header["num_shards"]
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for key, entry in entries.items():
        if entry.shard_id >= nshards:
            raise ModelFormatError(f"checkpoint entry {key!r} refers to a missing shard")
        if entry.shard_id not in shards:
            shard = Path(f"{prefix}.data-{entry.shard_id:05d}-of-{nshards:05d}")
            try:
                shards[entry.shard_id] = shard.read_bytes()
            except OSError as exc:
                raise ModelFormatError(
                    f"cannot read checkpoint data {shard}: {exc.strerror}"
                ) from exc
        data = shards[entry.shard_id]
        if entry.offset + entry.size > len(data):
            raise ModelFormatError(f"checkpoint data for {key!r} is truncated")
        raw = data[entry.offset : entry.offset + entry.size]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.dtype == _DT_STRING:
            if verify:
                try:
                    crc, _ = _string_tensor_crc(raw, count)
                except _Corrupt as exc:
                    raise ModelFormatError(f"corrupt checkpoint tensor {key!r}: {exc}") from exc
                if crc != unmask_crc(entry.crc32c):
                    raise ModelFormatError(f"checksum mismatch for checkpoint tensor {key!r}")
            continue
        dtype = _TF_DTYPES.get(entry.dtype)
        if dtype is None:
            raise ModelFormatError(
                f"checkpoint tensor {key!r} has unsupported TensorFlow dtype {entry.dtype}"
            )
        if count * dtype.itemsize != entry.size:
            raise ModelFormatError(f"checkpoint tensor {key!r}: size does not match its shape")
        if verify and crc32c(raw) != unmask_crc(entry.crc32c):
            raise ModelFormatError(f"checksum mismatch for checkpoint tensor {key!r}")
        out[key] = (
            np.frombuffer(raw, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
        )
    return out


# ----------------------------------------------------------------------------- layer mapping

_VAR = "/.ATTRIBUTES/VARIABLE_VALUE"


def _rdb_paths(prefix: str, hp: dict) -> list[tuple[str, str]]:
    """Module paths (in Keras creation order) of one pseudo-inverse branch."""
    paths = [(f"{prefix}.convs.{i}", "conv1d") for i in range(hp["conv1d_layers"])]
    for b in range(hp["rdb_blocks"]):
        for k in range(hp["rdb_layers"]):
            paths.append((f"{prefix}.blocks.{b}.pairs.{k}.0", "conv2d"))
            paths.append((f"{prefix}.blocks.{b}.pairs.{k}.1", "conv2d"))
        paths.append((f"{prefix}.blocks.{b}.local", "conv2d"))
    return paths


def debcr_layer_map(hparams: dict | None = None) -> dict[str, tuple[str, str]]:
    """Where every weighted layer of the published network sits in its checkpoint.

    The published Keras model is two sub-models: ``model/layer_with_weights-0``
    (the forward BCR stage) and ``model/layer_with_weights-1`` (the
    pseudo-inverse stage).  Inside each, weighted layers are numbered in the
    order Keras tracks them:

    * forward stage: the pointwise layers interleaved by depth, scales in the
      order 2, 4, 0 (``dense_u21, dense_u41, dense_u01, dense_u22, ...``); then
      the fusion block (its two convolutions nested as
      ``conv/layer_with_weights-{0,1}``); then the 1x1 heads of scales 0, 2, 4;
    * pseudo-inverse stage: branch 4 (width-only convolutions, then for every
      residual dense block its conv pairs and its 1x1 conv), the shared fusion
      block, branch 2, branch 0, then the 9x9 outputs of scales 0, 2, 4.

    Parameters
    ----------
    hparams : dict, optional
        :class:`~sharpscope.models.mrbcr.MRBCR` hyper-parameters (published defaults).

    Returns
    -------
    dict
        Checkpoint layer prefix -> (PyTorch module path in ``MRBCR``, Keras kind
        ``'dense' | 'conv2d' | 'conv1d'``).

    Examples
    --------
    >>> m = debcr_layer_map()
    >>> m["model/layer_with_weights-0/layer_with_weights-2"]
    ('dense.s0.layers.0', 'dense')
    >>> len(m)
    148
    """
    from sharpscope.models.mrbcr import MRBCR

    hp = MRBCR(**(hparams or {})).hparams  # fills in defaults and validates
    out: dict[str, tuple[str, str]] = {}

    fwd = "model/layer_with_weights-0/layer_with_weights-"
    idx = 0
    for k in range(hp["dense_layers"]):
        for s in (2, 4, 0):
            out[f"{fwd}{idx}"] = (f"dense.s{s}.layers.{k}", "dense")
            idx += 1
    out[f"{fwd}{idx}/conv/layer_with_weights-0"] = ("fuse_fwd.mix", "conv2d")
    out[f"{fwd}{idx}/conv/layer_with_weights-1"] = ("fuse_fwd.conv", "conv2d")
    idx += 1
    for s in (0, 2, 4):
        out[f"{fwd}{idx}"] = (f"head.s{s}", "conv2d")
        idx += 1

    inv = "model/layer_with_weights-1/layer_with_weights-"
    idx = 0
    for path, kind in _rdb_paths("branch.s4", hp):
        out[f"{inv}{idx}"] = (path, kind)
        idx += 1
    out[f"{inv}{idx}/conv/layer_with_weights-0"] = ("fuse_inv.mix", "conv2d")
    out[f"{inv}{idx}/conv/layer_with_weights-1"] = ("fuse_inv.conv", "conv2d")
    idx += 1
    for s in (2, 0):
        for path, kind in _rdb_paths(f"branch.s{s}", hp):
            out[f"{inv}{idx}"] = (path, kind)
            idx += 1
    for s in (0, 2, 4):
        out[f"{inv}{idx}"] = (f"out.s{s}", "conv2d")
        idx += 1
    return out


def _to_torch_kernel(kernel: np.ndarray, kind: str) -> np.ndarray:
    if kind == "dense":  # (in, out) -> (out, in, 1, 1)
        if kernel.ndim != 2:
            raise ValueError("Dense kernel must be 2-D")
        return kernel.T[:, :, None, None]
    if kind == "conv1d":  # (width, in, out) -> (out, in, 1, width)
        if kernel.ndim != 3:
            raise ValueError("Conv1D kernel must be 3-D")
        return kernel.transpose(2, 1, 0)[:, :, None, :]
    if kernel.ndim != 4:  # Conv2D (h, w, in, out) -> (out, in, h, w)
        raise ValueError("Conv2D kernel must be 4-D")
    return kernel.transpose(3, 2, 0, 1)


def debcr_state_dict(
    tensors: dict[str, np.ndarray], hparams: dict | None = None
) -> dict[str, torch.Tensor]:
    """Convert checkpoint tensors to an ``MRBCR`` state dict.

    Parameters
    ----------
    tensors : dict
        Output of :func:`read_checkpoint`.
    hparams : dict, optional
        Network hyper-parameters (published defaults).

    Returns
    -------
    dict
        PyTorch parameter name -> float32 tensor, contiguous, in OIHW layout.

    Raises
    ------
    ModelFormatError
        A layer of the network is missing from the checkpoint, has the wrong
        shape, or the checkpoint holds model weights the network does not use.

    Examples
    --------
    >>> sd = debcr_state_dict(read_checkpoint("weights/2D_denoising"))  # doctest: +SKIP
    """
    from sharpscope.models.mrbcr import MRBCR

    net = MRBCR(**(hparams or {}))
    expected = net.state_dict()
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for prefix, (path, kind) in debcr_layer_map(hparams).items():
        for var, suffix in (("kernel", "weight"), ("bias", "bias")):
            key = f"{prefix}/{var}{_VAR}"
            name = f"{path}.{suffix}"
            if key not in tensors:
                raise ModelFormatError(f"checkpoint lacks {key!r} (not a DeBCR m-rBCR checkpoint?)")
            arr = np.asarray(tensors[key], dtype=np.float32)
            try:
                arr = _to_torch_kernel(arr, kind) if var == "kernel" else arr
            except ValueError as exc:
                raise ModelFormatError(f"checkpoint tensor {key!r}: {exc}") from exc
            if tuple(arr.shape) != tuple(expected[name].shape):
                raise ModelFormatError(
                    f"checkpoint tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                    f"which does not fit layer {name} {tuple(expected[name].shape)}"
                )
            state[name] = torch.from_numpy(np.ascontiguousarray(arr))
            used.add(key)
    extra = [k for k in tensors if k.startswith("model/") and k.endswith(_VAR) and k not in used]
    if extra:
        raise ModelFormatError(
            f"checkpoint has {len(extra)} weights the m-rBCR network does not use, e.g. {extra[0]!r}"
        )
    return state


# ----------------------------------------------------------------------------- import

# what each published weight set was trained for (weights/README of the DeBCR release)
_DEBCR_TASKS = {
    "2D_denoising": "2-D denoising (CARE Tribolium, confocal low -> high exposure)",
    "3D_denoising": "denoising of 3-D stacks, applied plane by plane",
    "bright_SR": "widefield -> SIM super-resolution (deconvolution)",
    "confocal_SR": "confocal -> STED super-resolution (deconvolution)",
}


def debcr_header(name: str, source: str, hparams: dict | None = None):
    """The :class:`~sharpscope.models.format.ModelHeader` of an imported DeBCR model.

    The normalisation is min-max over the whole image (``pmin=0``, ``pmax=100``).
    The published code min-max scales every training patch to [0, 1] but does
    not normalise at prediction time; scaling the whole image to [0, 1] by its
    minimum and maximum is the closest behaviour that is the same for every
    tile.  Tiles default to 512 pixels with 160 pixels of overlap: the published
    128/32 stitching leaves seams of up to 0.4 of the output range with these
    weights (measured on a 1024x1024 image), 512/160 stays below 1e-3.  Coarse inputs are made by strided decimation as published.

    Parameters
    ----------
    name : str
        Model name.
    source : str
        Name of the published weight set (e.g. ``'2D_denoising'``).
    hparams : dict, optional
        Network hyper-parameters (published defaults).

    Examples
    --------
    >>> debcr_header("debcr-bright_SR", "bright_SR").normalization.pmax
    100.0
    """
    from sharpscope.models.format import ModelHeader
    from sharpscope.models.mrbcr import MRBCR

    hp = MRBCR(**(hparams or {})).hparams
    hp["decimation"] = "stride"
    task = _DEBCR_TASKS.get(source, "published DeBCR weights")
    return ModelHeader(
        name=name,
        description=f"DeBCR m-rBCR, published weights '{source}': {task}",
        architecture="mrbcr",
        hparams=hp,
        normalization={"pmin": 0.0, "pmax": 100.0},
        tile={"size": 512, "overlap": 160},
        provenance=f"{DEBCR_CREDIT} '{source}'",
        license=DEBCR_LICENSE,
    )


def import_debcr(
    ckpt_prefix: str | Path,
    out: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a published DeBCR TensorFlow checkpoint to a sharpscope model file.

    The checkpoint is read without TensorFlow, every tensor's CRC32C is
    verified, and the weights are mapped onto :class:`~sharpscope.models.mrbcr.MRBCR`.

    Parameters
    ----------
    ckpt_prefix : str or Path
        Checkpoint prefix (``.../2D_denoising/ckpt-best``), its ``.index`` file,
        or the folder holding it.
    out : str or Path, optional
        Output ``.safetensors`` file, or an existing folder to write
        ``<name>.safetensors`` into.  Default: the user model store.
    name : str, optional
        Model name; default ``debcr-<folder>`` (e.g. ``debcr-2D_denoising``), or
        the stem of ``out`` when ``out`` is a file name.
    overwrite : bool
        Replace an existing model file; without it an existing file is an error
        (nothing is read or written).

    Returns
    -------
    Path
        The written model file.

    Raises
    ------
    ModelFormatError
        Missing, corrupt or non-m-rBCR checkpoint (including checksum mismatches).
    InputError
        The output file exists and ``overwrite`` is False.

    Examples
    --------
    >>> import_debcr("DeBCR/weights/2D_denoising")  # doctest: +SKIP
    PosixPath('/home/me/.local/share/sharpscope/models/debcr-2D_denoising.safetensors')
    """
    from sharpscope.models.format import save_model
    from sharpscope.models.mrbcr import MRBCR
    from sharpscope.models.store import MODEL_SUFFIX, user_model_path, validate_model_name

    prefix = resolve_checkpoint_prefix(ckpt_prefix)
    source = prefix.resolve().parent.name or prefix.name
    out_path = None if out is None else Path(out).expanduser()
    if name is None:
        if out_path is not None and not out_path.is_dir():
            name = out_path.stem if out_path.suffix == MODEL_SUFFIX else out_path.name
        else:
            name = f"debcr-{source}"
    validate_model_name(name)
    if out_path is None:
        out_path = user_model_path(name)
    elif out_path.is_dir():
        out_path = out_path / f"{name}{MODEL_SUFFIX}"
    if out_path.exists() and not overwrite:
        raise InputError(f"{out_path} exists; pass --overwrite to replace it")

    tensors = read_checkpoint(prefix, verify=True)
    state = debcr_state_dict(tensors)
    header = debcr_header(name, source)
    net = MRBCR(**header.hparams)
    net.load_state_dict(state, strict=True)
    return save_model(out_path, net, header)
