// The "Socket" service: the channel over a Unix socket that a separately started program (the
// peer) connects to. The client listens; the socket's directory must be mode 0700 and the socket
// 0600, both owned by the client's user and group. One peer at a time: later connections wait
// until the current one ends. Messages from the peer go to the server; once the server has
// accepted one, its source_message_id is sent back to the peer in a LocalAck (every 100 ms), so a
// peer that reconnects knows what to send again.
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { chmodSync, lstatSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname, isAbsolute } from "node:path";
import type { Logger } from "../../common/log.js";
import { AddressSchema, type Message, MessageSchema } from "../../gen/fleetspeak/common_pb.js";
import { MessageAckDataSchema } from "../../gen/fleetspeak/system_pb.js";
import { StartupDataSchema } from "../../gen/fleetspeak_channel/channel_pb.js";
import { ConfigSchema as SocketConfigSchema } from "../../gen/fleetspeak_socketservice/config_pb.js";
import type { ClientServiceConfig } from "../../gen/fleetspeak/system_pb.js";
import { Channel } from "./channel.js";
import { ResourceMonitor } from "./resource-monitor.js";
import { type ClientService, type ServiceContext, ServiceConfigError, unpackServiceConfig } from "./service.js";

/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
const LOCAL_ACK_INTERVAL_MS = 100;

interface SocketSettings {
  path: string;
  monitoring: boolean;
  sampleSize: number;
  samplePeriodMs: number;
}

export function socketFactory(config: ClientServiceConfig): ClientService {
  const cfg = unpackServiceConfig(config, SocketConfigSchema);
  if (cfg.apiProxyPath === "") {
    throw new ServiceConfigError(`service ${config.name}: socketservice api_proxy_path is required`);
  }
  if (!isAbsolute(cfg.apiProxyPath)) {
    throw new ServiceConfigError(`service ${config.name}: api_proxy_path ${cfg.apiProxyPath} must be an absolute path`);
  }
  if (Buffer.byteLength(`${cfg.apiProxyPath}.tmp`) > MAX_SOCKET_PATH) {
    throw new ServiceConfigError(
      `service ${config.name}: api_proxy_path ${cfg.apiProxyPath} is too long for a Unix socket (with ".tmp" at most ${MAX_SOCKET_PATH} bytes)`,
    );
  }
  if (cfg.resourceMonitoringSampleSize === 1) {
    throw new ServiceConfigError(`service ${config.name}: resource_monitoring_sample_size must be 0 or at least 2`);
  }
  return new SocketService({
    path: cfg.apiProxyPath,
    monitoring: !cfg.disableResourceMonitoring,
    sampleSize: cfg.resourceMonitoringSampleSize || 20,
    samplePeriodMs: (cfg.resourceMonitoringSamplePeriodSeconds || 30) * 1000,
  });
}

/** Checks Fleetspeak's permission rules for the socket and its directory; throws saying what is wrong. */
export function checkSocketPermissions(path: string): void {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const dir = dirname(path);
  const d = lstatSync(dir);
  if (!d.isDirectory()) throw new Error(`${dir} is not a directory (symbolic links are not accepted)`);
  if ((d.mode & 0o7777) !== 0o700) {
    throw new Error(`${dir} has mode ${(d.mode & 0o7777).toString(8)}; it must be 0700`);
  }
  if (d.uid !== uid || d.gid !== gid) {
    throw new Error(`${dir} is owned by ${d.uid}:${d.gid}; it must be owned by the client's ${uid}:${gid}`);
  }
  const s = lstatSync(path);
  if (!s.isSocket()) throw new Error(`${path} is not a socket`);
  if ((s.mode & 0o7777) !== 0o600) {
    throw new Error(`${path} has mode ${(s.mode & 0o7777).toString(8)}; it must be 0600`);
  }
  if (s.uid !== uid || s.gid !== gid) {
    throw new Error(`${path} is owned by ${s.uid}:${s.gid}; it must be owned by the client's ${uid}:${gid}`);
  }
}

class SocketService implements ClientService {
  private ctx!: ServiceContext;
  private log!: Logger;
  private server: Server | undefined;
  private current: PeerConnection | undefined;
  /** Connections waiting for the current peer to go, with their close listeners. */
  private readonly waitingSockets: Array<{ socket: Socket; onClose: () => void }> = [];
  private connectionWaiters: Array<() => void> = [];
  private stopped = false;

  constructor(private readonly settings: SocketSettings) {}

