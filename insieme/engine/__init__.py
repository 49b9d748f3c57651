"""The engine layer: scheduling, sequences, sampling and the llama.cpp model runner.

Nothing here imports from ``insieme.api``; the API speaks to an engine only through
``insieme.engine.base.Engine`` and the plain dataclasses in ``insieme.engine.types``.
"""
