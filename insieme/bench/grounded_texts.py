'''The texts of the ``grounded`` dataset, written for it: prose, code, lists and tables
of about 200 tokens each (140 to 320 with SmolLM2's tokenizer, 190 on average). The prose is
in the present tense, so that "rewrite it in the past tense" changes words without changing
the text's shape; each code snippet names one identifier that a "rename" task may change.
'''

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    """One text to work on; ``rename`` is (old, new) for a code snippet's rename task."""

    kind: str  # "prose", "code", "list", "table" (Markdown) or "csv"
    body: str
    rename: tuple[str, str] | None = None


PROSE = (
    """\
The ferry leaves the harbour at seven, while the fish market is still setting up its stalls.
Gulls circle above the boats and wait for the first crates of sardines. On the quay, an old
man sells coffee from a cart painted blue, and the sailors buy it in paper cups before they
climb aboard. The crossing takes forty minutes when the sea is calm, and nearly an hour when
the wind comes from the north. Most passengers stay inside, but a few stand at the rail and
watch the island grow from a grey line into hills, white houses and a church with a green
dome. When the ferry docks, children run along the pier to meet their grandparents, and the
captain checks the ropes himself before anyone is allowed to step off.""",
    """\
Every morning the bakery opens its doors at half past five. The head baker arrives an hour
earlier to switch on the ovens and check the dough that rests overnight in the cold room.
She shapes the loaves by hand, scores the tops with a razor and slides them onto the hot
stone with a long wooden peel. The first batch is sourdough, followed by rye, then the soft
rolls that the school across the street orders every day. While the bread bakes, her
apprentice weighs flour, salt and water for the afternoon batch and writes the quantities in
a notebook. At six the first customers queue outside, and the smell of crust and caramel
reaches the end of the street. By nine the shelves are half empty and the ovens cool down.""",
    """\
The city museum opens its new exhibition on the history of the river on 14 March. The show
fills four rooms on the second floor and brings together more than 300 objects, from
Roman coins found in the mud to the plans of the iron bridge built in 1868. A large model
shows how the river changes its course over two thousand years, and a short film explains
the great flood of 1910, when the water rises almost three metres in a single night. Visitors
can listen to the voices of the last boatmen, recorded in the 1970s, and try to lift the
heavy tools that the dockers use every day. Entry costs eight euros, children under twelve
enter for free, and guided tours start every Saturday at eleven and at three.""",
    """\
Our team is halfway through the migration of the billing service, and most of the work is on
schedule. The new database runs in parallel with the old one, and every night a script
compares the two and reports any invoice that differs. This week the script finds only three
differences, all caused by rounding in currencies with no decimal places, and Priya is
fixing them. The payment provider still needs to approve our new webhook address, so the
switch date moves from 2 June to 9 June. Marco is writing the runbook for the switch, and
the support team is testing the refund screens in the staging system. The biggest risk
remains the monthly report, which depends on a view that the old database computes slowly.""",
    """\
Water moves in a cycle that never really stops. The sun warms the surface of seas, lakes
and rivers, and some of the water turns into vapour and rises into the air. Plants add more
vapour as they breathe through their leaves. High above the ground the air is colder, so the
vapour condenses into tiny droplets that gather around grains of dust and form clouds. When
the droplets join and grow heavy, they fall as rain, or as snow and hail when the air is cold
enough. Part of that water runs over the ground into streams and back to the sea, part soaks
into the soil and feeds the roots of plants, and part sinks deeper and fills the
groundwater that wells and springs draw on, sometimes for thousands of years.""",
    """\
The trail starts behind the old mill and follows the stream through a beech forest. For the
first two kilometres the path is wide and almost flat, and families with pushchairs often
turn back at the wooden bridge. After the bridge the climb begins: a series of tight bends
leads up to the ridge, and in wet weather the stones are slippery. At the top, a bench looks
over the valley, and on a clear day you can see the lake and the snow on the far mountains.
The return path goes down the other side of the ridge through open meadows where cows graze
in summer. The whole loop is eleven kilometres long, takes about four hours, and is marked
with yellow signs. There is no water on the way, so walkers carry at least a litre each.""",
)

CODE = (
    Text("code", """\
def moving_average(values, window):
    \"\"\"Return the mean of each run of `window` consecutive values.\"\"\"
    if window <= 0:
        raise ValueError("window must be positive")
    averages = []
    total = 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        if index >= window - 1:
            averages.append(total / window)
    return averages


def largest_jump(values):
    \"\"\"The biggest change between two neighbouring values.\"\"\"
    best = 0.0
    for earlier, later in zip(values, values[1:]):
        best = max(best, abs(later - earlier))
    return best""", rename=("total", "running_sum")),
    Text("code", """\
function debounce(callback, delayMs) {
  let timer = null;
  return function (...args) {
    if (timer !== null) {
      clearTimeout(timer);
    }
    timer = setTimeout(() => {
      timer = null;
      callback.apply(this, args);
    }, delayMs);
  };
}

async function fetchJson(url, retries = 3) {
  for (let attempt = 1; attempt <= retries; attempt++) {
    const response = await fetch(url);
    if (response.ok) {
      return response.json();
    }
    if (attempt === retries) {
      throw new Error(`request failed with status ${response.status}`);
    }
  }
}""", rename=("timer", "pendingTimeout")),
    Text("code", """\
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT UNIQUE NOT NULL,
    joined_on DATE NOT NULL
);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    placed_on DATE NOT NULL,
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0)
);

SELECT customers.name,
       COUNT(orders.id) AS order_count,
       SUM(orders.total_cents) / 100.0 AS total_spent
FROM customers
LEFT JOIN orders ON orders.customer_id = customers.id
WHERE customers.joined_on >= '2024-01-01'
GROUP BY customers.id
ORDER BY total_spent DESC
LIMIT 10;""", rename=("total_cents", "amount_cents")),
    Text("code", """\
class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, quantity, price):
        if quantity < 0:
            raise ValueError("quantity cannot be negative")
        stock = self.items.setdefault(name, {"quantity": 0, "price": price})
        stock["quantity"] += quantity
        stock["price"] = price

    def remove(self, name, quantity):
        stock = self.items.get(name)
        if stock is None or stock["quantity"] < quantity:
            raise KeyError(f"not enough {name} in stock")
        stock["quantity"] -= quantity

    def value(self):
        return sum(s["quantity"] * s["price"] for s in self.items.values())""",
         rename=("stock", "entry")),
)

