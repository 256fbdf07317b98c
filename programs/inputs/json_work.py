#!/usr/bin/env python3
"""JSON-heavy work for the packaged-programs suite: this script is the measured program.

It builds `documents` nested documents (dicts, lists, strings, numbers) from a seeded
generator, serialises each with json.dumps, parses it back, transforms the result
(re-keys, filters, aggregates) and serialises it again, in `rounds` rounds. Every step
allocates and frees many small Python objects, which is what CPython hands to malloc
(through its object allocator for the small ones). It prints the counts and a SHA-256 of
all the text it produced, the same on every run.

usage: json_work.py [documents=1200] [rounds=3]
"""

import hashlib
import json
import random
import sys

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
]


def value(rng, depth):
    """A random JSON value; containers get rarer the deeper they are."""
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind < 2:
        return rng.randrange(-10**6, 10**6)
    if kind < 3:
        # Exact binary fractions, so the text form is the same everywhere.
        return rng.randrange(-10**5, 10**5) / 64
    if kind < 5:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 8)))
    if kind < 6:
        return rng.choice([True, False, None])
    if kind < 8:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 8))]
    return {
        f"{rng.choice(WORDS)}_{i}": value(rng, depth + 1) for i in range(rng.randrange(1, 8))
    }


def document(rng, index):
    return {
        "id": index,
        "name": f"{rng.choice(WORDS)}-{index}",
        "tags": sorted({rng.choice(WORDS) for _ in range(rng.randrange(1, 6))}),
        "payload": [value(rng, 1) for _ in range(rng.randrange(4, 16))],
        "meta": {w: value(rng, 2) for w in rng.sample(WORDS, rng.randrange(2, 8))},
    }


def walk(node, counts):
    """Counts the nodes of each type and returns a rewritten copy (keys upper-cased,
    strings reversed, integers doubled, nulls dropped from lists)."""
    if isinstance(node, dict):
        counts["object"] += 1
        return {key.upper(): walk(item, counts) for key, item in node.items()}
    if isinstance(node, list):
        counts["array"] += 1
        return [walk(item, counts) for item in node if item is not None]
    if isinstance(node, str):
        counts["string"] += 1
        return node[::-1]
    if isinstance(node, bool) or node is None:
        counts["literal"] += 1
        return node
    counts["number"] += 1
    return node * 2 if isinstance(node, int) else node


def main():
    documents = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    digest = hashlib.sha256()
    counts = {"object": 0, "array": 0, "string": 0, "number": 0, "literal": 0}
    text_bytes = 0
    for round_index in range(rounds):
        rng = random.Random(20261206 + round_index)
        docs = [document(rng, i) for i in range(documents)]
        texts = [json.dumps(d, sort_keys=True) for d in docs]
        parsed = [json.loads(t) for t in texts]
        if parsed != docs:
            sys.exit("json_work: a document changed on its way through dumps and loads")
        rewritten = [walk(d, counts) for d in parsed]
        # One large document as well as many small ones.
        combined = json.dumps({"round": round_index, "documents": rewritten}, indent=1)
        back = json.loads(combined)
        by_tag = {}
        for d in back["documents"]:
            for tag in d["TAGS"]:
                by_tag.setdefault(tag, []).append(d["ID"])
        summary = json.dumps(by_tag, sort_keys=True, separators=(",", ":"))
        for text in texts + [combined, summary]:
            text_bytes += len(text)
            digest.update(text.encode())
    print(f"json_work documents={documents} rounds={rounds}")
    print(" ".join(f"{kind}={n}" for kind, n in sorted(counts.items())))
    print(f"text_bytes={text_bytes} sha256={digest.hexdigest()}")


if __name__ == "__main__":
    main()
