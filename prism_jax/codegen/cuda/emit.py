"""An instantiated custom kernel → CUDA C++ with an XLA FFI handler for the CUDA platform.

The same block program as the C++ emitter (it reuses its walk over loads, ops, accumulators and
stores), mapped to the GPU: one thread block per grid block (``blockIdx.x``, decomposed into the grid
dims), tiles in dynamic shared memory, every tile op a loop over its elements strided by the block's
threads followed by ``__syncthreads()``; reductions and matmuls give each thread whole output
elements (a serial loop over the reduced dim). Matmul operands that the C++ emitter reads in place are
read from global memory here too (bf16 weights widened on load). This is a correct first mapping, not
a tuned one: no warp-level reductions and no tensor-core MMA yet.
"""

from __future__ import annotations

import math
from typing import Sequence

from prism_jax.codegen.cpp.emit import KernelEmitter, _broadcast_strides, _ctype, _offset, _shape, _strides
from prism_jax.ir import BlockGraph, DType, IRError, TensorType
from prism_jax.ir.graph import BlockInput, Op

THREADS = 128  # threads per block unless the caller asks otherwise (CudaOptions.threads)

PREAMBLE = r"""
#include <cstdint>
#include <cmath>
#include <cuda_runtime.h>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
__device__ __forceinline__ float p_bf16_to_f32(std::uint16_t b) {
  return __uint_as_float(static_cast<unsigned int>(b) << 16);
}
__device__ __forceinline__ std::uint16_t p_f32_to_bf16(float x) {
  unsigned int u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
__device__ __forceinline__ float p_logistic(float x) {
  float e = expf(-fabsf(x));
  return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
#define P_NEG_INF (-INFINITY)
"""


