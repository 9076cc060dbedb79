"""Peak memory of a run on a device: what a job or a benchmark used at most.

On CUDA: the bytes torch allocated on that device (``max_memory_allocated``). On the CPU: the
process's peak resident set (``VmHWM``), reset through ``/proc/self/clear_refs``; it counts
everything in the process, not just the model.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def reset_peak_memory(device: str) -> None:
    """Start a new peak measurement on ``device`` (best effort: an unreadable peak is None)."""
    try:
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(device))
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # "5": reset the peak RSS (Linux >= 4.0)
    except (OSError, RuntimeError):
        logger.debug("cannot reset the peak memory of %s", device, exc_info=True)


def peak_memory_bytes(device: str) -> int | None:
    """The peak since the last ``reset_peak_memory(device)``; None where it cannot be read."""
    try:
        if device.startswith("cuda"):
            import torch

            return int(torch.cuda.max_memory_allocated(torch.device(device)))
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, RuntimeError):
        logger.debug("cannot read the peak memory of %s", device, exc_info=True)
    return None
