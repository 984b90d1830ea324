// When a policy applies: `--hours 08:00-18:00` (an interval that may cross midnight, e.g.
// 22:00-06:00) and `--days mon-fri` or `--days mon,wed,sat`, in the controller's time zone (an
// IANA name such as Europe/Berlin; branch offices think in local time, not UTC).

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const HOURS = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$/;

export interface Schedule {
  /** Minutes after midnight, [from, to); to < from crosses midnight. */
  hours?: { from: number; to: number };
  /** 0 = Sunday … 6 = Saturday. */
  days?: ReadonlySet<number>;
}

export class ScheduleError extends Error {
  override name = 'ScheduleError';
}

export function parseHours(text: string): { from: number; to: number } {
  const match = HOURS.exec(text);
  if (!match)
    throw new ScheduleError(
      `--hours "${text}": expected HH:MM-HH:MM, e.g. 08:00-18:00 (22:00-06:00 crosses midnight)`,
    );
  const from = Number(match[1]) * 60 + Number(match[2]);
  const to = Number(match[3]) * 60 + Number(match[4]);
  if (to > 24 * 60 || from === to)
    throw new ScheduleError(`--hours "${text}": the interval is empty or past 24:00`);
  return { from, to };
}

export function parseDays(text: string): ReadonlySet<number> {
  const days = new Set<number>();
  for (const part of text.toLowerCase().split(',')) {
    const [first, last] = part.split('-') as [string, string | undefined];
    const from = DAY_NAMES.indexOf(first as (typeof DAY_NAMES)[number]);
    const to = last === undefined ? from : DAY_NAMES.indexOf(last as (typeof DAY_NAMES)[number]);
    if (from < 0 || to < 0)
      throw new ScheduleError(
        `--days "${text}": expected day names (${DAY_NAMES.join(', ')}), ranges like mon-fri, separated by commas`,
      );
    for (let day = from; ; day = (day + 1) % 7) {
      days.add(day);
      if (day === to) break;
    }
  }
  return days;
}

/**
 * One formatter per time zone, made once: building an Intl.DateTimeFormat costs tens of
 * microseconds, as much as the rest of a decision, and a controller or gateway uses one zone.
 */
const formatters = new Map<string, Intl.DateTimeFormat>();
const MAX_FORMATTERS = 64;

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    if (formatters.size >= MAX_FORMATTERS) formatters.clear();
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/**
 * The last answer per zone, for the UTC minute it was asked in: every zone's offset is a whole
 * number of minutes and changes on a minute, so the local day and minute hold for all of that UTC
 * minute, and thousands of decisions a second cost one formatToParts a minute.
 */
const lastAnswer = new Map<string, { utcMinute: number; day: number; minute: number }>();

/** Local weekday and minute of the day of `now` in `timeZone`. */
export function localTime(now: Date, timeZone: string): { day: number; minute: number } {
  const utcMinute = Math.floor(now.getTime() / 60_000);
  const cached = lastAnswer.get(timeZone);
  if (cached?.utcMinute === utcMinute) return { day: cached.day, minute: cached.minute };
  const answer = formatLocalTime(now, timeZone);
  if (Number.isFinite(utcMinute)) lastAnswer.set(timeZone, { utcMinute, ...answer });
  if (lastAnswer.size > MAX_FORMATTERS) lastAnswer.clear();
  return answer;
}

function formatLocalTime(now: Date, timeZone: string): { day: number; minute: number } {
  const parts = formatterFor(timeZone).formatToParts(now);
  const part = (type: string) => parts.find((p) => p.type === type)?.value ?? '';
  const day = DAY_NAMES.indexOf(part('weekday').toLowerCase() as (typeof DAY_NAMES)[number]);
  return { day, minute: Number(part('hour')) * 60 + Number(part('minute')) };
}

export function isWithin(schedule: Schedule, now: Date, timeZone: string): boolean {
  if (!schedule.hours && !schedule.days) return true;
  const { day, minute } = localTime(now, timeZone);
  const { hours, days } = schedule;
  if (!hours) return days!.has(day);
  const crossesMidnight = hours.to < hours.from;
  const inHours = crossesMidnight
    ? minute >= hours.from || minute < hours.to
    : minute >= hours.from && minute < hours.to;
  if (!inHours) return false;
  if (!days) return true;
  // After midnight in an overnight interval, the shift belongs to the day it started on.
  const shiftDay = crossesMidnight && minute < hours.to ? (day + 6) % 7 : day;
  return days.has(shiftDay);
}
