// The client's persistent state: its identity key, the last sequencing nonce from the server and
// the revoked server-certificate serials, kept as a binary `fleetspeak.client.ClientState` in
// `state_file`, written atomically (`<file>.new`, mode 0600, rename).
//
// Unlike Fleetspeak, which logs a broken state file and quietly makes a new key (and so a new
// ClientID, orphaning the machine's history on the server), a state file that exists but cannot be
// read is an error here; the operator chooses a new identity with --reset_state.
//
// Fields this version does not know (another Fleetspeak version's) are written back unchanged, as
// Fleetspeak's Go client does, so that going back to it loses nothing.
import { create, fromBinary, toBinary, type UnknownField } from "@bufbuild/protobuf";
import type { KeyObject } from "node:crypto";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { clientIdOfKey, generateP256Key, keyFromSec1Der, keyToSec1Der } from "../common/certs.js";
import { clientIdToHex } from "../common/ids.js";
import type { Logger } from "../common/log.js";
import { type ClientState, ClientStateSchema } from "../gen/fleetspeak_client/client_pb.js";

export class StateError extends Error {}

/** The state file exists but holds no usable identity. */
class CorruptStateError extends StateError {
  constructor(
    path: string,
    readonly reason: string,
  ) {
    super(
      `the client state file ${path} is corrupt (${reason}). It holds this machine's identity, so the client will not replace it silently: restore it from a backup, or start once with --reset_state to create a new identity (a new ClientID)`,
    );
  }
}

/** The state file's contents with its key parsed; undefined if there is no file. */
function readStateFile(path: string): { state: ClientState; key: KeyObject } | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new StateError(`cannot read the client state file ${path}: ${(e as Error).message}`);
  }
  try {
    const state = fromBinary(ClientStateSchema, bytes);
    if (state.clientKey.length === 0) throw new Error("it holds no client_key");
    return { state, key: keyFromSec1Der(state.clientKey, "client_key") };
  } catch (e) {
    throw new CorruptStateError(path, e instanceof Error ? e.message : String(e));
  }
}

/** The ClientID kept in a state file, read without changing anything (for operators' checks). */
export function clientIdOfStateFile(path: string): string {
  const stored = readStateFile(path);
  if (!stored) {
    throw new StateError(
      `the client state file ${path} does not exist: no client has run with this config yet (the first start creates it)`,
    );
  }
  return clientIdToHex(clientIdOfKey(stored.key));
}

/** Canonical text of a certificate serial (big-endian magnitude bytes or Node's hex text). */
export function serialKey(serial: Uint8Array | string): string {
  const hex = typeof serial === "string" ? serial : Buffer.from(serial).toString("hex");
  return hex === "" ? "0" : BigInt(`0x${hex}`).toString(16);
}

export interface StateOptions {
  /** "" keeps nothing on disk. */
  stateFile: string;
  /** Start with a new identity when the state file is unreadable (the broken file is kept aside). */
  resetState: boolean;
  log: Logger;
}

export class ClientStateStore {
  private keyObject: KeyObject;
  private id: Buffer;
  private nonce = 0n;
  /** Revoked serials by numeric value (serialKey), each with the bytes it came as, written back as they were. */
  private readonly revoked = new Map<string, Uint8Array>();
  private unknownFields: UnknownField[] | undefined;
  private dirty = true;
  private timer: NodeJS.Timeout | undefined;
  private readonly rekeyListeners: Array<() => void> = [];

  constructor(private readonly opts: StateOptions) {
    const loaded = this.load();
    this.keyObject = loaded ?? generateP256Key();
    this.id = clientIdOfKey(this.keyObject);
    if (!loaded) opts.log.info({ clientId: this.clientIdHex }, "created a new client identity");
  }

  get key(): KeyObject {
    return this.keyObject;
  }

  get clientId(): Buffer {
    return this.id;
  }

  get clientIdHex(): string {
    return clientIdToHex(this.id);
  }

  get sequencingNonce(): bigint {
    return this.nonce;
  }

  set sequencingNonce(n: bigint) {
    if (n !== this.nonce) {
      this.nonce = n;
      this.dirty = true;
    }
  }

  isRevoked(serial: Uint8Array | string): boolean {
    return this.revoked.has(serialKey(serial));
  }

  /** Adds serials; true if any was new. */
  addRevokedSerials(serials: Iterable<Uint8Array>): boolean {
    let added = false;
    for (const s of serials) {
      const k = serialKey(s);
      if (!this.revoked.has(k)) {
        this.revoked.set(k, s);
        added = true;
      }
    }
    if (added) this.dirty = true;
    return added;
  }

  markDirty(): void {
    this.dirty = true;
  }

  onRekey(listener: () => void): void {
    this.rekeyListeners.push(listener);
  }

  /** A new key and so a new ClientID (the server asks for this when it blocklists the old one). */
  rekey(): void {
    const old = this.clientIdHex;
    this.keyObject = generateP256Key();
    this.id = clientIdOfKey(this.keyObject);
    this.dirty = true;
    this.opts.log.warn({ oldClientId: old, clientId: this.clientIdHex }, "rekeyed: new client identity");
    for (const l of this.rekeyListeners) l();
  }

  private load(): KeyObject | undefined {
    const path = this.opts.stateFile;
    if (path === "") return undefined;
    try {
      const stored = readStateFile(path);
      if (!stored) return undefined;
      this.nonce = stored.state.sequencingNonce;
      for (const s of stored.state.revokedCertSerials) this.revoked.set(serialKey(s), s);
      this.unknownFields = stored.state.$unknown;
      return stored.key;
    } catch (e) {
      if (!(e instanceof CorruptStateError) || !this.opts.resetState) throw e;
      const aside = `${path}.corrupt-${Date.now()}`;
      try {
        renameSync(path, aside);
      } catch {
        // The write below replaces it anyway; keeping a copy is a courtesy.
      }
      this.opts.log.warn({ path, keptAs: aside, reason: e.reason }, "--reset_state: replacing the corrupt state file");
      return undefined;
    }
  }

  /** Writes the state if it changed; throws StateError naming the file on failure. */
  write(): void {
    if (!this.dirty) return;
    const path = this.opts.stateFile;
    if (path === "") {
      this.dirty = false;
      return;
    }
    const state = create(ClientStateSchema, {
      clientKey: keyToSec1Der(this.keyObject),
      sequencingNonce: this.nonce,
      revokedCertSerials: [...this.revoked.values()],
    });
    state.$unknown = this.unknownFields;
    const bytes = toBinary(ClientStateSchema, state);
    const tmp = `${path}.new`;
    try {
      rmSync(tmp, { force: true });
      writeFileSync(tmp, bytes, { mode: 0o600 });
      renameSync(tmp, path);
    } catch (e) {
      throw new StateError(`cannot write the client state file ${path}: ${(e as Error).message}`);
    }
    this.dirty = false;
  }

  /** Writes every `intervalMs` when something changed (Fleetspeak: every minute). */
  startSync(intervalMs = 60_000): void {
    this.timer = setInterval(() => {
      try {
        this.write();
      } catch (e) {
        this.opts.log.error({ err: (e as Error).message }, "state sync failed");
      }
    }, intervalMs);
    this.timer.unref();
  }

  /** Stops the ticker and writes a last time (Fleetspeak skips this and loses up to a minute). */
  stop(): void {
    clearInterval(this.timer);
    try {
      this.write();
    } catch (e) {
      this.opts.log.error({ err: (e as Error).message }, "final state write failed");
    }
  }
}
