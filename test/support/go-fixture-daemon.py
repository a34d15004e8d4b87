"""The daemon service of the Go fixture's clients, written against GRR's own Python connector
(fleetspeak.client_connector, on PYTHONPATH from the real Fleetspeak build) as GRR's agent is.

Usage: go-fixture-daemon.py RECEIVED_LOG

Every message it receives is accepted (so the Fleetspeak client acks it) and noted as a line
"<message id hex> <message type>" in RECEIVED_LOG, which the fixture reads to know what reached the
machine. A "Ping" is answered with a "Pong" to the server service of the same name, carrying the
Ping's data: that is how the fixture makes client-to-server messages.
"""

import struct
import sys

from fleetspeak.client_connector import connector
from fleetspeak.src.common.proto.fleetspeak import common_pb2

received = open(sys.argv[1], "a", encoding="ascii")
conn = connector.FleetspeakConnection(version="go-fixture-daemon-1")
while True:
    try:
        msg, _ = conn.Recv()
    except (EOFError, struct.error):  # the client closed the channel: it is stopping us
        sys.exit(0)
    received.write("%s %s\n" % (msg.message_id.hex(), msg.message_type))
    received.flush()
    if msg.message_type == "Ping":
        reply = common_pb2.Message(message_type="Pong")
        reply.destination.service_name = msg.destination.service_name
        reply.data.CopyFrom(msg.data)
        conn.Send(reply)
