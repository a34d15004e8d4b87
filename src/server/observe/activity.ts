// What this server process has done since it started, as plain counters: the heartbeat reads
// them every few seconds for the operator console (rates per service, notifications). Reading the
// Prometheus registry instead would walk every label set (client_labels makes many) each time.

/** Messages of one service name. */
export interface ServiceActivity {
  /** From clients to this server service. */
  received: number;
  /** From this server service to clients. */
  sent: number;
  /** Client messages this server service failed to process. */
  errors: number;
}

/** Service names counted one by one; more (a client may name any) are counted under OTHER_SERVICES. */
const MAX_SERVICES = 100;
export const OTHER_SERVICES = "(other)";

export class Activity {
  received = 0;
  sent = 0;
  notificationsOk = 0;
  notificationsFailed = 0;
  readonly #services = new Map<string, ServiceActivity>();

  /** The counters of one service name (created on first use). */
  service(name: string): ServiceActivity {
    let s = this.#services.get(name);
    if (!s) {
      const key = this.#services.size < MAX_SERVICES ? name : OTHER_SERVICES;
      s = this.#services.get(key);
      if (!s) {
        s = { received: 0, sent: 0, errors: 0 };
        this.#services.set(key, s);
      }
    }
    return s;
  }

  services(): ReadonlyMap<string, Readonly<ServiceActivity>> {
    return this.#services;
  }
}
