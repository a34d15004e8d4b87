"""Talks to a fleetspeak.server.Admin server the way GRR's connector does.

Usage: admin_connector.py <admin host:port> <client id hex> <unknown client id hex>

Like fleetspeak_python's OutgoingConnection: every call is retried on grpc.RpcError with sleeps of
1, 2, 4 ... s up to an overall deadline; InsertMessage fills source.service_name and a random
32-byte message_id when they are unset, so that its retries cannot duplicate a message. Prints one
JSON object with what the server answered, for the test to check.
"""

import json
import os
import sys
import time

import grpc
from google.protobuf import timestamp_pb2

from fleetspeak import common_pb2
from fleetspeak_server import admin_pb2
from fleetspeak_server import admin_pb2_grpc

SERVICE_NAME = "GRR"


def retry(fn, timeout=30.0):
    deadline = time.time() + timeout
    sleep = 1.0
    while True:
        try:
            return fn(timeout)
        except grpc.RpcError:
            if time.time() + sleep > deadline:
                raise
            time.sleep(sleep)
            sleep *= 2


def error_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return {"code": e.code().name, "details": e.details()}
    return None


def insert_message(stub, message):
    if not message.HasField("source"):
        message.source.service_name = SERVICE_NAME
    if not message.message_id:
        message.message_id = os.urandom(32)
    retry(lambda t: stub.InsertMessage(message, timeout=t))
    return message


def main():
    address, client_hex, unknown_hex = sys.argv[1:4]
    client_id = bytes.fromhex(client_hex)
    stub = admin_pb2_grpc.AdminStub(grpc.insecure_channel(address))
    out = {}

    stub.KeepAlive(common_pb2.EmptyMessage(), timeout=1.0)
    out["keep_alive"] = True

    clients = retry(lambda t: stub.ListClients(admin_pb2.ListClientsRequest(client_ids=[client_id]), timeout=t))
    out["clients"] = [
        {
            "client_id": c.client_id.hex(),
            "labels": sorted("%s:%s" % (l.service_name, l.label) for l in c.labels),
            "last_contact_address": c.last_contact_address,
            "has_last_contact_time": c.HasField("last_contact_time"),
            "blacklisted": c.blacklisted,
        }
        for c in clients.clients
    ]

    message = common_pb2.Message(message_type="GrrMessage")
    message.destination.client_id = client_id
    message.destination.service_name = SERVICE_NAME
    message.data.type_url = "type.googleapis.com/grr.GrrMessage"
    message.data.value = b"\x0a\x03abc"
    message.annotations.entries.add(key="flow_id", value="F:1234")
    message = insert_message(stub, message)
    # A retry after a lost answer sends the same message again: it must not be stored twice.
    retry(lambda t: stub.InsertMessage(message, timeout=t))
    out["inserted_id"] = message.message_id.hex()

    count = retry(
        lambda t: stub.GetPendingMessageCount(admin_pb2.GetPendingMessageCountRequest(client_ids=[client_id]), timeout=t)
    )
    out["pending_count"] = count.count

    pending = retry(
        lambda t: stub.GetPendingMessages(
            admin_pb2.GetPendingMessagesRequest(client_ids=[client_id], want_data=True), timeout=t
        )
    )
    out["pending"] = [
        {
            "message_id": m.message_id.hex(),
            "source": m.source.service_name,
            "destination_client_id": m.destination.client_id.hex(),
            "message_type": m.message_type,
            "data_type_url": m.data.type_url,
            "data_hex": m.data.value.hex(),
            "annotations": {e.key: e.value for e in m.annotations.entries},
            "has_creation_time": m.HasField("creation_time"),
        }
        for m in pending.messages
    ]
    paged = stub.GetPendingMessages(
        admin_pb2.GetPendingMessagesRequest(client_ids=[client_id], offset=0, limit=1), timeout=10
    )
    out["paged_has_data"] = [m.HasField("data") for m in paged.messages]

    now = time.time()
    start = timestamp_pb2.Timestamp()
    start.FromSeconds(int(now) - 3600)
    end = timestamp_pb2.Timestamp()
    end.FromSeconds(int(now) + 3600)
    records = retry(
        lambda t: stub.FetchClientResourceUsageRecords(
            admin_pb2.FetchClientResourceUsageRecordsRequest(client_id=client_id, start_timestamp=start, end_timestamp=end),
            timeout=t,
        )
    )
    out["records"] = [
        {"scope": r.scope, "pid": r.pid, "max_resident_memory_mib": r.max_resident_memory_mib} for r in records.records
    ]

    retry(lambda t: stub.DeletePendingMessages(admin_pb2.DeletePendingMessagesRequest(client_ids=[client_id]), timeout=t))
    out["pending_count_after_delete"] = stub.GetPendingMessageCount(
        admin_pb2.GetPendingMessageCountRequest(client_ids=[client_id]), timeout=10
    ).count

    unknown = common_pb2.Message(message_type="GrrMessage")
    unknown.destination.client_id = bytes.fromhex(unknown_hex)
    unknown.destination.service_name = SERVICE_NAME
    unknown.source.service_name = SERVICE_NAME
    out["errors"] = {
        "unknown_client": error_of(lambda: stub.InsertMessage(unknown, timeout=10)),
        "offset_without_limit": error_of(
            lambda: stub.GetPendingMessages(
                admin_pb2.GetPendingMessagesRequest(client_ids=[client_id], offset=1), timeout=10
            )
        ),
        "missing_timestamps": error_of(
            lambda: stub.FetchClientResourceUsageRecords(
                admin_pb2.FetchClientResourceUsageRecordsRequest(client_id=client_id), timeout=10
            )
        ),
        "too_large": error_of(
            lambda: stub.InsertMessage(
                common_pb2.Message(
                    source=common_pb2.Address(service_name=SERVICE_NAME),
                    destination=common_pb2.Address(service_name=SERVICE_NAME),
                    data={"type_url": "type.googleapis.com/x", "value": b"\0" * (5 * 1024 * 1024)},
                ),
                timeout=10,
            )
        ),
    }
    stub.KeepAlive(common_pb2.EmptyMessage(), timeout=1.0)
    out["keep_alive_after_errors"] = True

    print(json.dumps(out))


if __name__ == "__main__":
    main()