class CudaKernelEmitter(KernelEmitter):
    BF16_TO_F32 = "p_bf16_to_f32"
    F32_TO_BF16 = "p_f32_to_bf16"
    EXP = "std::exp"
    BATCHED_VIEWS = False  # its matmul indexes views as unit-batch tiles
    TRANSPOSED_VIEWS = False
    INLINE_INTO_REDUCTIONS = False  # its reductions index the reduced dims r0, r1, ...
    REDUCE_IN_PRODUCER = False  # (the same reason)
    ELEMENTWISE_VIEWS = False  # tiles are staged in shared memory
    SCALED_OPERANDS = False  # its matmul reads staged tiles
    ACCUMULATED_SUMS = False  # its matmul writes its tile

    def __init__(self, block: BlockGraph, source_types: Sequence[TensorType], symbol: str,
                 threads: int = THREADS) -> None:
        super().__init__(block, source_types, symbol)
        self.threads = threads
        self.shared_bytes = 0
        self.scratch_lines: list[str] = []

    # -- element loops: strided over the block's threads -------------------------------------------

    def loops(self, shape: Sequence[int], body: str) -> None:
        n = math.prod(shape) if shape else 1
        self.w(f"for (std::int64_t f = threadIdx.x; f < {n}; f += blockDim.x) {{")
        self.w.depth += 1
        for d, size in enumerate(shape):
            inner = math.prod(shape[d + 1:])
            self.w(f"const std::int64_t i{d} = (f / {inner}) % {size};")
        self.w(body)
        self.w.depth -= 1
        self.w("}")
        self.w("__syncthreads();")

    def fill(self, pointer: str, n: int, value: str) -> None:
        self.w(f"for (std::int64_t f = threadIdx.x; f < {n}; f += blockDim.x) {pointer}[f] = {value};")
        self.w("__syncthreads();")

    def copy(self, dst: str, src: str, n: int) -> None:
        self.fill(dst, n, f"{src}[f]")

    def scratch(self, name: str, n: int, value: str) -> None:
        self.w(f"float* {name} = reinterpret_cast<float*>(smem + {self._carve(n * 4)});")
        self.fill(name, n, value)

    def _carve(self, nbytes: int) -> int:
        offset = self.shared_bytes
        self.shared_bytes += (nbytes + 15) // 16 * 16
        return offset

    # -- tiles in shared memory ---------------------------------------------------------------------

    def _declare_values(self) -> None:
        for v, t in enumerate(self.block.values):
            if v in self.views:
                self.w(f"const {_ctype(t)}* v{v} = nullptr;  // read in place from global memory")
            elif v not in self.elided and v not in self.inlined:
                n = max(1, math.prod(_shape(t)))
                self.w(f"{_ctype(t)}* v{v} = reinterpret_cast<{_ctype(t)}*>(smem + "
                       f"{self._carve(n * t.dtype.itemsize)});")

    def _block_indices(self) -> None:
        rest = "static_cast<std::int64_t>(blockIdx.x)"
        for p in range(len(self.grid) - 1, -1, -1):
            self.w(f"const std::int64_t b{p} = {rest} % {self.grid[p]};")
            rest = f"({rest} / {self.grid[p]})"

    def _load(self, inp: BlockInput, iteration: str) -> None:
        tile = _shape(self.block.values[inp.value])
        strides = _strides(_shape(self.sources[inp.source]))
        base = " + ".join(f"{self._chunk(row, loop, iteration)} * {t * s}"
                          for row, loop, t, s in zip(inp.imap, inp.fmap, tile, strides)) or "0"
        if inp.value in self.views:
            self.w(f"v{inp.value} = src{inp.source} + ({base});")
            return
        self.loops(tile, f"v{inp.value}[{_offset(_strides(tile))}] = src{inp.source}[({base}) + {_offset(strides)}];")

    def _store(self, k: int, value: int) -> None:
        out = self.block.outputs[k]
        tile = _shape(self.block.values[value])
        strides = _strides(_shape(self.block.output_type(k)))
        base = " + ".join(f"{self._chunk(row, False, '0')} * {t * s}"
                          for row, t, s in zip(out.omap, tile, strides)) or "0"
        self.loops(tile, f"dst{k}[({base}) + {_offset(strides)}] = v{value}[{_offset(_strides(tile))}];")

    # -- ops whose elements are sums: one thread per output element ---------------------------------

    def _reduce(self, op: Op, shape: Sequence[int]) -> None:
        src, out = op.inputs[0], op.outputs[0]
        in_shape = _shape(self.block.values[src])
        axes = [d for d, (a, b) in enumerate(zip(in_shape, shape)) if a != b]
        is_sum = op.kind.value == "reduce_sum"
        index = [f"i{d}" if d not in axes else f"r{d}" for d in range(len(in_shape))]
        element = self.read(src, f"v{src}[{' + '.join(f'{i} * {s}' for i, s in zip(index, _strides(in_shape)))}]")
        body = ["float acc = " + ("0.0f;" if is_sum else "P_NEG_INF;")]
        body += [f"for (std::int64_t r{d} = 0; r{d} < {in_shape[d]}; ++r{d})" for d in axes]
        body.append(f"  acc = {'acc + ' + element if is_sum else 'fmaxf(acc, ' + element + ')'};")
        body.append(f"v{out}[{_offset(_strides(shape))}] = {self.write(out, 'acc')};")
        self.loops(shape, " ".join(body))

    def _matmul(self, op: Op, shape: Sequence[int]) -> None:
        a, b = op.inputs
        out = op.outputs[0]
        if any(self.block.values[v].dtype != DType.FLOAT32 for v in (a, b, out)):
            raise IRError("the CUDA emitter multiplies float32 tiles only (the block graph converts loads)")
        a_shape, b_shape = _shape(self.block.values[a]), _shape(self.block.values[b])
        m, k = a_shape[-2:]
        n = b_shape[-1]
        b_source = self.bf16_operands.get(b, b)
        lda, ldb = self.views.get(a, k), self.views.get(b_source, n)
        rank = len(shape)
        batch = shape[:-2]
        a_batch = _offset([s * m * k for s in _broadcast_strides(a_shape[:-2], batch)]) if batch else "0"
        b_batch = _offset([s * k * n for s in _broadcast_strides(b_shape[:-2], batch)]) if batch else "0"
        row, col = f"i{rank - 2}", f"i{rank - 1}"
        b_elem = f"v{b_source}[({b_batch}) + kk * {ldb} + {col}]"
        b_value = f"p_bf16_to_f32({b_elem})" if b in self.bf16_operands else b_elem
        body = (f"float acc = 0.0f; for (std::int64_t kk = 0; kk < {k}; ++kk) "
                f"acc += v{a}[({a_batch}) + {row} * {lda} + kk] * {b_value}; "
                f"v{out}[{_offset(_strides(shape))}] = acc;")
        self.loops(shape, body)

    # -- the translation unit -----------------------------------------------------------------------

    def source(self) -> str:
        self._check_supported()
        params = [f"const {_ctype(t)}* __restrict__ src{k}" for k, t in enumerate(self.sources)]
        params += [f"{_ctype(self.block.output_type(k))}* __restrict__ dst{k}" for k in range(len(self.block.outputs))]
        self.w.depth = 1
        self._block_indices()
        self._declare_values()
        self._block_body()
        if self.shared_bytes > 227 * 1024:
            raise IRError(f"the kernel's tiles need {self.shared_bytes} bytes of shared memory (227 KB on an H100)")
        signature = f"{self.symbol}_kernel({', '.join(params)})"
        kernel = ([f"__global__ void __launch_bounds__({self.threads}) {signature} {{",
                   "  extern __shared__ __align__(16) unsigned char smem[];"] + self.w.lines + ["}"])
        return PREAMBLE + "\n".join(kernel) + "\n" + self._handler() + "\n"

    def _handler(self) -> str:
        args = ["cudaStream_t stream"] + [f"ffi::AnyBuffer a{k}" for k in range(len(self.sources))]
        args += [f"ffi::Result<ffi::AnyBuffer> r{k}" for k in range(len(self.block.outputs))]
        casts = [f"reinterpret_cast<const {_ctype(t)}*>(a{k}.untyped_data())" for k, t in enumerate(self.sources)]
        casts += [f"reinterpret_cast<{_ctype(self.block.output_type(k))}*>(r{k}->untyped_data())"
                  for k in range(len(self.block.outputs))]
        blocks = math.prod(self.grid)
        bind = ".Ctx<ffi::PlatformStream<cudaStream_t>>()" + "".join(
            ".Arg<ffi::AnyBuffer>()" for _ in self.sources) + "".join(".Ret<ffi::AnyBuffer>()" for _ in self.block.outputs)
        return "\n".join([
            f"static ffi::Error {self.symbol}_impl({', '.join(args)}) {{",
            f"  cudaFuncSetAttribute({self.symbol}_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, "
            f"{self.shared_bytes});",
            f"  {self.symbol}_kernel<<<{blocks}, {self.threads}, {self.shared_bytes}, stream>>>({', '.join(casts)});",
            "  cudaError_t status = cudaGetLastError();",
            "  if (status != cudaSuccess) return ffi::Error::Internal(cudaGetErrorString(status));",
            "  return ffi::Error::Success();",
            "}",
            f"XLA_FFI_DEFINE_HANDLER_SYMBOL({self.symbol}, {self.symbol}_impl, ffi::Ffi::Bind(){bind});",
        ])


def kernel_source(block: BlockGraph, source_types: Sequence[TensorType], symbol: str, threads: int = THREADS) -> str:
    """The CUDA translation unit of one custom kernel (``symbol`` names its FFI handler), launched with
    ``threads`` threads per block (every loop strides by ``blockDim.x``, so any warp multiple works)."""
    return CudaKernelEmitter(block, source_types, symbol, threads).source()
