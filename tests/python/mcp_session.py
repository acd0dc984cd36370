"""A real MCP server and client (the official `mcp` Python SDK) over streamable HTTP.

  mcp_session.py server PORT        serve tools read_record and delete_record on 127.0.0.1:PORT/mcp
  mcp_session.py client URL KEY     initialize, tools/list, tools/call read_record, then try
                                    delete_record; prints one JSON object"""
import asyncio
import json
import sys


def serve(port):
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("records", host="127.0.0.1", port=port, log_level="WARNING")

    @server.tool()
    def read_record(mrn: str) -> str:
        """Reads a synthetic record."""
        return f"record {mrn}: synthetic patient, stable"

    @server.tool()
    def delete_record(mrn: str) -> str:
        """Deletes a record (the gateway should never let an agent get here)."""
        return f"deleted {mrn}"

    server.run(transport="streamable-http")


async def client(url, key):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    out = {}
    try:
        async with streamablehttp_client(url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as (r, w, _):
            async with ClientSession(r, w) as session:
                init = await session.initialize()
                out["server"] = init.serverInfo.name
                out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
                res = await session.call_tool("read_record", {"mrn": "12345"})
                out["read"] = res.content[0].text
                res = await asyncio.wait_for(session.call_tool("delete_record", {"mrn": "12345"}), 10)
                out["delete"] = res.content[0].text if not res.isError else "error: " + res.content[0].text
    except BaseException as e:  # the gateway's 403 ends the SDK's transport task group
        text = repr(e)
        for sub in getattr(e, "exceptions", []):
            text += " " + repr(sub)
        out.setdefault("delete", "refused: " + text[:300])
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3]))
