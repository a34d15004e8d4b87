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

/** Counters of an Activity as plain data (a worker process sends these to its supervisor). */
export interface ActivityCounts {
  received: number;
  sent: number;
  notificationsOk: number;
  notificationsFailed: number;
  /** Per service name: [received, sent, errors]. */
  services: Array<[string, number, number, number]>;
}

/** The counters now. */
export function countsOf(a: Activity): ActivityCounts {
  return {
    received: a.received,
    sent: a.sent,
    notificationsOk: a.notificationsOk,
    notificationsFailed: a.notificationsFailed,
    services: [...a.services()].map(([name, s]) => [name, s.received, s.sent, s.errors]),
  };
}

/** What happened between two readings of the same Activity (`before` first). */
export function countsSince(now: ActivityCounts, before: ActivityCounts): ActivityCounts {
  const old = new Map(before.services.map(([name, ...rest]) => [name, rest]));
  return {
    received: now.received - before.received,
    sent: now.sent - before.sent,
    notificationsOk: now.notificationsOk - before.notificationsOk,
    notificationsFailed: now.notificationsFailed - before.notificationsFailed,
    services: now.services
      .map(([name, r, s, e]): [string, number, number, number] => {
        const [r0, s0, e0] = old.get(name) ?? [0, 0, 0];
        return [name, r - r0!, s - s0!, e - e0!];
      })
      .filter(([, r, s, e]) => r !== 0 || s !== 0 || e !== 0),
  };
}

/** Adds counts (another process's, since its last report) into an Activity. */
export function addCounts(a: Activity, d: ActivityCounts): void {
  a.received += d.received;
  a.sent += d.sent;
  a.notificationsOk += d.notificationsOk;
  a.notificationsFailed += d.notificationsFailed;
  for (const [name, r, s, e] of d.services) {
    const svc = a.service(name);
    svc.received += r;
    svc.sent += s;
    svc.errors += e;
  }
}
