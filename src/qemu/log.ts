/**
 * The QEMU driver's view of logging: two levels and structured fields. The daemon adapts its own logger to
 * this shape; tests pass `silentLog` or collect lines.
 */
export interface DriverLog {
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

export const silentLog: DriverLog = {
  info() {},
  warn() {},
};
