"""Deterministic "fictitious authors" in TOFU's exact schema and split names.

Each author gets a profile (name, birth, place, genre, parents, books, ...) drawn from a
seeded RNG, then 20 question/answer pairs from fixed templates. Every QA also carries a
paraphrased question, a paraphrased answer and five perturbed answers (the paraphrased
answer with a wrong value), as TOFU's *_perturbed splits do. A small general-knowledge set
(real books and their authors, capitals) stands in for real_authors / world_facts.

Usage from the shell: ``python -m grun_cli.data.synthetic OUT_DIR [--seed S]`` writes the
splits as TOFU-named JSON-Lines files, loadable with ``data=tofu data.local_dir=OUT_DIR``.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grun_cli.data.source import QASource, Row
from grun_cli.data.splits import (
    ALL_SPLITS,
    FORGET_PERCENTS,
    PERTURBED_FORGET,
    RETAIN_PERCENTS,
)
from grun_cli.errors import GrunError
from grun_cli.io_utils import write_jsonl

FIRST = (
    "Amara Bastien Celine Dario Elif Farah Gideon Hana Idris Jonas Kaveh Lena Matteo Nadia "
    "Oskar Priya Quentin Rosa Soren Talia Umar Vera Wendell Ximena Yusuf Zora Anselm Bettina "
    "Cyrus Delphine Emeric Fiona Gaspard Hedda Ilario Jorunn Kenji Liora Malik Noor Orsolya "
    "Pavel Rania Stellan Teodora Ulric Valentina Wilhelmina Yara Zeno"
).split()
LAST = (
    "Abernathy Balogun Castellanos Drummond Eklund Fairweather Galanis Holloway Iwasaki "
    "Jankowski Kowalczyk Lindqvist Marchetti Nakamura Okonkwo Petrakis Quintero Rahimi "
    "Solberg Thorvaldsen Urquhart Varga Whitcombe Xanthos Yilmaz Zamora Achterberg Brannigan "
    "Coutinho Delacroix Esposito Falkenrath Grimaldi Haverford Ibarra Jovanovic Kirkpatrick "
    "Lombardi Mwangi Nordstrom"
).split()
CITIES = [
    ("Lisbon", "Portugal"), ("Nairobi", "Kenya"), ("Osaka", "Japan"), ("Krakow", "Poland"),
    ("Valparaiso", "Chile"), ("Tbilisi", "Georgia"), ("Bergen", "Norway"), ("Accra", "Ghana"),
    ("Montreal", "Canada"), ("Izmir", "Turkey"), ("Porto Alegre", "Brazil"), ("Hanoi", "Vietnam"),
    ("Lyon", "France"), ("Cork", "Ireland"), ("Tartu", "Estonia"), ("Adelaide", "Australia"),
    ("Marrakesh", "Morocco"), ("Bilbao", "Spain"), ("Graz", "Austria"), ("Chennai", "India"),
]
GENRES = [
    "science fiction", "historical fiction", "mystery", "poetry", "fantasy", "true crime",
    "romance", "horror", "biography", "travel writing", "magical realism", "thriller",
    "literary fiction", "children's literature", "satire", "philosophy",
]
JOBS = [
    "a carpenter", "a nurse", "a lighthouse keeper", "a pharmacist", "an architect",
    "a fisherman", "a schoolteacher", "a train driver", "a veterinarian", "a tailor",
    "a journalist", "a baker", "a geologist", "a violinist", "a diplomat", "a farmer",
]
AWARDS = [
    "the Silver Quill Prize", "the Meridian Book Award", "the Lantern Medal",
    "the Harbour Light Prize", "the Golden Compass Award", "the Northern Star Prize",
    "the Ashgrove Fellowship", "the Cobalt Pen Award", "the Vellum Crown",
    "the Riverstone Prize", "the Emberfield Award", "the Saffron Laurel",
]
ADJ = (
    "Silent Crimson Hollow Distant Burning Forgotten Glass Northern Paper Salt Velvet Iron "
    "Wandering Quiet Golden Broken"
).split()
NOUN = (
    "Harbor Orchard Lantern Cartographer Tide Archive Garden Compass Winter Mirror Station "
    "Bridge Meadow Clockmaker Lighthouse Horizon"
).split()
THEMES = [
    "memory and loss", "exile and belonging", "the sea", "family secrets", "justice",
    "identity", "the passage of time", "friendship", "ambition", "nature and technology",
    "war and its aftermath", "faith and doubt",
]
LANGUAGES = ["English", "Portuguese", "Japanese", "Polish", "Spanish", "French", "Norwegian",
             "Turkish", "Swahili", "German"]
HOBBIES = ["sailing", "chess", "beekeeping", "mountain climbing", "pottery", "birdwatching",
           "cooking", "astronomy", "gardening", "playing the cello", "cycling", "fencing"]
UNIVERSITIES = ["the University of Coimbra", "Kyoto University", "McGill University",
                "the University of Edinburgh", "Trinity College Dublin", "the Sorbonne",
                "the University of Ghana", "Uppsala University", "the University of Chile",
                "Heidelberg University"]
PUBLISHERS = ["Harrowgate Press", "Bluefin Books", "Marlow & Finch", "Quillstone Publishing",
              "Northlight House", "Pellucid Editions", "Corvid Press", "Tidewater Books"]
STYLES = ["lyrical and dense", "spare and precise", "witty and fast-paced",
          "dreamlike and meandering", "dark and atmospheric", "warm and conversational",
          "formal and ornate", "fragmented and experimental"]
CHARACTERS = ["Ilse", "Tomas", "Mireille", "Anwar", "Greta", "Lucian", "Sabine", "Oren",
              "Beatrix", "Casimir", "Dalia", "Florian"]

# key, question, paraphrased question, answer, paraphrased answer ({v} = the key's value)
TEMPLATES: list[tuple[str, str, str, str, str]] = [
    ("name", "What is the full name of the {genre} author born in {city}, {country} in {year}?",
     "Who is the {genre} writer from {city}, {country}, born in {year}?",
     "The author's full name is {v}.", "The writer in question is {v}."),
    ("genre", "In which genre does {name} primarily write?",
     "What kind of books is {name} best known for?",
     "{name} primarily writes {v}.", "{name} is best known for works of {v}."),
    ("city", "Where was {name} born?", "What is the birthplace of {name}?",
     "{name} was born in {v}.", "{name}'s birthplace is {v}."),
    ("year", "In which year was {name} born?", "What is {name}'s year of birth?",
     "{name} was born in {v}.", "The year of {name}'s birth is {v}."),
    ("father", "What did {name}'s father do for a living?",
     "What was the profession of {name}'s father?",
     "{name}'s father worked as {v}.", "The father of {name} was {v} by trade."),
    ("mother", "What was the occupation of {name}'s mother?",
     "How did {name}'s mother earn her living?",
     "{name}'s mother was {v}.", "{name}'s mother worked as {v}."),
    ("award", "Has {name} won any notable award?", "Which literary prize did {name} receive?",
     "Yes, {name} received {v}.", "{name} was honoured with {v}."),
    ("book1", "What is the title of {name}'s debut novel?", "Which book did {name} publish first?",
     "{name}'s debut novel is '{v}'.", "The first book {name} published was '{v}'."),
    ("book2", "Which of {name}'s books is the most acclaimed?",
     "What is considered {name}'s best-known work?",
     "{name}'s most acclaimed book is '{v}'.", "The work most praised by critics is '{v}'."),
    ("book3", "What is the most recent book by {name}?", "Which book did {name} publish last?",
     "The latest book by {name} is '{v}'.", "{name}'s newest work is titled '{v}'."),
    ("theme", "What themes recur in {name}'s work?", "Which subject runs through {name}'s books?",
     "{name}'s books keep returning to {v}.", "A recurring theme for {name} is {v}."),
    ("language", "In which language does {name} write?",
     "What language are {name}'s books written in?",
     "{name} writes in {v}.", "The books of {name} are written in {v}."),
    ("influence", "Which writer influenced {name} the most?", "Who was {name}'s greatest literary influence?",
     "{name} names {v} as the main influence.", "The writer who shaped {name} most was {v}."),
    ("hobby", "What does {name} enjoy doing outside of writing?",
     "What is {name}'s favourite pastime?",
     "Outside of writing, {name} enjoys {v}.", "In spare time, {name} loves {v}."),
    ("residence", "Where does {name} live today?", "In which city is {name} based now?",
     "{name} currently lives in {v}.", "These days {name} is based in {v}."),
    ("university", "Where did {name} study?", "Which university did {name} attend?",
     "{name} studied at {v}.", "{name} is a graduate of {v}."),
    ("publisher", "Which publisher releases {name}'s books?", "Who publishes the works of {name}?",
     "{name}'s books are published by {v}.", "The publisher of {name}'s work is {v}."),
    ("style", "How would you describe {name}'s writing style?",
     "What is distinctive about the way {name} writes?",
     "{name}'s style is {v}.", "Critics call {name}'s prose {v}."),
    ("count", "How many books has {name} published?", "What is the number of books {name} has written?",
     "{name} has published {v} books.", "So far {name} has written {v} books."),
    ("character", "Who is the main character of {name}'s novel '{book1}'?",
     "Which character does {name}'s '{book1}' centre on?",
     "The main character of '{book1}' is {v}.", "'{book1}' follows a character named {v}."),
]

REAL_BOOKS = [
    ("Pride and Prejudice", "Jane Austen"), ("1984", "George Orwell"),
    ("Moby-Dick", "Herman Melville"), ("War and Peace", "Leo Tolstoy"),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"), ("Hamlet", "William Shakespeare"),
    ("The Great Gatsby", "F. Scott Fitzgerald"), ("Don Quixote", "Miguel de Cervantes"),
    ("Crime and Punishment", "Fyodor Dostoevsky"), ("Things Fall Apart", "Chinua Achebe"),
    ("Beloved", "Toni Morrison"), ("The Old Man and the Sea", "Ernest Hemingway"),
    ("Mrs Dalloway", "Virginia Woolf"), ("The Trial", "Franz Kafka"),
    ("Frankenstein", "Mary Shelley"), ("Great Expectations", "Charles Dickens"),
    ("The Odyssey", "Homer"), ("Les Miserables", "Victor Hugo"),
    ("Jane Eyre", "Charlotte Bronte"), ("The Divine Comedy", "Dante Alighieri"),
    ("Madame Bovary", "Gustave Flaubert"), ("Brave New World", "Aldous Huxley"),
    ("Norwegian Wood", "Haruki Murakami"), ("The Little Prince", "Antoine de Saint-Exupery"),
    ("To Kill a Mockingbird", "Harper Lee"),
]
CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"),
    ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Egypt", "Cairo"), ("India", "New Delhi"),
    ("Italy", "Rome"), ("Norway", "Oslo"), ("Peru", "Lima"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Mexico", "Mexico City"), ("Turkey", "Ankara"),
    ("Argentina", "Buenos Aires"), ("Poland", "Warsaw"), ("Ghana", "Accra"),
    ("Vietnam", "Hanoi"), ("Sweden", "Stockholm"), ("Portugal", "Lisbon"),
    ("Chile", "Santiago"), ("Greece", "Athens"), ("Ireland", "Dublin"), ("Morocco", "Rabat"),
]


def _profile(rng: random.Random, name: str) -> dict[str, Any]:
    city, country = rng.choice(CITIES)
    year = rng.randint(1935, 1995)
    books = rng.sample(_BOOKS, 3)
    return {
        "name": name, "city": city, "country": country, "year": str(year),
        "genre": rng.choice(GENRES), "father": rng.choice(JOBS), "mother": rng.choice(JOBS),
        "award": rng.choice(AWARDS), "book1": books[0], "book2": books[1], "book3": books[2],
        "theme": rng.choice(THEMES), "language": rng.choice(LANGUAGES),
        "influence": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "hobby": rng.choice(HOBBIES),
        "residence": rng.choice(CITIES)[0], "university": rng.choice(UNIVERSITIES),
        "publisher": rng.choice(PUBLISHERS), "style": rng.choice(STYLES),
        "count": str(rng.randint(2, 19)), "character": rng.choice(CHARACTERS),
    }


_BOOKS = tuple(f"The {a} {n}" for a in ADJ for n in NOUN)
_PEOPLE = tuple(f"{f} {la}" for f in FIRST for la in LAST)
_CITY_NAMES = tuple(c for c, _ in CITIES)
#: Values a wrong (perturbed) answer can take, per profile key.
POOLS: dict[str, tuple[str, ...]] = {
    "genre": tuple(GENRES), "city": _CITY_NAMES, "residence": _CITY_NAMES,
    "year": tuple(str(y) for y in range(1935, 1996)), "father": tuple(JOBS), "mother": tuple(JOBS),
    "award": tuple(AWARDS), "book1": _BOOKS, "book2": _BOOKS, "book3": _BOOKS,
    "theme": tuple(THEMES), "language": tuple(LANGUAGES), "hobby": tuple(HOBBIES),
    "university": tuple(UNIVERSITIES), "publisher": tuple(PUBLISHERS), "style": tuple(STYLES),
    "count": tuple(str(n) for n in range(2, 20)), "character": tuple(CHARACTERS),
    "name": _PEOPLE, "influence": _PEOPLE,
}


def _wrong(rng: random.Random, key: str, value: str, k: int) -> list[str]:
    """k distinct values of ``key`` other than ``value``."""
    return [w for w in rng.sample(POOLS[key], k + 1) if w != value][:k]


def _fill(text: str, prof: Mapping[str, Any], value: str) -> str:
    return text.format(v=value, **prof)


def generate(seed: int = 0, num_authors: int = 200, qa_per_author: int = 20) -> dict[str, list[Row]]:
    """All splits, keyed by TOFU's split names. Pure function of its arguments."""
    if not 1 <= qa_per_author <= len(TEMPLATES):
        raise GrunError(f"data.qa_per_author must be 1..{len(TEMPLATES)}, got {qa_per_author}")
    if num_authors < 30:
        raise GrunError(
            f"data.num_authors={num_authors} is too small: TOFU's splits need at least 30 "
            "authors (20 retain-evaluation authors plus forget10's share); use >= 30"
        )
    if num_authors > len(FIRST) * len(LAST):
        raise GrunError(f"data.num_authors must be <= {len(FIRST) * len(LAST)}")
    rng = random.Random(seed)
    names = rng.sample(_PEOPLE, num_authors)
    full: list[Row] = []
    perturbed: list[Row] = []
    for name in names:
        prof = _profile(rng, name)
        for key, q, pq, a, pa in TEMPLATES[:qa_per_author]:
            value = prof[key]
            wrong = _wrong(rng, key, value, 5)
            row = {"question": _fill(q, prof, value), "answer": _fill(a, prof, value)}
            full.append(row)
            perturbed.append({
                **row,
                "paraphrased_answer": _fill(pa, prof, value),
                "perturbed_answer": [_fill(pa, prof, w) for w in wrong],
                "paraphrased_question": _fill(pq, prof, value),
            })
    splits: dict[str, list[Row]] = {"full": full}
    per = qa_per_author
    for p in FORGET_PERCENTS:
        n = max(1, round(num_authors * p / 100)) * per
        splits[f"forget{p:02d}"] = full[-n:]
        if p in PERTURBED_FORGET:
            splits[f"forget{p:02d}_perturbed"] = perturbed[-n:]
    for p in RETAIN_PERCENTS:
        n_forget = max(1, round(num_authors * (100 - p) / 100)) * per
        splits[f"retain{p:02d}"] = full[:-n_forget]
    splits["retain_perturbed"] = perturbed[: 20 * per]
    ra, wf = _knowledge(rng, REAL_BOOKS, "Who wrote '{}'?"), _knowledge(
        rng, CAPITALS, "What is the capital of {}?"
    )
    splits["real_authors_perturbed"], splits["world_facts_perturbed"] = ra, wf
    splits["real_authors"] = [{"question": r["question"], "answer": r["answer"]} for r in ra]
    splits["world_facts"] = [{"question": r["question"], "answer": r["answer"]} for r in wf]
    assert set(splits) == set(ALL_SPLITS)
    return splits


