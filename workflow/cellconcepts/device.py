"""Where torch computes: the device a config names, and the CPU threads a job may use.

torch is imported inside the functions, so that jobs which never train start without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def resolve_device(name: Any) -> Any:
    """ "auto" -> cuda if available, else cpu; anything else as given to torch.device."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}"
        ) from err


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads to the job's `threads:` (no limit when None or 0)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def gpu_present(environ: Any = os.environ, driver: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """Whether this machine shows an NVIDIA GPU to its jobs, without importing torch: the
    driver lists one (or ``nvidia-smi`` is installed) and ``CUDA_VISIBLE_DEVICES`` does not
    hide them all."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    listed = driver.is_dir() and any(driver.iterdir())
    return listed or shutil.which("nvidia-smi") is not None
