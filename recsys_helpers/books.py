"""Book metadata: titles and genres, so that a recommendation can be judged by a reader.

The UCSD Goodreads data publishes book metadata beside the reviews, one JSON record per
line (gzip):

* ``goodreads_books_comics_graphic.json.gz`` and ``goodreads_books_fantasy_paranormal.json.gz``:
  one record per book with (among many fields) ``book_id`` and ``title``;
* ``goodreads_book_genres_initial.json.gz``: ``{"book_id": ..., "genres": {name: count}}``,
  where ``count`` is how many readers shelved the book under that fuzzy genre (one of ten:
  ``children``, ``comics, graphic``, ``fantasy, paranormal``, ``fiction``,
  ``history, historical fiction, biography``, ``mystery, thriller, crime``,
  ``non-fiction``, ``poetry``, ``romance``, ``young-adult``).

A book's *genre* here is the genre it was shelved under most.  The bundled data (the
Goodreads-like sample and the taste laboratory) carry generated files in these formats;
the real ones are fetched on request (``python -m recsys_helpers fetch comics_books
fantasy_books book_genres``).  Without them :func:`book_table` returns the IDs alone and
says so in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["GENRES", "METADATA_FOR", "book_table", "describe_books", "generated_titles",
           "write_book_metadata"]

#: The ten fuzzy genres of ``goodreads_book_genres_initial.json.gz``.
GENRES = ("children", "comics, graphic", "fantasy, paranormal", "fiction",
          "history, historical fiction, biography", "mystery, thriller, crime",
          "non-fiction", "poetry", "romance", "young-adult")

#: Which titles file describes the books of which reviews file.
METADATA_FOR = {"comics_reviews": "comics_books", "fantasy_reviews": "fantasy_books",
                "fantasy_tsv": "fantasy_books"}

# Words of generated titles, by genre: a title hints at its book's genre, as real ones do.
_TITLE_WORDS = {
    "children": (("Little", "Sleepy", "Brave", "Busy", "Silly", "Tiny"),
                 ("Bear", "Duckling", "Tractor", "Moon", "Puppy", "Garden", "Balloon")),
    "comics, graphic": (("Captain", "Doctor", "Agent", "Iron", "Shadow", "Star"),
                        ("Nova", "Patrol", "Legion", "Vigilante", "Titan", "Squad")),
    "fantasy, paranormal": (("Dragon", "Witch", "Shadow", "Silver", "Blood", "Moon"),
                            ("Crown", "Oath", "Throne", "Curse", "Sorceress", "Realm")),
    "fiction": (("Quiet", "Long", "Distant", "Ordinary", "Borrowed", "Paper"),
                ("House", "Summer", "River", "Neighbours", "Letters", "Years")),
    "history, historical fiction, biography": (
        ("Emperor's", "Forgotten", "Last", "General's", "Empire's", "Revolution's"),
        ("Daughter", "War", "Campaign", "Chronicle", "Dynasty", "Exile")),
    "mystery, thriller, crime": (("Murder", "Silent", "Cold", "Deadly", "Missing", "Midnight"),
                                 ("Witness", "Alibi", "Case", "Suspect", "Verdict", "Motive")),
    "non-fiction": (("Thinking", "Hidden", "Deep", "Useful", "Simple", "Curious"),
                    ("Habits", "Numbers", "Science", "Economics", "Minds", "Questions")),
    "poetry": (("Salt", "Winter", "Small", "Broken", "Green", "Open"),
               ("Hymns", "Psalms", "Elegies", "Sonnets", "Verses", "Lullabies")),
    "romance": (("Summer", "Secret", "Stolen", "Sweet", "Reckless", "Wild"),
                ("Kiss", "Promise", "Wedding", "Heart", "Affair", "Love")),
    "young-adult": (("Rebel", "Chosen", "Lost", "Burning", "Hidden", "Fearless"),
                    ("Academy", "Girl", "Trials", "Rising", "Heir", "Summer")),
}


def generated_titles(genres, rng: np.random.Generator) -> list[str]:
    """One made-up title per book, in the vocabulary of its genre, all distinct."""
    titles, seen = [], {}
    for g in genres:
        first, second = _TITLE_WORDS[g]
        title = f"The {first[rng.integers(len(first))]} {second[rng.integers(len(second))]}"
        seen[title] = seen.get(title, 0) + 1
        titles.append(title if seen[title] == 1 else f"{title}, Book {seen[title]}")
    return titles


def _dump_lines(records) -> bytes:
    import json

    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_book_metadata(out_dir: str | os.PathLike, groups: dict, rng: np.random.Generator,
                        other_genres: float = 0.3) -> list[Path]:
    """Write generated book metadata in the UCSD formats into ``out_dir``.

    ``groups`` maps a titles file (``comics_books`` or ``fantasy_books``) to the
    ``(book_ids, genres)`` it describes (each book's genre one of :data:`GENRES`).  Each
    titles file gets one record per book; ``goodreads_book_genres_initial.json.gz`` gets
    every book once, its genre the one most readers shelved it under, a few other genres
    with smaller counts.
    """
    from .datasets import get_dataset
    from .sample import _write_bytes

    out_dir = Path(out_dir)
    genre_of = {}  # every book once, in order: a book has one title in every file
    for book_ids, genres in groups.values():
        for b, g in zip(book_ids, genres):
            genre_of.setdefault(str(b), g)
    title_of = dict(zip(genre_of, generated_titles(list(genre_of.values()), rng)))
    written, genre_records, seen = [], [], set()
    for titles_name, (book_ids, genres) in groups.items():
        book_ids = [str(b) for b in book_ids]
        shelved = rng.integers(20, 2_000, size=len(book_ids))
        records = []
        for k, b in enumerate(book_ids):
            title = title_of[b]
            records.append({"book_id": b, "title": title, "title_without_series": title,
                            "authors": [{"author_id": str(1000 + rng.integers(90_000)),
                                         "role": ""}],
                            "publication_year": str(1990 + rng.integers(30)),
                            "ratings_count": str(int(shelved[k])), "language_code": "eng"})
            if b in seen:
                continue
            seen.add(b)
            counts = {genres[k]: int(shelved[k])}
            for g in rng.choice(GENRES, size=2, replace=False):
                if g not in counts and rng.random() < other_genres:
                    counts[str(g)] = int(rng.integers(1, max(2, shelved[k] // 4)))
            genre_records.append({"book_id": b, "genres": counts})
        path = out_dir / get_dataset(titles_name).filename
        _write_bytes(path, [_dump_lines(records)], gz=True)
        written.append(path)
    path = out_dir / get_dataset("book_genres").filename
    _write_bytes(path, [_dump_lines(genre_records)], gz=True)
    return written + [path]


def _main_genre(counts) -> str:
    if not isinstance(counts, dict) or not counts:
        return ""
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def book_table(reviews_name: str, book_ids=None, *, lab: bool = False,
               verbose: bool = True) -> pd.DataFrame:
    """Titles and genres of books, indexed by ``book_id`` (a string).

    Parameters
    ----------
    reviews_name : str
        The ratings or reviews file whose books are described (``comics_reviews``,
        ``fantasy_reviews`` or ``fantasy_tsv``): it picks the titles file.
    book_ids : sequence, optional
        Keep these books only (all books of the file by default).
    lab : bool
        The taste laboratory's books instead.

    Returns
    -------
    DataFrame with columns ``title`` and ``genre`` (the genre the book was shelved under
    most; ``""`` where unknown).  Where the metadata files are absent (real data without
    ``fetch comics_books ...``) the titles are the IDs and the genres empty, with one line
    saying so.
    """
    from .datasets import display_path, get_dataset, locate
    from .readers import read_json_lines

    wanted = None if book_ids is None else {str(b) for b in book_ids}
    titles_name = METADATA_FOR[reviews_name]
    # The metadata that describes the books read: the files beside the ratings file that
    # was read (the bundled sample's, the laboratory's, or the fetched real ones).
    folder = locate(reviews_name, lab=lab, verbose=False).parent
    titles_path = folder / get_dataset(titles_name).filename
    genres_path = folder / get_dataset("book_genres").filename
    if not (titles_path.is_file() and genres_path.is_file()):
        if verbose:
            print(f"No book metadata beside {display_path(folder)}: books are shown by ID "
                  f"(fetch it with `python -m recsys_helpers fetch {titles_name} book_genres`).")
        ids = sorted(wanted) if wanted is not None else []
        return pd.DataFrame({"title": ids, "genre": [""] * len(ids)},
                            index=pd.Index(ids, name="book_id"))
    titles = {}
    for rec in read_json_lines(titles_path, ("book_id", "title"), wanted):
        titles[str(rec["book_id"])] = str(rec.get("title") or rec["book_id"])
    genre = {str(rec["book_id"]): _main_genre(rec.get("genres"))
             for rec in read_json_lines(genres_path, ("book_id", "genres"), wanted)}
    ids = sorted(wanted) if wanted is not None else sorted(titles)
    return pd.DataFrame({"title": [titles.get(b, b) for b in ids],
                         "genre": [genre.get(b, "") for b in ids]},
                        index=pd.Index(ids, name="book_id"))


def describe_books(book_ids, table: pd.DataFrame, scores=None, header: str | None = None):
    """A small table of books (title, genre, and a score if given), in the given order."""
    ids = [str(b) for b in book_ids]
    out = table.reindex(ids)
    out["title"] = out["title"].fillna(pd.Series(ids, index=out.index))
    out["genre"] = out["genre"].fillna("")
    if scores is not None:
        out["score"] = np.round(np.asarray(scores, dtype=float), 3)
    out = out.reset_index()
    out.index = np.arange(1, len(out) + 1)
    if header:
        out.index.name = header
    return out
