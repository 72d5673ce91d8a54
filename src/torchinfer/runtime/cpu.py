"""What this CPU can do, for choices that depend on it: whether bfloat16 runs natively.

Read from the operating system (``/proc/cpuinfo`` on Linux), never assumed from the model
name: the same "AMD EPYC" may be Zen 3 (no bf16) or Zen 4 (avx512_bf16). Tests replace
``cpu_flags`` to check both ways.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# Flags that mean bf16 arithmetic in hardware: AVX-512 BF16 (Intel Cooper Lake+, AMD Zen 4+)
# and AMX (Intel Sapphire Rapids+). Without them bf16 is emulated and slower than fp32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags worth naming beside a figure or keying a measurement by: the vector units the
# runtimes' kernels are chosen by
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                "amx_int8", "avx_vnni", "asimd", "sve")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (which runtime wins changes with its vector units)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def native_bf16() -> bool:
    """Whether bfloat16 runs in hardware here (then it is worth measuring against fp32)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def vector_flags() -> list[str]:
    """The flags of ``VECTOR_FLAGS`` this CPU has, in that order."""
    have = cpu_flags()
    return [f for f in VECTOR_FLAGS if f in have]


def describe_cpu() -> str:
    """One line naming the CPU and its vector flags, for benchmark output and records."""
    flags = vector_flags()
    return f"{cpu_name()} ({', '.join(flags) if flags else 'no AVX2/AVX-512 flags reported'})"
