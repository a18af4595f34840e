"""Software prefetch from compiled code: ask the CPU to start bringing memory into the cache, and go on.

The daemon's keys are rows of a pool, 24 KB each for a 16-unit hybrid model;
with 10,000 keys the rows are far larger than the caches, so a batch's next
row is cold: its step waits on memory, a miss after a miss, about 40 % of it
(measured: 12 us an event on cold rows, 7 on hot).  Asking for the next row's
cache lines before stepping the current one lets the memory system fetch
them while the CPU computes.  A prefetch never faults and changes nothing
(it is a hint: results are bit for bit the same with or without it).

    prefetch_write(address)              # the cache line holding ``address``, to be written
    prefetch_span(address, nbytes)       # every cache line of [address, address + nbytes)
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: bytes in a cache line (x86-64, aarch64): one prefetch each
LINE = 64


@intrinsic
def prefetch_write(typingctx, address):
    """llvm.prefetch(address, rw = 1: to be written, locality = 3: keep in every cache level, data)."""
    signature = types.void(types.int64)

    def codegen(context, builder, sig, args):
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        function = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer], function_type)
        builder.call(function, [builder.inttoptr(args[0], byte_pointer), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, inline="always")
def prefetch_span(address, nbytes):
    for at in range(0, nbytes, LINE):
        prefetch_write(address + at)
