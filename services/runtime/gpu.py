"""GPU memory reading for ``axon_gpu_memory_used_bytes`` (no CUDA Python bindings needed)."""

from __future__ import annotations

import shutil
import subprocess


def gpu_memory_used_bytes(device_id: int = 0) -> int | None:
    """Memory used on GPU ``device_id`` according to nvidia-smi, or None if unknown."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits", f"--id={device_id}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return int(float(out.strip().splitlines()[0])) * 1024 * 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
