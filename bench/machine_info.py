"""One line describing the machine a benchmark ran on, so numbers from different hosts are not confused."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512_BF16 or AMX): where OpenVINO's bf16 precision exists."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(*packages: str) -> str:
    """Cores, CPU model, MindSpore and the given packages' versions, and the oneDNN ISA cap in effect."""
    versions = ", ".join(f"{name} {package_version(name)}" for name in ("mindspore", *packages))
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")
    return (f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; {versions}; "
            f"ONEDNN_MAX_CPU_ISA={isa}")
