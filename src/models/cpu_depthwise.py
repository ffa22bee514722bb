"""The project's CPU kernel for 3x3 depthwise convolutions (``kernels/depthwise3x3_cpu.cc``).

Why: MindSpore 2.10 hands oneDNN plain NCHW tensors, and oneDNN runs a grouped convolution in that
layout as im2col + GEMM with one channel per group. The 33 depthwise layers of ``ssd300`` do 6 % of
its multiply-adds but took 45 % of a CPU training step. The kernel, wired in through MindSpore's
``aot`` Custom operator with its own gradients, runs them several times faster.

The forward pass sums each output's nine taps in oneDNN's order, so a network's outputs are
bit-identical with and without the kernel (the tests check it). The gradients sum in another order
and agree to float32 rounding. Exported models never contain the kernel: export builds its own
network, and only the trainer and the training benches call :func:`use_cpu_depthwise_kernels`.

The library is compiled on first use with the machine's C++ compiler (``$CXX``, else ``g++``) for
this CPU (``-march=native``, AVX-512 left out). It is cached under ``$XDG_CACHE_HOME/ssd/kernels`` (default
``~/.cache/ssd/kernels``) in a folder named after the source, the compiler, its flags and the CPU's
flags, so a home folder shared by different machines holds one build per kind. Without a compiler
the layers stay on MindSpore's kernels and one warning says so. ``SSD_CPU_DEPTHWISE_KERNEL=0``
keeps MindSpore's kernels on purpose.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import mindspore as ms
from mindspore import nn, ops

from src.models.layers import DepthwiseConv2d

#: Set to "0" to keep MindSpore's own depthwise kernels.
SWITCH_VARIABLE = "SSD_CPU_DEPTHWISE_KERNEL"
SWITCH_OFF = ("0", "false", "off", "no")
SWITCH_ON = ("", "1", "true", "on", "yes")
SOURCE = Path(__file__).with_name("kernels") / "depthwise3x3_cpu.cc"
LIBRARY_NAME = "depthwise3x3_cpu.so"
#: For this CPU, but without AVX-512 on x86: its 512-bit loops measured 20-50 % slower on an AMD EPYC Zen 4.
COMPILE_FLAGS = ("-O3", "-march=native", *(("-mno-avx512f",) if platform.machine() in ("x86_64", "AMD64") else ()),
                 "-std=c++17", "-shared", "-fPIC", "-pthread")
STRIDES = (1, 2)
ENTRY_POINTS = tuple(f"Depthwise{part}S{stride}"
                     for part in ("Forward", "InputGrad", "FilterGrad") for stride in STRIDES)
COMPILE_TIMEOUT_S = 300


class KernelUnavailable(RuntimeError):
    """The kernel cannot be used on this machine; the message says why and what to do."""


def kernel_cache_dir() -> Path:
    """Where compiled kernels live: ``$XDG_CACHE_HOME/ssd/kernels``, by default ``~/.cache/ssd/kernels``."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "ssd" / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), which ``-march=native`` compiles for."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str:
    compiler = os.environ.get("CXX") or "g++"
    path = shutil.which(compiler)
    if path is None:
        raise KernelUnavailable(f"no C++ compiler ({compiler!r} not found; install g++, e.g. apt-get install g++, "
                                "or point $CXX at one)")
    return path