  async start(ctx: ServiceContext): Promise<void> {
    this.ctx = ctx;
    this.log = ctx.log;
    const { path } = this.settings;
    const tmp = `${path}.tmp`;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    rmSync(path, { force: true });
    rmSync(tmp, { force: true });
    const server = createServer((socket) => this.onConnection(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(tmp, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (e) => this.log.error({ err: e.message }, "socket listener error"));
    try {
      chmodSync(tmp, 0o600);
      renameSync(tmp, path);
      checkSocketPermissions(path);
    } catch (e) {
      server.close();
      throw new Error(`socket ${path}: ${(e as Error).message}`);
    }
    this.log.info({ path }, "socket service listening");
  }

  private onConnection(socket: Socket): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    if (this.current) {
      // Fleetspeak accepts one peer at a time; the others wait as if still in the backlog.
      socket.pause();
      const onClose = () => {
        const i = this.waitingSockets.findIndex((w) => w.socket === socket);
        if (i >= 0) this.waitingSockets.splice(i, 1);
      };
      socket.once("close", onClose);
      this.waitingSockets.push({ socket, onClose });
      return;
    }
    this.current = new PeerConnection(socket, this.settings, this.ctx, this.log, () => {
      this.current = undefined;
      const next = this.waitingSockets.shift();
      if (next && !this.stopped) {
        next.socket.off("close", next.onClose);
        this.onConnection(next.socket);
        next.socket.resume();
      }
    });
    for (const w of this.connectionWaiters.splice(0)) w();
  }

  /** Waits for a peer if none is connected; the message is kept until one is. */
  async processMessage(m: Message): Promise<void> {
    for (;;) {
      if (this.stopped) throw new Error("service is stopping");
      if (this.current?.deliver(m)) return;
      await new Promise<void>((resolve) => this.connectionWaiters.push(resolve));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.connectionWaiters.splice(0)) w();
    for (const w of this.waitingSockets.splice(0)) w.socket.destroy();
    this.current?.close();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.settings.path, { force: true });
  }
}

class PeerConnection {
  private readonly channel: Channel;
  private readonly acks: Uint8Array[] = [];
  private readonly ackTimer: NodeJS.Timeout;
  private monitor: ResourceMonitor | undefined;
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly settings: SocketSettings,
    private readonly ctx: ServiceContext,
    private readonly log: Logger,
    private readonly onEnd: () => void,
  ) {
    this.channel = new Channel(
      socket,
      socket,
      {
        onMessage: (m) => this.onMessage(m),
        onClose: (error) => {
          if (error) log.warn({ err: error.message }, "socket peer broke the channel protocol; dropping it");
          this.close();
        },
      },
      `socket peer of ${ctx.name}`,
      log,
    );
    this.ackTimer = setInterval(() => this.flushAcks(), LOCAL_ACK_INTERVAL_MS);
    log.info("socket peer connected");
  }

  deliver(m: Message): boolean {
    if (this.closed) return false;
    // A message too large for the channel is dropped with a log line, as Fleetspeak does.
    this.channel.send(m);
    return true;
  }

  private async onMessage(m: Message): Promise<void> {
    if (m.destination?.serviceName === "system" && m.messageType === "StartupData") {
      const sd = m.data ? anyUnpack(m.data, StartupDataSchema) : undefined;
      if (sd && this.settings.monitoring && !this.monitor) {
        try {
          this.monitor = new ResourceMonitor({
            scope: this.ctx.name,
            pid: Number(sd.pid),
            version: sd.version,
            samplePeriodMs: this.settings.samplePeriodMs,
            sampleSize: this.settings.sampleSize,
            memoryLimit: 0,
            ctx: this.ctx,
            log: this.log,
          });
          this.monitor.start();
        } catch (e) {
          this.log.error({ err: (e as Error).message }, "resource monitoring not started");
        }
      }
      return;
    }
    await this.ctx.send(m, {
      onAck: () => {
        if (m.sourceMessageId.length > 0) this.acks.push(m.sourceMessageId);
      },
    });
  }

  private flushAcks(): void {
    if (this.acks.length === 0 || this.closed) return;
    const ids = this.acks.splice(0);
    this.channel.send(
      create(MessageSchema, {
        source: create(AddressSchema, { serviceName: "client" }),
        messageType: "LocalAck",
        data: anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds: ids })),
      }),
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ackTimer);
    this.monitor?.stop();
    this.channel.destroy();
    this.socket.destroy();
    this.log.info("socket peer disconnected");
    this.onEnd();
  }
}
