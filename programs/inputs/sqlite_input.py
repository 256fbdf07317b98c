#!/usr/bin/env python3
"""Writes the SQL load for the packaged-programs suite's sqlite program: `DIR/load.sql`.

The script creates three tables (customers, products, orders), inserts rows from a seeded
generator inside one transaction, builds indexes, and runs joins, group-bys, a window
function, a recursive CTE, updates and deletes. Every query has an ORDER BY over unique
keys, so `sqlite3 :memory: < load.sql` prints the same text on every run. sqlite3 takes
its page cache and every statement's memory from malloc.

usage: sqlite_input.py DIR [customers=20000] [orders=200000]
"""

import os
import random
import sys

CITIES = ["Avalon", "Brookfield", "Carver", "Dunmore", "Easton", "Fairview", "Glenwood",
          "Harbor", "Ironwood", "Jasper", "Kingsley", "Lakeside"]
CATEGORIES = ["tools", "garden", "kitchen", "books", "toys", "music", "sports", "office"]


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: sqlite_input.py DIR [customers] [orders]")
    directory = sys.argv[1]
    customers = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    orders = int(sys.argv[3]) if len(sys.argv) > 3 else 200000
    products = 2000
    rng = random.Random(5117)
    os.makedirs(directory, exist_ok=True)
    lines = [
        "PRAGMA journal_mode = OFF;",
        "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT, joined INTEGER);",
        "CREATE TABLE product (id INTEGER PRIMARY KEY, name TEXT, category TEXT, cents INTEGER);",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, product INTEGER,"
        " quantity INTEGER, day INTEGER, note TEXT);",
        "BEGIN;",
    ]
    for i in range(customers):
        name = f"customer {i:06d} {rng.randrange(10**9):09d}"
        lines.append(f"INSERT INTO customer VALUES ({i}, '{name}', '{rng.choice(CITIES)}',"
                     f" {rng.randrange(3650)});")
    for i in range(products):
        lines.append(f"INSERT INTO product VALUES ({i}, 'product {i:05d}',"
                     f" '{rng.choice(CATEGORIES)}', {rng.randrange(99, 100000)});")
    for i in range(orders):
        note = "x" * rng.randrange(0, 60)
        lines.append(f"INSERT INTO orders VALUES ({i}, {rng.randrange(customers)},"
                     f" {rng.randrange(products)}, {rng.randrange(1, 20)},"
                     f" {rng.randrange(3650)}, '{note}');")
    lines += [
        "COMMIT;",
        "CREATE INDEX orders_customer ON orders (customer);",
        "CREATE INDEX orders_product ON orders (product, day);",
        "CREATE INDEX customer_city ON customer (city, joined);",
        # Revenue per city and category: a three-way join and a group-by.
        "SELECT c.city, p.category, count(*), sum(o.quantity * p.cents)"
        " FROM orders o JOIN customer c ON c.id = o.customer JOIN product p ON p.id = o.product"
        " GROUP BY c.city, p.category ORDER BY c.city, p.category;",
        # The best customers, ranked with a window function.
        "SELECT id, total, rank FROM (SELECT c.id AS id, sum(o.quantity * p.cents) AS total,"
        " rank() OVER (ORDER BY sum(o.quantity * p.cents) DESC, c.id) AS rank"
        " FROM customer c JOIN orders o ON o.customer = c.id JOIN product p ON p.id = o.product"
        " GROUP BY c.id) WHERE rank <= 25 ORDER BY rank;",
        # Orders per 100-day bucket through a recursive CTE.
        "WITH RECURSIVE bucket(start) AS (SELECT 0 UNION ALL SELECT start + 100 FROM bucket"
        " WHERE start < 3600) SELECT b.start, count(o.id), sum(length(o.note)) FROM bucket b"
        " LEFT JOIN orders o ON o.day >= b.start AND o.day < b.start + 100"
        " GROUP BY b.start ORDER BY b.start;",
        # String work: group_concat over sorted names.
        "SELECT city, length(group_concat(name, ',')), count(*) FROM"
        " (SELECT city, name FROM customer ORDER BY city, name) GROUP BY city ORDER BY city;",
        "UPDATE orders SET note = note || upper(substr(note, 1, 5)) WHERE quantity > 15;",
        "DELETE FROM orders WHERE day % 7 = 3;",
        "SELECT p.category, count(*), sum(o.quantity), sum(length(o.note)) FROM orders o"
        " JOIN product p ON p.id = o.product GROUP BY p.category ORDER BY p.category;",
        "SELECT count(*), sum(quantity), max(day) FROM orders;",
    ]
    with open(os.path.join(directory, "load.sql"), "w", encoding="ascii") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
