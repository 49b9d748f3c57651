"""Relevance from a chat model: ask it whether a document answers a query and read how likely
its first word is "yes" against "no" (the method of LLM rerankers such as Qwen3-Reranker).

Backend-neutral: a backend renders ``messages()`` with the model's chat template, finds the
query and the document by their slots in the text (``split``), tokenises the three pieces of
template around them once, and reads the next-token logits after each prompt.
"""

from __future__ import annotations

import math

# Stand-ins for the query and the document while the template renders: text no template
# changes and no tokeniser merges with its neighbours (each piece is tokenised on its own).
QUERY_SLOT = "\u27e6insieme-query\u27e7"
DOCUMENT_SLOT = "\u27e6insieme-document\u27e7"
# The spellings of each answer a model may start with; a backend keeps those that are one
# token in its vocabulary.
YES = ("yes", "Yes", " yes", " Yes", "YES")
NO = ("no", "No", " no", " No", "NO")


def messages() -> list[dict[str, str]]:
    """The conversation to render (with the generation prompt) around the two slots.

    The wording is the one of five tried that the bundled 135M model judged best (6 of 10
    queries with the answer first among 10 passages, mean reciprocal rank 0.73-0.76; Qwen3-
    Reranker's own instruction and system prompt did worse): a model that small is a weak
    judge whatever it is asked. A larger chat model, or a reranker GGUF
    (rank pooling, see ``insieme.engine.llama.retrieval``), ranks far better.
    """
    return [{"role": "user", "content": f"Question: {QUERY_SLOT}\nText: {DOCUMENT_SLOT}\n"
                                        "Does the text answer the question? Answer with yes "
                                        "or no."}]


def split(rendered: str) -> tuple[str, str, str]:
    """The template text before the query, between query and document, and after it."""
    head, found, rest = rendered.partition(QUERY_SLOT)
    middle, found_doc, tail = rest.partition(DOCUMENT_SLOT)
    if not found or not found_doc or QUERY_SLOT in rest or DOCUMENT_SLOT in tail:
        raise ValueError("the chat template does not keep the query and document in order")
    return head, middle, tail


def relevance(yes_logprob: float, no_logprob: float) -> float:
    """p(yes) / (p(yes) + p(no)), from the two log-probabilities."""
    diff = no_logprob - yes_logprob
    if diff > 700:  # exp would overflow: "no" is certain
        return 0.0
    return 1.0 / (1.0 + math.exp(diff))


def logsumexp(values: list[float]) -> float:
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))
