"""Element types and tensor/tile types."""

from __future__ import annotations

import dataclasses
import enum

from prism_jax.ir.symbolic import Size, mul, normalize


class DType(enum.Enum):
    """Element types, named as numpy/JAX name them."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT64 = "int64"
    INT32 = "int32"
    INT8 = "int8"
    UINT32 = "uint32"
    BOOL = "bool"

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def short(self) -> str:
        return _SHORT[self]

    @staticmethod
    def from_name(name: str) -> "DType":
        try:
            return DType(str(name))
        except ValueError:
            known = ", ".join(d.value for d in DType)
            raise ValueError(f"unsupported dtype {name!r}; supported: {known}") from None


_FLOATS = {DType.FLOAT64, DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16}
_ITEMSIZE = {
    DType.FLOAT64: 8, DType.FLOAT32: 4, DType.FLOAT16: 2, DType.BFLOAT16: 2,
    DType.INT64: 8, DType.INT32: 4, DType.INT8: 1, DType.UINT32: 4, DType.BOOL: 1,
}
_SHORT = {
    DType.FLOAT64: "f64", DType.FLOAT32: "f32", DType.FLOAT16: "f16", DType.BFLOAT16: "bf16",
    DType.INT64: "i64", DType.INT32: "i32", DType.INT8: "i8", DType.UINT32: "u32", DType.BOOL: "bool",
}


@dataclasses.dataclass(frozen=True, slots=True)
class TensorType:
    """Shape (concrete or symbolic sizes) and element type of a device tensor or a tile."""

    shape: tuple[Size, ...]
    dtype: DType
    _hash: int | None = dataclasses.field(default=None, init=False, repr=False, compare=False)  # on first use

    def __post_init__(self):
        shape = self.shape
        if type(shape) is not tuple or any(type(d) is not int for d in shape):  # ints (the common case) are normal
            object.__setattr__(self, "shape", tuple(normalize(d) for d in shape))

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash((self.shape, self.dtype)))
        return self._hash

    def __reduce__(self):  # without the cached hash: string hashes differ between processes
        return TensorType, (self.shape, self.dtype)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def num_elements(self) -> Size:
        return mul(*self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(str(d) for d in self.shape)}]"
