"""The daemon side of Fleetspeak's local channel, written for the tests from the handshake of
Fleetspeak's Python client connector (fleetspeak_python/fleetspeak/client_connector/connector.py):

* the descriptors come from FLEETSPEAK_COMMS_CHANNEL_INFD / _OUTFD;
* on connect the daemon writes the magic (flushed), then a StartupData message addressed to the
  "system" service, and only then reads the client's magic;
* a message is LEN (uint32 little-endian) + serialized fleetspeak.Message + magic, at most 2 MiB;
* a heartbeat is a message of type "Heartbeat" to "system".
"""

import os
import struct
import threading

from fleetspeak import common_pb2
from fleetspeak_channel import channel_pb2

MAGIC = 0xF1EE1001
LIMIT = 2 * 1024 * 1024
_U32 = struct.Struct("<I")


class ChannelError(Exception):
    pass


class Channel:
    def __init__(self, version="test-daemon", infd=None, outfd=None, read_first=False):
        if infd is None:
            infd = int(os.environ["FLEETSPEAK_COMMS_CHANNEL_INFD"])
        if outfd is None:
            outfd = int(os.environ["FLEETSPEAK_COMMS_CHANNEL_OUTFD"])
        self._in = os.fdopen(infd, "rb")
        self._out = os.fdopen(outfd, "wb")
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        # read_first: wait for the client's magic before writing anything, which only works if
        # the client sends its magic without waiting for ours (as Fleetspeak's client does).
        if read_first:
            self._expect_magic()
        self._write_raw(_U32.pack(MAGIC))
        startup = common_pb2.Message(message_type="StartupData")
        startup.destination.service_name = "system"
        startup.data.Pack(channel_pb2.StartupData(pid=os.getpid(), version=version))
        self._send(startup)
        if not read_first:
            self._expect_magic()

    def _write_raw(self, data):
        with self._wlock:
            self._out.write(data)
            self._out.flush()

    def _read_exactly(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self._in.read(n - len(buf))
            if not chunk:
                raise EOFError("channel closed")
            buf += chunk
        return buf

    def _expect_magic(self):
        got = _U32.unpack(self._read_exactly(4))[0]
        if got != MAGIC:
            raise ChannelError("bad magic %x" % got)

    def _send(self, msg):
        body = msg.SerializeToString()
        if len(body) > LIMIT:
            raise ValueError("message of %d bytes is over the 2 MiB limit" % len(body))
        self._write_raw(_U32.pack(len(body)) + body + _U32.pack(MAGIC))

    def send(self, msg):
        if msg.destination.service_name == "system":
            raise ValueError("daemons may not address the system service")
        self._send(msg)

    def heartbeat(self):
        hb = common_pb2.Message(message_type="Heartbeat")
        hb.destination.service_name = "system"
        self._send(hb)

    def recv(self):
        with self._rlock:
            size = _U32.unpack(self._read_exactly(4))[0]
            if size > LIMIT:
                raise ChannelError("message of %d bytes is over the limit" % size)
            body = self._read_exactly(size)
            self._expect_magic()
        msg = common_pb2.Message()
        msg.ParseFromString(body)
        return msg
