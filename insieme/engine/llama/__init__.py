"""The llama.cpp backend: ``LlamaEngine`` behind the ``Engine`` protocol.

``engine`` (life cycle, the asyncio side) → ``core`` (the loop on its own thread: schedule →
decode → sample) → ``scheduler`` (policy) and ``kv_slots`` (KV cells and the prefix cache) over
``sequence`` (per-choice state); ``sampler`` (C sampler chains, grammars), ``logprobs``,
``grammar``/``gbnf`` (constraints compiled to GBNF) and ``runtime`` (the context, batches and
KV memory) are the parts that call llama-cpp-python.
"""
