"""asyncpg reads the `patients` table (see psycopg_patients.py) through a masked PostgreSQL route
and prints what it received as one JSON object. Usage: asyncpg_patients.py HOST PORT PASSWORD

asyncpg prepares each statement once (Parse and Describe of the statement), then binds and
executes it with binary results and no Describe of the portal: the gateway must read those
rows through the statement's description."""
import asyncio
import json
import sys

import asyncpg


async def main(host, port, password):
    conn = await asyncpg.connect(host=host, port=port, user="someone", password=password, database="postgres",
                                 ssl=False, timeout=10)
    try:
        q = "select id, name, ssn, dob, notes from patients order by id"
        rows = [list(r.values()) for r in await conn.fetch(q)]
        again = [list(r.values()) for r in await conn.fetch(q)]
        one = await conn.fetchval("select ssn from patients where id = $1", 1)
    finally:
        await conn.close()
    print(json.dumps({"rows": rows, "again": again, "one": one}, default=str))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