def _build_key(compiler: str) -> str:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(COMPILE_FLAGS).encode(),
                 platform.machine().encode(), _cpu_flags().encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_kernel_library(cache_dir: Path | None = None) -> Path:
    """The compiled kernel for this machine, compiled now if the cache has none (about a second).

    Several ranks may compile at once: each writes its own temporary file and renames it into place.
    Raises ``KernelUnavailable`` with the reason and the fix.
    """
    compiler = _compiler()
    folder = (cache_dir or kernel_cache_dir()) / _build_key(compiler)
    library = folder / LIBRARY_NAME
    if library.is_file():
        if _loads(library):
            return library
        library.unlink(missing_ok=True)  # damaged on disk: built again below
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
        os.close(handle)
    except OSError as error:
        raise KernelUnavailable(f"cannot write the kernel cache {folder} ({error.strerror}); "
                                "set XDG_CACHE_HOME to a writable folder") from None
    try:
        result = subprocess.run([compiler, *COMPILE_FLAGS, "-o", temporary, str(SOURCE)], capture_output=True,
                                text=True, timeout=COMPILE_TIMEOUT_S, check=False)
        if result.returncode != 0:
            lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
            reason = next((line for line in lines if "error" in line), lines[0] if lines else "")
            raise KernelUnavailable(f"{compiler} could not compile {SOURCE.name} "
                                    f"(exit code {result.returncode}{': ' + reason if reason else ''})")
        if not _loads(Path(temporary)):
            raise KernelUnavailable(f"{compiler} built {SOURCE.name}, but the library does not load or lacks "
                                    f"its entry points {ENTRY_POINTS}")
        os.replace(temporary, library)
    except subprocess.TimeoutExpired:
        raise KernelUnavailable(f"{compiler} took over {COMPILE_TIMEOUT_S} s on {SOURCE.name}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return library


def _loads(library: Path) -> bool:
    """Whether the library loads and has every entry point, checked before MindSpore loads it."""
    try:
        loaded = ctypes.CDLL(str(library))
    except OSError:
        return False
    return all(hasattr(loaded, name) for name in ENTRY_POINTS)


def _check_aot_white_list(library: Path) -> None:
    """MindSpore loads aot libraries only from under ``MS_CUSTOM_AOT_WHITE_LIST`` when it is set."""
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed is None:
        return
    allowed_path = os.path.realpath(allowed)
    if os.path.commonpath([os.path.realpath(library), allowed_path]) != allowed_path:
        raise KernelUnavailable(f"MS_CUSTOM_AOT_WHITE_LIST={allowed} does not cover the kernel cache "
                                f"{library.parent.parent}; set XDG_CACHE_HOME to a folder under it")


def depthwise_op(library: Path, stride: int) -> Callable:
    """``op(x, weight) -> y`` for one stride, with the kernel's own gradients as its bprop."""
    if stride not in STRIDES:
        raise ValueError(f"the depthwise kernel handles strides {STRIDES}, got {stride}")
    suffix = f"S{stride}"
    input_grad = ops.Custom(f"{library}:DepthwiseInputGrad{suffix}", lambda dy, w, x: x, lambda dy, w, x: x,
                            func_type="aot")
    filter_grad = ops.Custom(f"{library}:DepthwiseFilterGrad{suffix}", lambda dy, x, w: w, lambda dy, x, w: w,
                             func_type="aot")

    def output_shape(x_shape, w_shape):
        return [x_shape[0], x_shape[1], -(-x_shape[2] // stride), -(-x_shape[3] // stride)]

    def bprop(x, weight, out, dout):
        return input_grad(dout, weight, x), filter_grad(dout, x, weight)

    return ops.Custom(f"{library}:DepthwiseForward{suffix}", output_shape, lambda x, w: x, func_type="aot",
                      bprop=bprop)


def _kernel_fits(conv: DepthwiseConv2d) -> bool:
    return tuple(conv.kernel_size) == (3, 3) and conv.stride[0] == conv.stride[1] and conv.stride[0] in STRIDES \
        and tuple(conv.dilation) == (1, 1) and conv.pad_mode == "same"


def use_cpu_depthwise_kernels(network: nn.Cell, use_float16: bool, log: logging.Logger) -> int:
    """Route the network's 3x3 depthwise convolutions through the kernel; returns how many.

    Call it before compiling. Only float32 on CPU qualifies (the kernel is float32 C++); elsewhere
    nothing changes. On CPU it logs one line: how many layers use the kernel, or why none does.
    """
    if ms.get_context("device_target") != "CPU" or use_float16:
        return 0
    convs = [cell for _, cell in network.cells_and_names() if isinstance(cell, DepthwiseConv2d) and _kernel_fits(cell)]
    if not convs:
        return 0
    switch = os.environ.get(SWITCH_VARIABLE, "1").strip().lower()
    if switch in SWITCH_OFF:
        log.info(f"{SWITCH_VARIABLE}={switch}: the {len(convs)} depthwise convolutions use MindSpore's kernels")
        return 0
    if switch not in SWITCH_ON:
        log.warning(f"{SWITCH_VARIABLE}={switch!r} is neither 0 nor 1: the project's depthwise kernel is used")
    started = time.perf_counter()
    try:
        library = build_kernel_library()
        _check_aot_white_list(library)
    except KernelUnavailable as reason:
        log.warning(f"the {len(convs)} depthwise convolutions stay on MindSpore's slower kernels: {reason} "
                    f"(or set {SWITCH_VARIABLE}=0 to silence this)")
        return 0
    ops_by_stride = {stride: depthwise_op(library, stride) for stride in STRIDES}
    for conv in convs:
        conv.cpu_kernel = ops_by_stride[conv.stride[0]]
    log.info(f"{len(convs)} depthwise 3x3 convolutions use the project's CPU kernel ({library}, "
             f"ready in {time.perf_counter() - started:.1f} s)")
    return len(convs)
