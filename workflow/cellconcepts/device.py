"""Where torch computes: the device a config names, and the CPU threads a job may use.

torch is imported inside the functions, so that jobs which never train start without it.
"""

from __future__ import annotations

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
