// Notifications as a notifier sends them, and the messages they carry, for tests of the listener side.
import { request } from "node:http";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { randomMessageId } from "../../src/common/ids.js";
import { type Message, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { CARRIED_MESSAGE_CONTENT_TYPE, STREAM_PRESENCE_HEADER } from "../../src/server/notify/notifier.js";

export interface NotificationReply {
  status: number;
  /** The listener's x-fleetspeak-stream answer, if any. */
  presence: string | string[] | undefined;
}

/** POST http://address/path, with `body` as a carried message (its content type) when given. */
export function postNotification(address: string, path: string, body?: Uint8Array): Promise<NotificationReply> {
  const headers: Record<string, string> = { "content-length": String(body?.length ?? 0) };
  if (body) headers["content-type"] = CARRIED_MESSAGE_CONTENT_TYPE;
  return new Promise((resolve, reject) => {
    const req = request(`http://${address}${path}`, { method: "POST", headers }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, presence: res.headers[STREAM_PRESENCE_HEADER] }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** A client-bound message as an admin server stores it (ID and creation time set). */
export function clientBoundMessage(to: Uint8Array, payload: Uint8Array, service = "TestService"): Message {
  return create(MessageSchema, {
    messageId: randomMessageId(),
    source: { serviceName: service },
    destination: { clientId: to, serviceName: service },
    messageType: "Probe",
    creationTime: timestampNow(),
    data: { typeUrl: "type.googleapis.com/test.Probe", value: payload },
  });
}
