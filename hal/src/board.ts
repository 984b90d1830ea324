// A board file says which of a box's LEDs plays which role, and where its button, console and watchdog
// are. LED names are the directory names the kernel gives under /sys/class/leds (from the device
// tree's `label` or the platform driver), so a board file is written by looking at a running box.

import { readFile } from 'node:fs/promises';
import { z } from 'zod';

const ledName = z
  .string()
  .min(1)
  .max(128)
  .refine((s) => !s.includes('/') && s !== '.' && s !== '..', {
    message: 'an LED name is one directory name under /sys/class/leds, without "/"',
  });

export const BoardSchema = z
  .object({
    board: z.string().min(1).max(64),
    description: z.string().max(2000).optional(),
    leds: z
      .object({
        /** The LED every status pattern is shown on. */
        status: ledName,
        /** A second (usually red) LED for faults; without it faults are blink counts on `status`. */
        fault: ledName.optional(),
        /** A third LED that shows the box is alive (heartbeat) and joins in identify. */
        activity: ledName.optional(),
      })
      .strict(),
    button: z
      .object({
        /** The sysfs GPIO number (on kernels ≥ 6.6 the chip's base, often 512, is added to the line). */
        gpio: z.number().int().min(0).max(65535),
        /** True when the button pulls the line low while pressed (the usual wiring). */
        activeLow: z.boolean().default(true),
      })
      .strict()
      .optional(),
    console: z
      .object({
        path: z.string().regex(/^\/dev\/[^\s]+$/, 'a device path under /dev, e.g. /dev/ttyS0'),
        baudRate: z.number().int().min(50).max(4_000_000).default(115200),
      })
      .strict()
      .optional(),
    watchdog: z
      .object({
        path: z.string().regex(/^\/dev\/[^\s]+$/, 'a device path under /dev, e.g. /dev/watchdog'),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((b, ctx) => {
    const names = Object.entries(b.leds).filter(([, n]) => n !== undefined);
    const seen = new Map<string, string>();
    for (const [role, name] of names) {
      const other = seen.get(name as string);
      if (other) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['leds', role],
          message: `LED "${name}" is already the ${other} LED; each role needs its own LED`,
        });
      }
      seen.set(name as string, role);
    }
  });

export type Board = z.infer<typeof BoardSchema>;
export type LedRole = keyof Board['leds'];

export class BoardError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'BoardError';
  }
}

/** Validates a parsed board file; `source` names it in errors. */
export function parseBoard(value: unknown, source = 'board file'): Board {
  const result = BoardSchema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`);
  throw new BoardError(`${source}: ${issues.join('; ')}`);
}

export async function loadBoard(path: string): Promise<Board> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new BoardError(`board file ${path}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new BoardError(`board file ${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  return parseBoard(value, `board file ${path}`);
}