LISTS = (
    """\
- tent with poles and pegs
- sleeping bag rated to five degrees
- inflatable sleeping mat
- head torch and spare batteries
- gas stove and two cartridges
- cooking pot with lid
- matches in a waterproof box
- water filter
- two litres of water per person
- rain jacket and rain trousers
- warm fleece
- spare socks
- first aid kit
- map of the park and a compass
- sun cream and a hat
- rubbish bags
- pocket knife
- insect repellent
- a small towel and soap
- a power bank for the phone
- snacks for the first day: nuts, dried fruit and chocolate""",
    """\
1. Collect your laptop and badge from the front desk.
2. Change the temporary password you receive by email.
3. Turn on two-factor authentication for your account.
4. Read the security policy and sign the acknowledgement form.
5. Join the team chat channel and introduce yourself.
6. Book a thirty-minute meeting with your manager for your first week.
7. Install the development tools listed on the wiki.
8. Clone the main repository and run the test suite once.
9. Pick a small starter issue with the label "good first issue".
10. Ask your mentor to review your first pull request.
11. Add your holidays for the next three months to the shared calendar.
12. Fill in the emergency contact form.""",
    """\
Ingredients for the lemon cake:
- 200 grams of soft butter
- 200 grams of caster sugar
- 4 large eggs
- 200 grams of self-raising flour
- 1 teaspoon of baking powder
- the grated zest of 2 lemons
- 2 tablespoons of milk
- a pinch of salt
For the syrup:
- the juice of 2 lemons
- 100 grams of icing sugar
For the icing:
- 150 grams of icing sugar
- 2 tablespoons of lemon juice
- a few strips of candied peel
Equipment:
- a loaf tin of about 900 grams, lined with baking paper
- a large mixing bowl and a wooden spoon
- a fine grater for the zest
- a skewer to test that the cake is done""",
)

TABLES = (
    """\
| train | departs | from | arrives | at | platform |
|---|---|---|---|---|---|
| IC 512 | 06:42 | Milano Centrale | 09:15 | Bologna | 4 |
| RV 2231 | 07:10 | Brescia | 08:05 | Verona Porta Nuova | 2 |
| FR 9517 | 07:35 | Torino Porta Nuova | 10:28 | Firenze | 11 |
| IC 640 | 08:20 | Genova Piazza Principe | 10:41 | La Spezia | 1 |
| R 10914 | 09:03 | Como San Giovanni | 09:52 | Milano Centrale | 7 |
| FR 9625 | 10:00 | Venezia Santa Lucia | 12:25 | Bologna | 5 |
| IC 718 | 11:48 | Trieste Centrale | 13:37 | Venezia Mestre | 3 |
| RV 2619 | 12:30 | Parma | 13:56 | Milano Rogoredo | 9 |""",
    """\
| planet | diameter (km) | moons | distance from the Sun (AU) | day length (hours) |
|---|---|---|---|---|
| Mercury | 4,879 | 0 | 0.39 | 4,222.6 |
| Venus | 12,104 | 0 | 0.72 | 2,802.0 |
| Earth | 12,756 | 1 | 1.00 | 24.0 |
| Mars | 6,792 | 2 | 1.52 | 24.7 |
| Jupiter | 142,984 | 95 | 5.20 | 9.9 |
| Saturn | 120,536 | 146 | 9.54 | 10.7 |
| Uranus | 51,118 | 28 | 19.19 | 17.2 |
| Neptune | 49,528 | 16 | 30.07 | 16.1 |""",
)

CSV = (
    """\
name,team,role,office,started
Ada Moretti,platform,engineer,Milan,2019-03-04
Bruno Keller,platform,manager,Zurich,2016-09-12
Chiara Rossi,data,analyst,Milan,2021-01-18
Daniel Novak,data,engineer,Prague,2020-06-01
Elena Petrova,design,designer,Berlin,2022-02-14
Farid Haddad,support,specialist,Lyon,2018-11-05
Greta Lindqvist,platform,engineer,Stockholm,2023-04-24
Hugo Martins,sales,account manager,Lisbon,2017-07-31
Ines Duarte,sales,assistant,Lisbon,2024-01-08
Jonas Weber,data,manager,Berlin,2015-05-19""",
)

TEXTS: tuple[Text, ...] = (
    *(Text("prose", body) for body in PROSE),
    *CODE,
    *(Text("list", body) for body in LISTS),
    *(Text("table", body) for body in TABLES),
    *(Text("csv", body) for body in CSV),
)
