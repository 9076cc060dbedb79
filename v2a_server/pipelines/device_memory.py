"""Peak memory of a run on a device: what a job or a benchmark used at most.

On CUDA: the bytes torch allocated on that device (``max_memory_allocated``). On the CPU: the
process's peak resident set (``VmHWM``), reset through ``/proc/self/clear_refs``; it counts
everything in the process, not just the model. A kernel that accepts that write but keeps the
old peak (none seen yet; checked after every reset) makes the peak unknown (None) rather than
a number that belongs to some earlier job.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# A reset that worked leaves the peak at the resident set of that moment; a peak still this
# far above it after the reset means the kernel ignored the reset.
_IGNORED_RESET_MARGIN_BYTES = 64 * 2**20

# Whether the last CPU reset took (None: no reset yet, the peak is the process's lifetime one).
_cpu_reset_took: bool | None = None
_warned_ignored_reset = False


def _read_status_kib(*keys: str) -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            name = line.split(":", 1)[0]
            if name in keys:
                values[name] = int(line.split()[1]) * 1024
    return values


def reset_peak_memory(device: str) -> None:
    """Start a new peak measurement on ``device`` (best effort: an unreadable peak is None)."""
    global _cpu_reset_took, _warned_ignored_reset
    try:
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(device))
            return
        _cpu_reset_took = False
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5": reset the peak RSS (Linux >= 4.0)
        status = _read_status_kib("VmHWM", "VmRSS")
        _cpu_reset_took = status["VmHWM"] - status["VmRSS"] <= _IGNORED_RESET_MARGIN_BYTES
        if not _cpu_reset_took and not _warned_ignored_reset:
            _warned_ignored_reset = True
            logger.warning("this kernel keeps the peak resident set across a reset "
                           "(/proc/self/clear_refs): peak memory per job is unknown here")
    except (OSError, RuntimeError, KeyError, ValueError):
        logger.debug("cannot reset the peak memory of %s", device, exc_info=True)


def peak_memory_bytes(device: str) -> int | None:
    """The peak since the last ``reset_peak_memory(device)``; None where it cannot be read
    (or, on the CPU, where the kernel ignored the last reset)."""
    try:
        if device.startswith("cuda"):
            import torch

            return int(torch.cuda.max_memory_allocated(torch.device(device)))
        if _cpu_reset_took is False:
            return None
        return _read_status_kib("VmHWM")["VmHWM"]
    except (OSError, ValueError, RuntimeError, KeyError):
        logger.debug("cannot read the peak memory of %s", device, exc_info=True)
    return None
