// The HAProxy config of a distributed deployment: TCP mode in front of both tiers, PROXY v2 to the
// frontends, HTTP health checks against each server's health_check_config listener.
//
// A server answering 503 (it cannot reach the database) gets no new connections. But when every
// server of a tier answers 503, the database itself is away, and refusing every client would only
// add a second outage: then the same servers, unchecked (`backup`, all of them by
// `option allbackups`), take the connections, and hold new contacts until the database is back.
//
// No global maxconn on purpose: HAProxy then sizes it from the open-file limit it runs under
// (about half of it, each connection holding a descriptor on either side), so the config starts
// wherever it is run. A fixed maxconn above that limit refuses to start ("Cannot raise FD limit").

export interface HaproxyServer {
  /** Its name in HAProxy's logs and stats, e.g. "frontend-1". */
  name: string;
  /** host:port HAProxy dials. */
  address: string;
  /** The port of its HTTP health check (health_check_config); absent: a TCP connect check. */
  healthPort?: number;
}

export interface HaproxyTier {
  /** Comment line above the tier. */
  title: string;
  /** HAProxy proxy names: frontend <listenName>, backend <backendName>. */
  listenName: string;
  backendName: string;
  /** Where HAProxy listens, "host:port" or ":port". */
  bind: string;
  balance: "leastconn" | "roundrobin";
  /** send-proxy-v2 on the way to the servers. */
  sendProxy: boolean;
  servers: HaproxyServer[];
}

const HEADER = `# TCP mode in front of both tiers: TLS stays end to end with the frontends, so that clients keep
# authenticating with their own certificates.
#
# maxconn is not set: HAProxy sizes it from the open-file limit it runs under, about half of
# it. To hold N clients, give HAProxy 2N + 1000 open files (systemd: LimitNOFILE= in a drop-in
# for haproxy.service); docs/scaling.md shows how.`;

function serverLine(s: HaproxyServer, sendProxy: boolean): string {
  const parts = [`server ${s.name} ${s.address}`];
  if (sendProxy) parts.push("send-proxy-v2");
  // With a health port, the check is plain HTTP without a PROXY header; without one, HAProxy
  // sends the header on its connect checks as on traffic (a LOCAL header under v2).
  parts.push(s.healthPort !== undefined ? `check port ${s.healthPort} inter 2s` : "check inter 2s");
  return `  ${parts.join(" ")}`;
}

function tierLines(t: HaproxyTier): string[] {
  const lines = [
    `# ${t.title}`,
    `frontend ${t.listenName}`,
    `  bind ${t.bind}`,
    `  default_backend ${t.backendName}`,
    "",
    `backend ${t.backendName}`,
    `  balance ${t.balance}`,
  ];
  const checked = t.servers.some((s) => s.healthPort !== undefined);
  if (checked) {
    lines.push("  # 200 while the server reaches its database, 503 otherwise (health_check_config).");
    lines.push("  option httpchk GET /");
    lines.push("  # When all of them answer 503 (the database is down), use them all, unchecked.");
    lines.push("  option allbackups");
  }
  for (const s of t.servers) lines.push(serverLine(s, t.sendProxy));
  if (checked) {
    for (const s of t.servers) {
      lines.push(`  server ${s.name}-unchecked ${s.address}${t.sendProxy ? " send-proxy-v2" : ""} backup`);
    }
  }
  return lines;
}

/** The whole config; `deployment` names what it balances, in its first line. */
export function renderHaproxyConfig(deployment: string, tiers: HaproxyTier[]): string {
  const lines = [
    `# HAProxy for ${deployment}, written by fleetspeak-config.`,
    HEADER,
    "global",
    "  log stdout format raw local0 info",
    "",
    "defaults",
    "  mode tcp",
    "  log global",
    "  # A server going down or up, and why, is logged.",
    "  option log-health-checks",
    "  timeout connect 5s",
    "  # A connection refused by a server that is stopping (or just died, before the health checks",
    "  # notice) is tried again on another server instead of failing the client.",
    "  retries 3",
    "  option redispatch 1",
    "  # Streams last 10 minutes; never cut them short.",
    "  timeout client 20m",
    "  timeout server 20m",
    "  # Start even when a server's name does not resolve yet.",
    "  default-server init-addr last,libc,none",
  ];
  for (const t of tiers) lines.push("", ...tierLines(t));
  return `${lines.join("\n")}\n`;
}
