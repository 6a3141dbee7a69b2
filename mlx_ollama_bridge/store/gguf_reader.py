"""Reading a GGUF file's metadata and tensor list with explicit bounds, before MLX sees it.

The parsing is the ``gguf`` package's (``GGUFReader``, maintained with llama.cpp): pure
Python over a memory map, so a malformed file raises an exception rather than reading out
of bounds. A hostile file could still make it loop for minutes or fill memory (a header
announcing a billion keys, an array of millions of empty strings), so this reader checks
every count, size and offset against a limit and against the bytes the file actually has,
before the ``gguf`` package reads that part. Any failure is a 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

from ..errors import BadRequest

# Far above any real model (Gemma's 262k-token vocabulary, a few thousand tensors), far
# below what would take the server minutes or gigabytes to read.
MAX_KEYS = 4096
MAX_TENSORS = 65536
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_ITEMS = 1 << 21
MAX_ITEMS = 1 << 23  # every array item and key of the file together
MAX_STRING_BYTES = 16 << 20  # a chat template is kilobytes; a token a few bytes
MAX_ALIGNMENT = 1 << 16

_ARRAY = int(GGUFValueType.ARRAY)  # a plain int: comparing to the enum costs per item
_MIN_SIZES = {  # the fewest bytes one item of a kind takes in the file
    GGUFValueType.STRING: 8,
    GGUFValueType.ARRAY: 12,
}


class GGUFTensor(NamedTuple):
    """One tensor of the file, as its header describes it."""

    type_name: str  # GGML type: F32, F16, Q4_0, Q6_K, ...
    shape: tuple[int, ...]  # MLX (row-major) order, i.e. GGML's dims reversed


class GGUFHeader(NamedTuple):
    """Metadata (Python scalars, strings and lists) and tensors by name."""

    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]


def read_gguf_header(path: Path) -> GGUFHeader:
    """Read and check ``path``'s metadata and tensor list (not the tensor data).

    Raises :class:`BadRequest` for anything that is not a well-formed GGUF v2/v3 file within
    the limits above, naming what is wrong.
    """
    path = Path(path)
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise BadRequest(f"{path.name} is not a GGUF file")
    try:
        reader = _BoundedReader(path)
        metadata = {
            name: _value(field)
            for name, field in reader.fields.items()
            if not name.startswith("GGUF.")  # the reader's own entries: version, counts
        }
        tensors = {
            t.name: GGUFTensor(t.tensor_type.name, tuple(int(d) for d in t.shape[::-1]))
            for t in reader.tensors
        }
    except (ValueError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        raise BadRequest(f"cannot read GGUF file {path.name}: {exc}") from exc
    return GGUFHeader(metadata, tensors)


def read_gguf_tensors(path: Path) -> Iterator[tuple[str, str, np.ndarray]]:
    """Each tensor of a file :func:`read_gguf_header` accepted: name, GGML type name and its
    data as stored (a view of the memory map: numbers for F32/F16, block bytes otherwise)."""
    try:
        reader = _BoundedReader(Path(path))
    except (ValueError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        raise BadRequest(f"cannot read GGUF file {Path(path).name}: {exc}") from exc
    for tensor in reader.tensors:
        yield tensor.name, tensor.tensor_type.name, tensor.data


def _value(field: Any) -> Any:
    """A metadata field as Python: float32 values as written (1e-05, not 9.99999974e-06)."""
    is_array = field.types[0] == GGUFValueType.ARRAY
    kind = field.types[-1]
    if kind == GGUFValueType.STRING:
        texts = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return texts if is_array else texts[0]
    values = [item for i in field.data for item in field.parts[i].tolist()]
    if kind == GGUFValueType.FLOAT32:
        values = [float(str(np.float32(item))) for item in values]
    return values if is_array else values[0]


class _BoundedReader(GGUFReader):
    """``GGUFReader`` with a bound checked before each count, string, array and tensor is
    read; number arrays are read in one view rather than one per item."""

    _items = 0

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        # A plain view of the memory map: numpy's memmap subclass makes every slice cost
        # a Python call, ten times the parse time of a real vocabulary.
        self._data = value.view(np.ndarray)

    def _left(self, offset: int) -> int:
        return max(0, len(self._data) - offset)

    def _count(self, count: int, limit: int, what: str, offset: int, min_size: int) -> int:
        count = int(count)
        if count > limit:
            raise ValueError(f"{count} {what} (at most {limit})")
        if count * min_size > self._left(offset):
            raise ValueError(f"{count} {what} at offset {offset} run past the end of the file")
        self._items += count
        if self._items > MAX_ITEMS:
            raise ValueError(f"more than {MAX_ITEMS} metadata items")
        return count

    def _build_fields(self, offs: int, count: int) -> int:
        self._count(count, MAX_KEYS, "metadata keys", offs, 8 + 4 + 1)
        offs = super()._build_fields(offs, count)
        alignment = self.fields.get("general.alignment")
        if alignment is not None and int(alignment.parts[-1][0]) > MAX_ALIGNMENT:
            raise ValueError(f"alignment {int(alignment.parts[-1][0])} (at most {MAX_ALIGNMENT})")
        return offs

    def _build_tensor_info(self, offs: int, count: int) -> tuple[int, list[Any]]:
        self._count(count, MAX_TENSORS, "tensors", offs, 8 + 4 + 4 + 8)
        return super()._build_tensor_info(offs, count)

    def _get_str(self, offset: int) -> tuple[np.ndarray, np.ndarray]:
        length = self._get(offset, np.uint64)
        if len(length) != 1:
            raise ValueError(f"a string at offset {offset} runs past the end of the file")
        size = int(length[0])
        if size > MAX_STRING_BYTES:
            raise ValueError(f"a string of {size} bytes at offset {offset}")
        if size > self._left(offset + 8):
            raise ValueError(f"a string at offset {offset} runs past the end of the file")
        return length, self._get(offset + 8, np.uint8, size)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list, list]:
        if raw_type != _ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        header = self._get(orig_offs, np.uint32, 3)  # item type, then a uint64 length
        if len(header) != 3:
            raise ValueError(f"an array at offset {orig_offs} runs past the end of the file")
        item_type, length = self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64)
        kind = GGUFValueType(int(item_type[0]))
        scalar = self.gguf_scalar_to_np.get(kind)
        size = np.dtype(scalar).itemsize if scalar is not None else _MIN_SIZES[kind]
        count = self._count(length[0], MAX_ARRAY_ITEMS, "array items", orig_offs + 12, size)
        if scalar is None:  # strings, nested arrays: item by item, each bounded too
            return super()._get_field_parts(orig_offs, raw_type)
        values = self._get(orig_offs + 12, scalar, count)
        parts = [item_type, length, values]
        return 12 + int(values.nbytes), parts, [2], [GGUFValueType.ARRAY, kind]

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        for field in fields:
            _check_tensor(field, start_offs, len(self._data))
        super()._build_tensors(start_offs, fields)


def _check_tensor(field: Any, data_start: int, file_size: int) -> None:
    """Dimensions, type and data of one tensor inside the file, before any view of it."""
    _name_len, _name, n_dims, dims, raw_type, offset = field.parts
    name = field.name
    if int(n_dims[0]) > MAX_DIMS or len(dims) != int(n_dims[0]):
        raise ValueError(f"tensor {name} has {int(n_dims[0])} dimensions (at most {MAX_DIMS})")
    kind = GGMLQuantizationType(int(raw_type[0]))
    elements = 1
    for dim in dims.tolist():
        elements *= int(dim)
    block, block_bytes = GGML_QUANT_SIZES[kind]
    if elements % block:
        raise ValueError(f"tensor {name} has {elements} weights, not whole {kind.name} blocks")
    start, size = data_start + int(offset[0]), elements // block * block_bytes
    if start + size > file_size:
        raise ValueError(
            f"tensor {name} ({kind.name}, {size} bytes at offset {start}) lies past the end "
            f"of the file ({file_size} bytes)"
        )


__all__ = ["GGUFHeader", "GGUFTensor", "read_gguf_header", "read_gguf_tensors"]
