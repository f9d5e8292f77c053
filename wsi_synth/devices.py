"""What `--device` accepts: `cpu`, `cuda`, `cuda:N`, `mps`; checked where it enters, against what this machine has."""

from __future__ import annotations

from wsi_synth.errors import BadArgumentError


def check_device(device: str) -> str:
    """`device` when PyTorch can use it here; otherwise a one-line error saying why and what to pass instead."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise BadArgumentError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N or mps") from exc
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise BadArgumentError(f"--device {device}: {why} (torch {torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise BadArgumentError(
                f"--device {device}: this machine has {count} CUDA device(s), cuda:0–cuda:{count - 1}"
            )
        return device
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise BadArgumentError(f"--device {device}: Apple's MPS is not available here; use --device cpu")
        return device
    raise BadArgumentError(f"--device {device}: wsi-synth runs on cpu, cuda or mps, not {parsed.type}")
