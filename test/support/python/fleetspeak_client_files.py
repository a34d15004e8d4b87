"""Reads and writes a Fleetspeak client's binary files with Fleetspeak's own generated Python
modules (built from google/fleetspeak's .proto files by ../shared/fleetspeak-go/build.sh), so that
the tests check our client's files against a decoder and an encoder that are not ours.

Usage (PYTHONPATH = the Fleetspeak build's grr/ folder):
  fleetspeak_client_files.py state FILE
      prints the fleetspeak.client.ClientState in FILE as one JSON object: the field numbers
      present (known and unknown), client_key and revoked_cert_serials as hex, the nonce as text
  fleetspeak_client_files.py daemon-service OUT NAME ARGV...
      writes OUT: a binary fleetspeak.SignedClientServiceConfig holding a "Daemon" service
"""

import json
import sys

from fleetspeak.src.client.daemonservice.proto.fleetspeak_daemonservice import config_pb2 as daemon_config_pb2
from fleetspeak.src.client.proto.fleetspeak_client import client_pb2
from fleetspeak.src.common.proto.fleetspeak import system_pb2


def unknown_field_numbers(message):
    return sorted({f.field_number for f in message.UnknownFields()})


def state(path):
    s = client_pb2.ClientState()
    with open(path, "rb") as f:
        s.ParseFromString(f.read())
    print(json.dumps({
        "fields": sorted([d.number for d, _ in s.ListFields()] + unknown_field_numbers(s)),
        "client_key": s.client_key.hex(),
        "sequencing_nonce": str(s.sequencing_nonce),
        "revoked_cert_serials": [b.hex() for b in s.revoked_cert_serials],
    }))


def daemon_service(out, name, argv):
    config = system_pb2.ClientServiceConfig(name=name, factory="Daemon")
    config.config.Pack(daemon_config_pb2.Config(argv=argv))
    signed = system_pb2.SignedClientServiceConfig(
        service_config=config.SerializeToString(), signature=b"not checked by Fleetspeak")
    with open(out, "wb") as f:
        f.write(signed.SerializeToString())


if sys.argv[1] == "state":
    state(sys.argv[2])
elif sys.argv[1] == "daemon-service":
    daemon_service(sys.argv[2], sys.argv[3], sys.argv[4:])
else:
    sys.exit("usage: fleetspeak_client_files.py state FILE | daemon-service OUT NAME ARGV...")
