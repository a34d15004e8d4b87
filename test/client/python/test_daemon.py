"""A daemon for the client tests; its behaviour is chosen by argv[1]:

  echo       answer every message with an "EchoReply" to the sender's service (same data),
             plus a "Hello" at start carrying FLEETSPEAK_CLIENT_ID; heartbeat every second
  crash      say "Hello", then exit with status 3 (for restart tests)
  garbage    write the magic, then bytes that are not a channel frame
  oversize   handshake, then announce a 3 MiB message
  badmagic   handshake, then a frame whose trailer is not the magic
  silent     handshake, then never send anything (heartbeat tests)
  memhog     handshake, heartbeat, and grow to argv[2] MiB of memory
  flood      send argv[2] messages of argv[3] bytes as fast as the channel takes them, then echo
  stdout     print lines on stdout and stderr, then echo
  quietecho  echo without heartbeats (inactivity tests)
  readfirst  echo, but read the client's magic before writing its own
  floodwhen  wait until the file argv[2] exists, then flood argv[3] messages of argv[4] bytes
             (benchmarks: the client is measured idle first)
"""

import os
import struct
import sys
import threading
import time

from google.protobuf import wrappers_pb2

from fleetspeak import common_pb2
import fs_channel

mode = sys.argv[1] if len(sys.argv) > 1 else "echo"
service = os.environ.get("TEST_DAEMON_SERVER_SERVICE", "TestService")


def message(kind, data=b""):
    m = common_pb2.Message(message_type=kind)
    m.destination.service_name = service
    if data:
        m.data.Pack(wrappers_pb2.BytesValue(value=data))
    return m


def raw_out():
    return os.fdopen(int(os.environ["FLEETSPEAK_COMMS_CHANNEL_OUTFD"]), "wb")


if mode == "garbage":
    out = raw_out()
    out.write(struct.pack("<I", fs_channel.MAGIC) + b"this is not a channel frame at all")
    out.flush()
    time.sleep(30)
    sys.exit(0)

ch = fs_channel.Channel(version="test-daemon-1.0", read_first=(mode == "readfirst"))

if mode == "oversize":
    ch._write_raw(struct.pack("<I", 3 * 1024 * 1024))
    time.sleep(30)
    sys.exit(0)
if mode == "badmagic":
    body = message("Bad").SerializeToString()
    ch._write_raw(struct.pack("<I", len(body)) + body + b"\xde\xad\xbe\xef")
    time.sleep(30)
    sys.exit(0)
if mode == "silent":
    time.sleep(600)
    sys.exit(0)

ch.send(message("Hello", ("%s %d" % (os.environ.get("FLEETSPEAK_CLIENT_ID", ""), os.getpid())).encode()))

if mode == "crash":
    time.sleep(0.2)
    sys.exit(3)


def beat():
    while True:
        time.sleep(1)
        ch.heartbeat()


if mode != "quietecho":
    threading.Thread(target=beat, daemon=True).start()

if mode == "memhog":
    hog = []
    for _ in range(int(sys.argv[2])):
        hog.append(bytearray(1024 * 1024))
        time.sleep(0.01)
    time.sleep(600)
if mode == "floodwhen":
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.05)
    mode, sys.argv[2:] = "flood", sys.argv[3:]
if mode == "flood":
    count, size = int(sys.argv[2]), int(sys.argv[3])
    payload = b"x" * size
    for i in range(count):
        ch.send(message("Flood", payload))
if mode == "stdout":
    print("hello on stdout", flush=True)
    print("hello on stderr", file=sys.stderr, flush=True)

while True:
    try:
        m = ch.recv()
    except EOFError:
        sys.exit(0)
    reply = common_pb2.Message(message_type="EchoReply")
    reply.destination.service_name = m.source.service_name or service
    reply.data.CopyFrom(m.data)
    ch.send(reply)
