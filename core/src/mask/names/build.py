#!/usr/bin/env python3
"""Rebuild first.txt / last.txt / REMOVED.txt from the PyPI `names` 0.3.0 sdist.

Usage: python3 build.py /path/to/names-0.3.0/names   (the dir holding dist.*)
See README.md for provenance and the cutting rules.
"""
import collections
import os
import sys

FIRST_N = 1200
LAST_N = 1500

# Words removed from BOTH lists: months/states/languages/organisations, colours,
# medical terms and eponyms, and common English words that show up capitalised
# at a sentence start or in headings/field values of clinical text.
STOPWORDS = set("""
April June May Georgia Virginia Carolina Washington
English French Welsh Christian Kaiser Mayo
Colon Stone Temple Head Hand Foley Graves Hickman Swan Bell Burns Dye Bland
Gene Iris Flora Amber Hazel Cross Hurt Frank Sharp Gross Major Minor Fair
Short Small
Brown White Green Black Gray Blue Golden Silver
Will Mark Bill Rose Hope Faith Joy Grace Grant Long Young Hill Wood Woods
King Pope Bishop Hall Price Ward Rich Dean Chase Guy Page Cash Case Miles
Lane Max Drew Little Good Best Day Key Post Self Numbers West
""".split())


# Census files are upper-case with apostrophes stripped; restore the usual
# spelling of Irish O' names. (Multi-word Hispanic names such as DELEON or
# DELACRUZ are left as the Census spells them.)
O_APOSTROPHE = {"Obrien", "Oconnor", "Oconnell", "Odonnell", "Oneal", "Oneil", "Oneill"}


def spell(raw):
    name = raw.capitalize()
    if name.startswith("Mc") and len(name) > 2:
        return "Mc" + name[2:].capitalize()
    if name in O_APOSTROPHE:
        return "O'" + name[1:].capitalize()
    return name


def load(path):
    """Census dist file: NAME  pct  cumulative_pct  rank."""
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if parts:
                yield spell(parts[0]), float(parts[1])


def main(src):
    first = collections.Counter()
    for f in ("dist.male.first", "dist.female.first"):
        for name, pct in load(os.path.join(src, f)):
            first[name] += pct  # male% + female%: equal weight per sex
    # Ties broken alphabetically so the cut is deterministic.
    first_top = [n for n, _ in sorted(first.items(), key=lambda kv: (-kv[1], kv[0]))][:FIRST_N]
    last_top = [n for n, _ in load(os.path.join(src, "dist.all.last"))][:LAST_N]

    removed = sorted({n for n in first_top + last_top if n in STOPWORDS})
    here = os.path.dirname(os.path.abspath(__file__))
    for fname, names in (("first.txt", first_top), ("last.txt", last_top)):
        with open(os.path.join(here, fname), "w") as fh:
            fh.writelines(n + "\n" for n in names if n not in STOPWORDS)
    with open(os.path.join(here, "REMOVED.txt"), "w") as fh:
        fh.writelines(n + "\n" for n in removed)
    unused = sorted(STOPWORDS - set(removed))
    if unused:
        sys.exit(f"stopwords not present in either list: {unused}")


if __name__ == "__main__":
    main(sys.argv[1])