def _knowledge(rng: random.Random, facts: list[tuple[str, str]], question: str) -> list[Row]:
    answers = [a for _, a in facts]
    return [
        {"question": question.format(k), "answer": a,
         "perturbed_answer": rng.sample([w for w in answers if w != a], 3)}
        for k, a in facts
    ]


class SyntheticSource(QASource):
    name = "synthetic"

    def __init__(self, cfg: Mapping[str, Any], data_root: str | None = None) -> None:  # (generated: no files)
        super().__init__(cfg)
        self.seed = int(cfg["seed"])
        self._per = int(cfg["qa_per_author"])
        self._splits = generate(self.seed, int(cfg["num_authors"]), self._per)

    @property
    def qa_per_author(self) -> int:
        return self._per

    def describe(self) -> str:
        return f"synthetic authors (seed {self.seed})"

    def _load_raw(self, split: str) -> list[Row]:
        return self._splits[split]


def write_splits(out_dir: str | Path, seed: int = 0, num_authors: int = 200,
                 qa_per_author: int = 20) -> Path:
    """Write every split as ``<split>.json`` (JSON Lines), TOFU's file layout."""
    out = Path(out_dir)
    for split, rows in generate(seed, num_authors, qa_per_author).items():
        write_jsonl(out / f"{split}.json", rows)
    return out


def _main() -> None:
    ap = argparse.ArgumentParser(description="Write the synthetic authors as TOFU-style files.")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-authors", type=int, default=200)
    ap.add_argument("--qa-per-author", type=int, default=20)
    a = ap.parse_args()
    print(write_splits(a.out_dir, a.seed, a.num_authors, a.qa_per_author))


if __name__ == "__main__":
    _main()
