"""Calls a fleetspeak.server.Admin server over TLS the way a GRR deployment would with a small
wrapper around the connector: grpc.secure_channel with grpc.ssl_channel_credentials.

Usage: admin_mtls_client.py <host:port> <CA PEM file> [<client certificate PEM> <client key PEM>]
       admin_mtls_client.py <host:port> -     (plaintext, as GRR's stock connector dials)

Prints one JSON object: for KeepAlive and ListClients, null on success or {code, details}.
"""

import json
import sys

import grpc

from fleetspeak import common_pb2
from fleetspeak_server import admin_pb2
from fleetspeak_server import admin_pb2_grpc


def read(path):
    with open(path, "rb") as f:
        return f.read()


def error_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}
    return None


def main():
    address, ca = sys.argv[1:3]
    if ca == "-":
        channel = grpc.insecure_channel(address)
    else:
        if len(sys.argv) > 3:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(ca), private_key=read(sys.argv[4]), certificate_chain=read(sys.argv[3])
            )
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=read(ca))
        # The admin server's certificate names localhost; the test dials 127.0.0.1.
        options = [("grpc.ssl_target_name_override", "localhost")]
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        out = {
            "keep_alive": error_of(lambda: stub.KeepAlive(common_pb2.EmptyMessage(), timeout=10)),
            "list_clients": error_of(lambda: stub.ListClients(admin_pb2.ListClientsRequest(), timeout=10)),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
