// The "NOOP" service: accepts (and so acknowledges) every message and sends nothing.
import type { ClientService } from "./service.js";

export function noopFactory(): ClientService {
  return {
    start: async () => {},
    processMessage: async () => {},
    stop: async () => {},
  };
}
