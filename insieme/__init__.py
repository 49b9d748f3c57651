"""insieme: a self-hosted, Together-compatible LLM inference server on llama.cpp."""

__version__ = "0.1.0"
