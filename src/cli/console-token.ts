// fleetspeak-admin console-token: a login token for the operator console, signed with the first
// admin_config.console.login_secret of a components config. It needs no running server, only
// that config file: whoever may read the admin server's config may look at the console.
import { ConfigError, DEFAULT_COMPONENTS_CONFIG, loadComponentsConfig } from "../server/config.js";
import { createLoginToken } from "../server/console/login-token.js";
import { consoleFromConfig } from "../server/security/security-config.js";
import { parseDuration, UsageError } from "./admin-commands.js";

export interface ConsoleTokenFlags {
  components_config?: string;
  user?: string;
  valid_for?: string;
}

export const CONSOLE_TOKEN_USAGE =
  "console-token [--components_config FILE] [--user NAME] [--valid_for 12h]\n" +
  "      print a login token for the operator console of the admin server configured in FILE\n" +
  `      (default ${DEFAULT_COMPONENTS_CONFIG}); paste it into the console's sign-in page`;

/** The token (stdout) and where to use it (stderr). */
export function consoleToken(flags: ConsoleTokenFlags): { token: string; hint: string } {
  const path = flags.components_config ?? DEFAULT_COMPONENTS_CONFIG;
  const validForMs = parseDuration(flags.valid_for ?? "12h", "valid_for");
  let settings: ReturnType<typeof consoleFromConfig>;
  try {
    const cfg = loadComponentsConfig(path);
    settings = cfg.adminConfig ? consoleFromConfig(cfg.adminConfig) : undefined;
  } catch (e) {
    throw new UsageError(e instanceof ConfigError ? e.message : `${path}: ${(e as Error).message}`);
  }
  if (!settings) {
    throw new UsageError(`${path}: admin_config.console is not set, so this server runs no console (see docs/console.md)`);
  }
  const secret = settings.loginSecrets[0];
  if (secret === undefined) {
    throw new UsageError(
      `${path}: admin_config.console has no login_secret, so the console takes client certificates only; add a login_secret to sign in with tokens`,
    );
  }
  const user = flags.user ?? process.env.USER ?? "operator";
  let token: string;
  try {
    token = createLoginToken(secret, user, validForMs);
  } catch (e) {
    throw new UsageError(`${(e as Error).message} (--user, --valid_for)`);
  }
  const scheme = settings.tls ? "https" : "http";
  const expires = new Date(Date.now() + validForMs).toISOString();
  return {
    token,
    hint: `sign in at ${scheme}://${settings.listenAddress}/login with this token (user ${user}, valid until ${expires})`,
  };
}
