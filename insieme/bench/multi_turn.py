"""The ``multi-turn`` dataset: chats that share one system prompt and grow turn by turn.

Each conversation opens with the shared system prompt and a question, and goes on with
follow-ups; the runner puts the server's own answer to each turn before the next one, so every
request repeats its conversation's whole history, and every conversation the system prompt:
the workload that prefix caching is for. The questions and follow-ups are drawn, seeded, from
the banks below. With ``context_words``, each conversation's first message also carries a
document of its own (that many words, drawn from ``words``): what it shares with the others
is then only the system prompt, as for chats over each user's own files. Without the system
prompt (``system_prompt=False``) such conversations share nothing but the chat template's
own opening, so what a cache finds for a later turn is that conversation's history alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from insieme.bench.prompts import Prompt

SYSTEM_PROMPT = (
    "You are the support assistant of Lumen Outdoor, a shop that sells and rents camping, "
    "hiking and climbing equipment in three cities. Answer the customer's questions politely "
    "and in plain language. Keep each answer short: a few sentences, or a short list when the "
    "customer asks for steps. Our rules: rentals are by the day, from opening time to closing "
    "time the next day; a deposit of twenty percent of the item's price is taken when the "
    "rental starts and given back when the item comes back clean and undamaged; tents and "
    "sleeping bags are cleaned by us, boots and harnesses must be returned dry. Bought items "
    "can be returned within thirty days with the receipt, unless they were used outdoors. "
    "Members of the Lumen club pay ten percent less on rentals and get free repairs of small "
    "damage. The shops open from nine to seven on weekdays and from nine to five on Saturdays, "
    "and are closed on Sundays. Never invent prices, stock or opening hours that are not "
    "written here: when you do not know, say so and offer to pass the question to the staff. "
    "Do not give medical advice; for questions about safety in the mountains, give general "
    "advice and recommend a local guide."
)

QUESTIONS = (
    "I want to go camping for a weekend with two children. What should I rent?",
    "How does the deposit work if I rent a tent for three days?",
    "Can I return hiking boots I bought two weeks ago? I only tried them at home.",
    "What is the difference between a three-season and a four-season tent?",
    "I am new to climbing. Which equipment do I need for an indoor gym?",
    "Is it worth joining the Lumen club if I rent gear twice a year?",
    "How should I dry a sleeping bag after a rainy trip before bringing it back?",
    "My rented stove stopped working on the second day. What happens now?",
    "Which backpack size would you suggest for a five-day trek?",
    "Can I rent equipment on Saturday afternoon and bring it back on Monday?",
    "What should I pack for a night hike in autumn?",
    "How do I choose a sleeping mat for cold nights?",
    "Do you rent equipment for winter hiking, like snowshoes?",
    "I damaged the zip of a rented jacket. Do I lose my deposit?",
    "What is a good first multi-day hike for someone who walks ten kilometres easily?",
    "Can a friend return the gear I rented if I cannot come back to the shop?",
)

FOLLOW_UPS = (
    "Thanks. Can you put that into a short checklist?",
    "What would that cost me, roughly, compared with buying everything?",
    "And if the weather forecast turns bad, what should I change?",
    "Could you explain the second point in more detail?",
    "Is there anything I should check before I leave the shop?",
    "What if I am a member of the club?",
    "Which of those things matter most if I can only take a few?",
    "How early should I book, in your experience?",
    "Can you summarise everything you told me in three sentences?",
    "What mistakes do beginners usually make with this?",
    "Is that the same in all three shops?",
    "Thank you. One last thing: what do I do if I am late returning it?",
)


def conversations(count: int, turns: int, seed: int = 0, context_words: int = 0,
                  words: Sequence[str] = (), system_prompt: bool = True,
                  ) -> tuple[tuple[Prompt, ...], ...]:
    """``count`` conversations of ``turns`` turns; the first turn carries the system prompt
    (unless told not to) and the conversation's document, later ones only their user message
    (the runner adds the history before it)."""
    rng = random.Random(f"multi-turn:{seed}")
    made = []
    for index in range(count):
        follow_ups = (rng.sample(FOLLOW_UPS, turns - 1) if turns - 1 <= len(FOLLOW_UPS)
                      else rng.choices(FOLLOW_UPS, k=turns - 1))
        question = rng.choice(QUESTIONS)
        if context_words:
            # Its own generator: the questions stay those drawn without documents.
            draw = random.Random(f"multi-turn-document:{seed}:{index}")
            document = " ".join(draw.choices(words, k=context_words))
            question = f"My notes from earlier visits:\n{document}\n\n{question}"
        opening = ({"role": "system", "content": SYSTEM_PROMPT},) if system_prompt else ()
        first = Prompt((*opening, {"role": "user", "content": question}))
        made.append((first, *(Prompt(({"role": "user", "content": text},))
                              for text in follow_ups)))
    return tuple(made)
