"""psycopg 3 reads a `patients` table through a masked PostgreSQL route and prints what it
received as one JSON object. Usage: psycopg_patients.py HOST PORT PASSWORD setup|read
`setup` (run as a role the route does not mask) creates and fills the table; `read` selects it
in text and binary format, through an alias, as a prepared statement, reads a jsonb column, and
tries COPY TO (which a route with column rules refuses) and a duplicate insert whose error
quotes the value."""
import json
import sys

import psycopg

host, port, password, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
dsn = dict(host=host, port=port, user="someone", password=password, dbname="postgres", sslmode="disable",
           connect_timeout=10)


def plain(rows):
    return [[None if v is None else (v if isinstance(v, (int, str, dict)) else str(v)) for v in r] for r in rows]


with psycopg.connect(**dsn, autocommit=True) as conn:
    if mode == "setup":
        conn.execute("create table if not exists patients (id int primary key, name text, ssn varchar(11) unique, "
                     "dob date, notes text, info jsonb)")
        conn.execute("delete from patients where id >= 0")
        conn.execute(
            "insert into patients values "
            "(1, 'Quentin Zed', '219-09-9999', '1971-03-04', 'reach at q.zed@example.org', "
            "'{\"phone\": \"617-555-0101\", \"ward\": 4}'), "
            "(2, 'Ada Roe', '078-05-1120', '1980-01-07', 'no contact on file', '{\"ward\": 2}')")
        print(json.dumps({"ok": True}))
        sys.exit(0)
    q = "select id, name, ssn, dob, notes, info from patients order by id"
    out = {
        "text": plain(conn.execute(q).fetchall()),
        "binary": plain(conn.cursor(binary=True).execute(q).fetchall()),
        "alias": [r[0] for r in conn.execute("select ssn as x from patients order by id").fetchall()],
        "prepared": [plain(conn.execute("select name, ssn from patients where id = %s", (i,), prepare=True).fetchall())
                     for i in (1, 2, 1)],
    }
    try:
        with conn.cursor() as cur:
            with cur.copy("copy (select ssn from patients) to stdout") as copy:
                out["copy"] = [bytes(r).decode() for r in copy]
    except psycopg.Error as e:
        out["copy_error"] = {"sqlstate": e.sqlstate, "message": str(e)}
    out["after_copy"] = conn.execute("select 1").fetchone()[0]
    try:  # the server's error quotes the duplicate value
        conn.execute("insert into patients (id, ssn) select 99, ssn from patients where id = 1")
    except psycopg.Error as e:
        out["duplicate"] = {"sqlstate": e.sqlstate, "detail": e.diag.message_detail}
    print(json.dumps(out))
