"""vLLM behind the ``Engine`` protocol: ``insieme serve --engine vllm``.

Nothing here imports vLLM at import time: the package loads without the optional extra, and
``require`` names the command that installs it when it is missing.
"""
