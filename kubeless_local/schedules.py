"""Cron schedules as Kubeless accepts them: robfig/cron's `ParseStandard` (the revision Kubeless v1.0.8
pins), which the Kubeless CLI (`function deploy --schedule`, `trigger cronjob create|update`) and a
CronJob's validation use. Five fields (minute hour day-of-month month day-of-week: numbers, names, `*`,
`?`, ranges, steps, lists; day of week 0-6, so `7` is refused), a descriptor (@yearly, @annually,
@monthly, @weekly, @daily, @midnight, @hourly) or `@every <Go duration>`. `parse` is the one reading
of a schedule: the manifest check (spec), the commands and the cron runner all use it; its ValueError
carries the library's own reason."""

import datetime
import functools
import re
from dataclasses import dataclass
from typing import Optional

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FIELDS: tuple = (  # name, low, high, names: a 5-field schedule as robfig/cron's ParseStandard reads it
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(MONTHS)}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(WEEKDAYS)}),
)
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
GO_DURATION_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
YEARS_AHEAD = 5  # robfig/cron gives up looking for a next time this far ahead: the schedule never fires


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the values each field allows, or a constant interval (`@every`)."""

    fields: tuple = ()  # five frozensets: minutes, hours, days of month, months, days of week
    any_day: tuple = (False, False)  # (day of month, day of week) written as * or ?
    every: Optional[datetime.timedelta] = None

    def next(self, after):
        """The first time after `after` it fires (UTC); None when it never does."""
        if self.every is not None:
            return after.replace(microsecond=0) + self.every
        minutes, hours, _, months, _ = self.fields
        t = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        limit = t.year + YEARS_AHEAD
        while t.year <= limit:
            if t.month not in months:
                t = (t.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            elif t.hour not in hours:
                t = t.replace(minute=0) + datetime.timedelta(hours=1)
            elif t.minute not in minutes:
                t += datetime.timedelta(minutes=1)
            else:
                return t
        return None

    def _day_matches(self, t):
        """Both day fields must match when either is a star, else either one (cron's rule)."""
        dom = t.day in self.fields[2]
        dow = (t.weekday() + 1) % 7 in self.fields[4]  # Sunday is 0
        return (dom and dow) if any(self.any_day) else (dom or dow)


def _go_int(text):
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError("failed to parse int from %s: strconv.Atoi: parsing %r: invalid syntax" % (text, text))
    if int(text) < 0:
        raise ValueError("negative number (%d) not allowed: %s" % (int(text), text))
    return int(text)


def _field(expr, low, high, names):
    """(values, is a star) of one field of comma-separated ranges, as robfig/cron's getRange reads them."""
    values: set[int] = set()
    star = False
    for item in (part for part in expr.split(",") if part):  # strings.FieldsFunc: empty items dropped
        range_and_step = item.split("/")
        low_and_high = range_and_step[0].split("-")
        extra = False
        if low_and_high[0] in ("*", "?"):
            start, end, extra = low, high, True
        else:
            start = names.get(low_and_high[0].lower())
            start = _go_int(low_and_high[0]) if start is None else start
            if len(low_and_high) > 2:
                raise ValueError("too many hyphens: %s" % item)
            end = start if len(low_and_high) == 1 else names.get(low_and_high[1].lower())
            end = _go_int(low_and_high[1]) if end is None else end
        step = 1
        if len(range_and_step) > 2:
            raise ValueError("too many slashes: %s" % item)
        if len(range_and_step) == 2:
            step = _go_int(range_and_step[1])
            end = high if len(low_and_high) == 1 else end  # "N/step" is "N-max/step"
            extra = extra and step <= 1
        if start < low:
            raise ValueError("beginning of range (%d) below minimum (%d): %s" % (start, low, item))
        if end > high:
            raise ValueError("end of range (%d) above maximum (%d): %s" % (end, high, item))
        if start > end:
            raise ValueError("beginning of range (%d) beyond end of range (%d): %s" % (start, end, item))
        if step == 0:
            raise ValueError("step of range should be a positive number: %s" % item)
        values.update(range(start, end + 1, step))
        star = star or extra
    return frozenset(values), star


def _go_duration(text):
    """Go's time.ParseDuration, for `@every`: e.g. 5m, 1h30m, 1.5s, 300ms."""
    sign, rest = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if rest == "0":
        return datetime.timedelta(0)
    parts = GO_DURATION_RE.findall(rest)
    if not parts or "".join(n + u for n, u in parts) != rest or any(n in ("", ".") for n, _ in parts):
        raise ValueError("time: invalid duration %r" % text)
    return sign * datetime.timedelta(seconds=sum(float(n) * GO_UNITS[u] for n, u in parts))


@functools.lru_cache(maxsize=256)
def parse(spec) -> Schedule:
    """A schedule as Kubeless accepts it (robfig/cron's ParseStandard, which the Kubeless CLI and the
    CronJob's API validation use): 5 fields, or @yearly/@annually/@monthly/@weekly/@daily/@midnight/
    @hourly, or `@every <Go duration>`: ValueError
    with the library's reason otherwise."""
    if not spec:
        raise ValueError("empty spec string")
    if spec.startswith("@every "):
        try:
            every = _go_duration(spec[len("@every ") :])
        except ValueError as exc:
            raise ValueError("failed to parse duration %s: %s" % (spec, exc)) from None
        return Schedule(
            every=max(datetime.timedelta(seconds=int(every.total_seconds())), datetime.timedelta(seconds=1))
        )
    if spec.startswith("@"):
        if spec not in DESCRIPTORS:
            raise ValueError("unrecognized descriptor: %s" % spec)
        spec = DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) != 5:
        raise ValueError("expected exactly 5 fields, found %d: [%s]" % (len(fields), " ".join(fields)))
    parsed = [_field(expr, low, high, names) for expr, (_, low, high, names) in zip(fields, FIELDS)]
    return Schedule(fields=tuple(values for values, _ in parsed), any_day=(parsed[2][1], parsed[4][1]))
