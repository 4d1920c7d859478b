"""Device and dtype choice, one rule for every model pairsmith loads (samplers, reward models, policies).

`auto` means: CUDA when present, else CPU; bfloat16 on a GPU, float32 on a CPU (bf16 is emulated, and slow,
on AVX2 CPUs).
"""

from __future__ import annotations


def device_and_dtype(device: str = "auto", dtype: str = "auto"):
    """("cuda" | "cpu" | the given device, torch dtype)."""
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return device, (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    return device, getattr(torch, dtype)
