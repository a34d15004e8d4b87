// Factory NOOP: accepts every message and does nothing with it (for tests and for services whose
// messages nobody needs).
import type { Service, ServiceFactory } from "./service.js";

class NoopService implements Service {
  async processMessage(): Promise<void> {}
  async stop(): Promise<void> {}
}

export const noopServiceFactory: ServiceFactory = () => new NoopService();
