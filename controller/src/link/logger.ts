// What the link's parts log through: pino's shape (an object, then a message), so the server hands
// them fastify's logger, and tests and benchmarks a silent one.

export interface Logger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
  error(details: object, message: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
