"""A fleetspeak.grpcservice.Processor server, as an integrator (GRR) runs one.

Usage: processor_server.py <service name>

Behaves like fleetspeak_python's server_connector Servicer: refuses (INVALID_ARGUMENT) messages
addressed to a client or to another service, otherwise accepts them. A message of type "Reject"
is answered INVALID_ARGUMENT with a text, to test permanent failures. Prints "PORT <n>" once
listening on 127.0.0.1, then one JSON line per accepted message.
"""

import json
import signal
import sys
import threading
from concurrent import futures

import grpc

from fleetspeak import common_pb2
from fleetspeak_grpcservice import grpcservice_pb2_grpc

_print_lock = threading.Lock()


class Servicer(grpcservice_pb2_grpc.ProcessorServicer):
    def __init__(self, service_name):
        super().__init__()
        self._service_name = service_name

    def Process(self, request, context):
        if not isinstance(request, common_pb2.Message):
            context.set_code(grpc.StatusCode.UNKNOWN)
            return common_pb2.EmptyMessage()
        if request.destination.client_id:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            return common_pb2.EmptyMessage()
        if request.destination.service_name != self._service_name:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            return common_pb2.EmptyMessage()
        if request.message_type == "Reject":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rejected by the test integrator")
        line = json.dumps(
            {
                "message_id": request.message_id.hex(),
                "source_client_id": request.source.client_id.hex(),
                "source_service": request.source.service_name,
                "destination_service": request.destination.service_name,
                "message_type": request.message_type,
                "data_type_url": request.data.type_url,
                "data_hex": request.data.value.hex(),
                "tags": dict(request.validation_info.tags),
                "has_creation_time": request.HasField("creation_time"),
                "is_blocklisted_source": request.is_blocklisted_source,
            }
        )
        with _print_lock:
            print(line, flush=True)
        return common_pb2.EmptyMessage()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    grpcservice_pb2_grpc.add_ProcessorServicer_to_server(Servicer(sys.argv[1]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
