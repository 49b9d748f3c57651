"""``insieme convert GGUF OUTDIR``: a Hugging Face folder (config, tokenizer with its chat
template, generation config, safetensors) from a GGUF file, for ``--engine vllm``, which
reads no GGUF. transformers dequantises the GGUF's weights (it needs ``gguf``); the folder
holds them in ``dtype``.

The folder is written beside ``OUTDIR`` and renamed into place at the end, so a folder that
exists is whole: an interrupted conversion leaves none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from insieme.engine.vllm.install import require
from insieme.errors import ConfigError

_PURPOSE = "insieme convert"


def _chat_template(gguf: Path) -> str | None:
    """The chat template in the GGUF's metadata (transformers does not always carry it)."""
    reader = require("gguf", purpose=_PURPOSE).GGUFReader(str(gguf))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def convert_gguf(gguf: str | os.PathLike[str], outdir: str | os.PathLike[str],
                 *, dtype: str = "float32") -> Path:
    """Write the Hugging Face folder for ``gguf`` to ``outdir`` (which must not exist)."""
    source, out = Path(gguf), Path(outdir)
    if not source.is_file():
        raise ConfigError(f"no such GGUF file: {source}")
    if out.exists():
        raise ConfigError(f"{out} exists already; give a new folder")
    torch = require("torch", purpose=_PURPOSE)
    transformers = require("transformers", purpose=_PURPOSE)
    require("gguf", purpose=_PURPOSE)
    require("accelerate", purpose=_PURPOSE)
    kwargs = {"gguf_file": source.name}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.parent), **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(source.parent), dtype=getattr(torch, dtype), **kwargs)
    # The weights are dequantised now; a GGUF quantizer left on the model refuses to save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _chat_template(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(str(scratch))
        tokenizer.save_pretrained(str(scratch))
        scratch.rename(out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return out
