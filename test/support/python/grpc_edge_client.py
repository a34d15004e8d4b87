"""gRPC edge cases against a fleetspeak.server.Admin server, from Python grpcio.

Usage: grpc_edge_client.py <admin host:port> <max receive bytes>

The server under test must answer ListClients by echoing one client per requested id (none when
more than 1000 are asked for, to keep the answer small), and let
KeepAlive wait until its deadline. Prints one JSON object: for each case the status code name
and details (or what came back), for the test to check.
"""

import json
import sys

import grpc

from fleetspeak_server import admin_pb2
from fleetspeak_server import admin_pb2_grpc
from fleetspeak import common_pb2


def outcome(fn):
    try:
        return {"code": "OK", "value": fn()}
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}


def main():
    address, max_bytes = sys.argv[1], int(sys.argv[2])
    ids = [bytes([i % 256]) * 8 for i in range(1000)]
    # A ListClientsRequest of n ids is n * 10 bytes (tag, length, 8 bytes); one of about max_bytes.
    near_max = [b"\x01" * 8] * ((max_bytes - 16) // 10)
    over_max = near_max + [b"\x02" * 8] * 10
    report = {}
    with grpc.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        report["deadline"] = outcome(lambda: stub.KeepAlive(common_pb2.EmptyMessage(), timeout=0.3) and None)
        report["gzip"] = outcome(
            lambda: len(
                stub.ListClients(
                    admin_pb2.ListClientsRequest(client_ids=ids), timeout=30, compression=grpc.Compression.Gzip
                ).clients
            )
        )
        report["deflate"] = outcome(
            lambda: len(
                stub.ListClients(
                    admin_pb2.ListClientsRequest(client_ids=ids), timeout=30, compression=grpc.Compression.Deflate
                ).clients
            )
        )
        report["near_max"] = outcome(
            lambda: len(stub.ListClients(admin_pb2.ListClientsRequest(client_ids=near_max), timeout=30).clients)
        )
        report["over_max"] = outcome(
            lambda: len(stub.ListClients(admin_pb2.ListClientsRequest(client_ids=over_max), timeout=30).clients)
        )
        report["after"] = outcome(
            lambda: len(stub.ListClients(admin_pb2.ListClientsRequest(client_ids=ids[:3]), timeout=30).clients)
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
