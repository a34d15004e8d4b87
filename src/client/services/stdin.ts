// The "Stdin" service: for every StdinServiceInputMessage, runs the configured command (config
// args, then the message's args) with the message's input on stdin, and sends its stdout and
// stderr back to the same-named server service. A failed run becomes a MessageError.
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, timestampNow } from "@bufbuild/protobuf/wkt";
import { type ChildProcess, spawn } from "node:child_process";
import { AddressSchema, type Message, MessageSchema } from "../../gen/fleetspeak/common_pb.js";
import type { ClientServiceConfig } from "../../gen/fleetspeak/system_pb.js";
import { LogLevel, ConfigSchema as StdinConfigSchema } from "../../gen/fleetspeak_stdinservice/config_pb.js";
import { InputMessageSchema, OutputMessageSchema } from "../../gen/fleetspeak_stdinservice/messages_pb.js";
import { type ClientService, type ServiceContext, ServiceConfigError, unpackServiceConfig } from "./service.js";

const LOG_TRUNCATE = 4096;

function truncated(b: Buffer): string {
  const s = b.toString("utf8");
  return s.length > LOG_TRUNCATE ? `${s.slice(0, LOG_TRUNCATE)}\n[truncated]` : s;
}

export function stdinFactory(config: ClientServiceConfig): ClientService {
  const cfg = unpackServiceConfig(config, StdinConfigSchema);
  if (cfg.cmd === "") throw new ServiceConfigError(`service ${config.name}: stdinservice cmd is required`);
  let ctx: ServiceContext;
  let running: ChildProcess | undefined;
  let stopped = false;

  const run = (args: string[], input: Uint8Array) =>
    new Promise<{ stdout: Buffer; stderr: Buffer }>((resolve, reject) => {
      const child = spawn(cfg.cmd, [...cfg.args, ...args], { stdio: ["pipe", "pipe", "pipe"] });
      running = child;
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (b: Buffer) => out.push(b));
      child.stderr.on("data", (b: Buffer) => err.push(b));
      child.stdin.on("error", () => {}); // a command that ignores its input closes the pipe early
      child.once("error", (e) => reject(new Error(`cannot run ${cfg.cmd}: ${e.message}`)));
      child.once("close", (code, signal) => {
        running = undefined;
        const stdout = Buffer.concat(out);
        const stderr = Buffer.concat(err);
        if (cfg.logLevel >= LogLevel.STDERR && stderr.length) ctx.log.info({ stderr: truncated(stderr) }, "command stderr");
        if (cfg.logLevel >= LogLevel.ALL && stdout.length) ctx.log.info({ stdout: truncated(stdout) }, "command stdout");
        if (code === 0) resolve({ stdout, stderr });
        else reject(new Error(`${cfg.cmd} failed: ${signal ? `killed by ${signal}` : `exit status ${code}`}`));
      });
      child.stdin.end(input);
    });

  return {
    start: async (c) => {
      ctx = c;
    },
    processMessage: async (m: Message) => {
      if (m.messageType !== "StdinServiceInputMessage") {
        throw new Error(`unexpected message type "${m.messageType}"; expected "StdinServiceInputMessage"`);
      }
      const input = m.data ? anyUnpack(m.data, InputMessageSchema) : undefined;
      if (!input) throw new Error("message data is not a fleetspeak.stdinservice.InputMessage");
      if (stopped) throw new Error("service is stopping");
      const { stdout, stderr } = await run(input.args, input.input);
      await ctx.send(
        create(MessageSchema, {
          destination: create(AddressSchema, { serviceName: ctx.name }),
          messageType: "StdinServiceOutputMessage",
          data: anyPack(OutputMessageSchema, create(OutputMessageSchema, { stdout, stderr, timestamp: timestampNow() })),
        }),
      );
    },
    stop: async () => {
      stopped = true;
      running?.kill("SIGKILL");
    },
  };
}
