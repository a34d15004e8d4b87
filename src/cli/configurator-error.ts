// A mistake in the configurator's input or environment: one line saying what is wrong and what
// to do. fleetspeak-config prints it and exits 1.
export class ConfiguratorError extends Error {}
