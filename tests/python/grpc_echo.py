"""grpcio server and client for the gateway tests, on loopback.

  grpc_echo.py server PORT          serve airlock.test.Echo; prints READY once listening
  grpc_echo.py client TARGET KEY    call every shape through TARGET; prints one JSON object
  grpc_echo.py masked TARGET KEY    Unary with identifiers in it, and Tokens; prints one JSON object

The protobuf code is generated at start-up from echo.proto with grpcio-tools."""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = tempfile.mkdtemp(prefix="airlock-grpc-")
if protoc.main(["protoc", f"-I{HERE}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", os.path.join(HERE, "echo.proto")]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, OUT)
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402

# The modules are loaded; the generated files are not needed any more, and a server that is
# killed at the end of a test would never clean them up itself.
sys.path.remove(OUT)
shutil.rmtree(OUT, ignore_errors=True)


class Echo(echo_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        # A digest of the credential the server received: enough to check which one arrived
        # without echoing a secret back to the caller.
        auth = dict(context.invocation_metadata()).get("authorization", "")
        digest = hashlib.sha256(auth.encode()).hexdigest()[:16]
        return echo_pb2.Note(text=f"{request.text}|{digest}", n=request.n + 1)

    def ServerStream(self, request, context):
        if request.text == "big":
            # A message past the gateway's gRPC message limit (4 MiB), after one that is not.
            yield echo_pb2.Note(text="small", n=0)
            yield echo_pb2.Note(text="x" * 5_000_000, n=1)
            return
        for i in range(request.n):
            yield echo_pb2.Note(text=f"{request.text}-{i}", n=i)

    def Bidi(self, request_iterator, context):
        for note in request_iterator:
            yield echo_pb2.Note(text=note.text.upper(), n=note.n * 2)

    def Tokens(self, request, context):
        text = NOTE
        for i in range(0, len(text), 5):
            yield echo_pb2.Note(text=text[i:i + 5], n=i)


NOTE = "Patient SSN 219-09-9999, phone (617) 555-0142, mail jane.demo@example.org; stable."


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("READY", flush=True)
    stop = threading.Event()
    try:
        stop.wait(120)  # bounded: the test kills it long before
    finally:
        server.stop(0)


def client(target, key):
    out = {}
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        md = [("authorization", f"Bearer {key}")]
        r = stub.Unary(echo_pb2.Note(text="hello", n=41), metadata=md, timeout=10)
        out["unary"] = {"text": r.text, "n": r.n}
        out["server_stream"] = [n.text for n in stub.ServerStream(echo_pb2.Note(text="s", n=5), metadata=md, timeout=10)]
        notes = [echo_pb2.Note(text=t, n=i) for i, t in enumerate(["a", "b", "c"])]
        out["bidi"] = [(n.text, n.n) for n in stub.Bidi(iter(notes), metadata=md, timeout=10)]
        try:
            stub.Unary(echo_pb2.Note(text="anonymous"), timeout=10)
            out["no_credential"] = "OK"
        except grpc.RpcError as e:
            out["no_credential"] = e.code().name
            out["no_credential_details"] = e.details()
    print(json.dumps(out))


def masked(target, key):
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        md = [("authorization", f"Bearer {key}")]
        r = stub.Unary(echo_pb2.Note(text="SSN 219-09-9999 on file", n=1), metadata=md, timeout=10)
        pieces = [n.text for n in stub.Tokens(echo_pb2.Note(), metadata=md, timeout=10)]
        big = {"got": []}
        try:
            for n in stub.ServerStream(echo_pb2.Note(text="big", n=2), metadata=md, timeout=10):
                big["got"].append(n.text[:10])
        except grpc.RpcError as e:
            big["code"] = e.code().name
            big["details"] = e.details()
    print(json.dumps({"unary": r.text.split("|")[0], "pieces": pieces, "tokens": "".join(pieces), "note": NOTE,
                      "big": big}))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "masked":
        masked(sys.argv[2], sys.argv[3])
    else:
        client(sys.argv[2], sys.argv[3])
