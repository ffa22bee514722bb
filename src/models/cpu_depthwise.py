"""The project's CPU kernel for 3x3 depthwise convolutions (``kernels/depthwise3x3_cpu.cc``).

Why: MindSpore 2.10 hands oneDNN plain NCHW tensors, and oneDNN runs a grouped convolution in that
layout as im2col + GEMM with one channel per group. The 33 depthwise layers of ``ssd300`` do 6 % of
its multiply-adds but took 45 % of a CPU training step. The kernel, wired in through MindSpore's
``aot`` Custom operator with its own gradients, runs them several times faster.

The forward pass sums each output's nine taps in the order of oneDNN's GEMM under
``ONEDNN_MAX_CPU_ISA=AVX2`` (what train.py sets on CPU), so there a network's outputs are
bit-identical with and without the kernel (the tests check it); under another oneDNN ISA oneDNN
itself sums differently (up to about 5e-6 apart). eval.py and predict.py never use the kernel.
The gradients sum in another order and agree to float32 rounding. Exported models never contain
the kernel: export builds its own network, and only the trainer and the training benches call
:func:`use_cpu_depthwise_kernels`.

The library is compiled on first use with the machine's C++ compiler (``$CXX``, else ``g++``) for
this CPU (``-march=native``, AVX-512 left out). It is cached under ``$XDG_CACHE_HOME/ssd/kernels``
(default ``~/.cache/ssd/kernels``) in a folder named after the source, the compiler, its flags and the CPU's
flags, so a home folder shared by different machines holds one build per kind. Without a compiler
the layers stay on MindSpore's kernels and one warning says so. ``SSD_CPU_DEPTHWISE_KERNEL=0``
keeps MindSpore's kernels on purpose.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
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
VERSION_TIMEOUT_S = 30
LOAD_CHECK_TIMEOUT_S = 60
STALE_TEMPORARY_S = 600


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


def _compiler() -> list[str]:
    """The compiler command: ``$CXX`` (which may carry arguments, e.g. ``ccache g++``), else ``g++``."""
    command = shlex.split(os.environ.get("CXX") or "g++")
    path = shutil.which(command[0]) if command else None
    if path is None:
        raise KernelUnavailable(f"no C++ compiler ({command[0] if command else '$CXX'!r} not found; install g++, "
                                "e.g. apt-get install g++, or point $CXX at one)")
    return [path, *command[1:]]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``command``'s result; a compiler that cannot run or does not finish is a KernelUnavailable."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise KernelUnavailable(f"{' '.join(command[:2])} did not finish within {timeout:.0f} s") from None
    except OSError as error:
        raise KernelUnavailable(f"the compiler {command[0]} cannot run ({error.strerror}); "
                                "point $CXX at a working C++ compiler") from None


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")


def _build_key(compiler: list[str]) -> str:
    version = _run([*compiler, "--version"], VERSION_TIMEOUT_S).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(compiler).encode(), version.encode(), " ".join(COMPILE_FLAGS).encode(),
                 platform.machine().encode(), _cpu_flags().encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _load_error(library: Path) -> str:
    """Why the library cannot serve as the kernel ("" when it can): loaded in a child process, so that a
    damaged file (a truncated one makes the loader fault) cannot take the training process down."""
    probe = ("import ctypes, sys\nlibrary = ctypes.CDLL(sys.argv[1])\n"
             "missing = [name for name in sys.argv[2:] if not hasattr(library, name)]\n"
             "sys.exit('missing entry points: ' + ', '.join(missing) if missing else 0)\n")
    try:
        result = subprocess.run([sys.executable, "-c", probe, str(library), *ENTRY_POINTS], capture_output=True,
                                text=True, timeout=LOAD_CHECK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the load check failed ({error})"
    if result.returncode == 0:
        return ""
    return _last_error_line(result.stderr) or f"the loader stopped with signal {-result.returncode}"


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary builds left by a killed run (a live build renames its own within seconds)."""
    for leftover in folder.glob("*.so.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_TEMPORARY_S:
                leftover.unlink()
        except OSError:
            pass


def build_kernel_library(cache_dir: Path | None = None) -> Path:
    """The compiled kernel for this machine, compiled now if the cache has none (about a second).

    Several ranks may compile at once: each writes its own temporary file and renames it into place.
    A cached file that does not load (damaged on disk) is built again. Raises ``KernelUnavailable``
    with the reason and the fix.
    """
    compiler = _compiler()
    folder = (cache_dir or kernel_cache_dir()) / _build_key(compiler)
    library = folder / LIBRARY_NAME
    if ":" in str(library.absolute()):
        raise KernelUnavailable(f"MindSpore cannot load a kernel from {library.parent} (':' in the path separates "
                                "file and function); set XDG_CACHE_HOME to a folder without ':'")
    try:
        if library.is_file() and not _load_error(library):
            return library
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        handle, temporary = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
        os.close(handle)
    except OSError as error:
        raise KernelUnavailable(f"cannot write the kernel cache {folder} ({error.strerror}); "
                                "set XDG_CACHE_HOME to a writable folder") from None
    try:
        result = _run([*compiler, *COMPILE_FLAGS, "-o", temporary, str(SOURCE)], COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            reason = _last_error_line(result.stderr)
            raise KernelUnavailable(f"{' '.join(compiler)} could not compile {SOURCE.name} "
                                    f"(exit code {result.returncode}{': ' + reason if reason else ''})")
        load_error = _load_error(Path(temporary))
        if load_error:
            raise KernelUnavailable(f"{' '.join(compiler)} built {SOURCE.name}, but the library does not load: "
                                    f"{load_error}")
        os.replace(temporary, library)
    except OSError as error:
        raise KernelUnavailable(f"cannot write the kernel cache {library} ({error.strerror}); "
                                "set XDG_CACHE_HOME to a writable folder") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return library


def _check_aot_white_list(library: Path) -> None:
    """MindSpore loads aot libraries only from under ``MS_CUSTOM_AOT_WHITE_LIST`` when it is set."""
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed is None:
        return
    if not allowed.strip() or not os.path.isdir(allowed):
        raise KernelUnavailable(f"MS_CUSTOM_AOT_WHITE_LIST={allowed!r} is not a folder, so MindSpore loads no "
                                "custom kernel; unset it or name the folder that holds XDG_CACHE_HOME")
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
    if ms.get_context("device_target") != "CPU":
        return 0
    convs = [cell for _, cell in network.cells_and_names() if isinstance(cell, DepthwiseConv2d) and _kernel_fits(cell)]
    if not convs:
        return 0
    if use_float16:
        log.info(f"use_float16: the {len(convs)} depthwise convolutions use MindSpore's kernels "
                 "(the project's CPU kernel is float32)")
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
