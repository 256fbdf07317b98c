#!/usr/bin/env python3
"""Writes the SMT-LIB2 problem for the packaged-programs suite's z3 program:
`DIR/problem.smt2`.

The problem mixes a pigeonhole core (more pigeons than holes: unsatisfiable, and hard for
clause learning, so the solver builds and discards many learned clauses) with seeded
linear integer constraints over the same pigeons' hole numbers. z3 answers `unsat` on the
first line; the work, and the solver's many short-lived terms and clauses, are fixed by
the file.

usage: z3_input.py DIR [holes=7] [ints=1500]
"""

import os
import random
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: z3_input.py DIR [holes] [ints]")
    directory = sys.argv[1]
    holes = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    ints = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
    pigeons = holes + 1
    rng = random.Random(3141)
    out = ["(set-logic QF_LIA)", "(set-option :random-seed 7)"]
    for p in range(pigeons):
        for h in range(holes):
            out.append(f"(declare-const p{p}h{h} Bool)")
        out.append(f"(declare-const hole{p} Int)")
        out.append(f"(assert (and (>= hole{p} 0) (< hole{p} {holes})))")
        # The integer names the hole the Boolean says the pigeon is in.
        for h in range(holes):
            out.append(f"(assert (= p{p}h{h} (= hole{p} {h})))")
    for p in range(pigeons):
        out.append("(assert (or " + " ".join(f"p{p}h{h}" for h in range(holes)) + "))")
    for h in range(holes):
        for a in range(pigeons):
            for b in range(a + 1, pigeons):
                out.append(f"(assert (or (not p{a}h{h}) (not p{b}h{h})))")
    # Linear constraints that hold for many placements, so they add work but no early
    # contradiction.
    for i in range(ints):
        chosen = rng.sample(range(pigeons), 3)
        coeffs = [rng.randrange(1, 5) for _ in chosen]
        terms = " ".join(f"(* {c} hole{p})" for c, p in zip(coeffs, chosen))
        bound = sum(coeffs) * (holes - 1)
        out.append(f"(assert (<= (+ {terms}) {bound - rng.randrange(0, holes)}))")
    out.append("(check-sat)")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "problem.smt2"), "w", encoding="ascii") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
