"""psycopg 3 through the PostgreSQL route: text and binary results, a server-side cursor, COPY in
and out, a prepared statement, pipeline mode, LISTEN/NOTIFY, and cancel() of a long pg_sleep.
Usage: psycopg_session.py HOST PORT PASSWORD; prints one JSON object."""
import json
import sys
import threading
import time

import psycopg

host, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dsn = dict(host=host, port=port, user="app", password=password, dbname="postgres", sslmode="disable", connect_timeout=10)
out = {}
with psycopg.connect(**dsn, autocommit=True) as conn:
    conn.execute("create table if not exists notes (id int primary key, body text)")
    conn.execute("delete from notes where id >= 0")
    with conn.cursor() as cur:
        with cur.copy("copy notes (id, body) from stdin") as copy:
            for i in range(100):
                copy.write_row((i, f"note {i}"))
    out["text"] = conn.execute("select count(*), max(body) from notes").fetchone()[1]
    out["binary"] = conn.cursor(binary=True).execute("select sum(id)::int8 from notes").fetchone()[0]
    with conn.transaction():
        with conn.cursor(name="big") as cur:
            cur.itersize = 10
            out["server_side_rows"] = sum(1 for _ in cur.execute("select id from notes order by id"))
    rows = []
    with conn.cursor() as cur:
        with cur.copy("copy (select id from notes where id < 3 order by id) to stdout") as copy:
            for row in copy.rows():
                rows.append(row[0])
    out["copy_out"] = rows
    out["prepared"] = [conn.execute("select body from notes where id = %s", (i,), prepare=True).fetchone()[0] for i in (1, 2, 3)]
    with conn.pipeline():
        a = conn.execute("select 1")
        b = conn.execute("select 2")
    out["pipeline"] = [a.fetchone()[0], b.fetchone()[0]]
    conn.execute("listen ch")
    with psycopg.connect(**dsn, autocommit=True) as other:
        other.execute("notify ch, 'hello'")
    gen = conn.notifies(timeout=10, stop_after=1)
    out["notify"] = [n.payload for n in gen]

    def cancel_soon():
        time.sleep(1)
        conn.cancel()

    threading.Thread(target=cancel_soon).start()
    started = time.time()
    try:
        conn.execute("select pg_sleep(30)")
        out["cancel"] = "not cancelled"
    except psycopg.errors.QueryCanceled:
        out["cancel"] = "cancelled"
    out["cancel_seconds"] = round(time.time() - started, 1)
print(json.dumps(out))
