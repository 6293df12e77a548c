// A boolean flag's exposure in a flagd flag file (https://flagd.dev/schema/v0/flags.json),
// without I/O: what percent a flag exposes, and the flag rewritten to expose
// another percent. app.js reads and writes the file over HTTP.
//
// The flag keeps the variants the developers declared; the plugin finds the
// one whose value is `true` ("on") and the one whose value is `false`
// ("off") and owns the flag's `state`, `defaultVariant` and `targeting`:
//
// * 0%: state ENABLED, defaultVariant off, no targeting;
// * 100%: state ENABLED, defaultVariant on, no targeting;
// * in between: defaultVariant off and targeting
//   `{"fractional": [["on", p], ["off", 100 - p]]}`: flagd hashes the flag
//   key with the targeting key (the user) into 100 buckets and gives the
//   first p to "on", so a user exposed at 10% stays exposed at 50%.

export class FlagError extends Error {}

/** The names of the `true` and `false` variants of flag `key`. */
export function variants(key, flag) {
  const entries = Object.entries(flag.variants ?? {});
  const on = entries.find(([, v]) => v === true)?.[0];
  const off = entries.find(([, v]) => v === false)?.[0];
  if (on === undefined || off === undefined) {
    throw new FlagError(
      `flag \`${key}\` is not a boolean flag: its variants need one whose value is true and one whose value is false (it has ${JSON.stringify(flag.variants ?? {})})`,
    );
  }
  return { on, off };
}

/** `{percent, enabled}` of flag `key` as flagd would serve it. */
export function exposureOf(key, flag) {
  const { on, off } = variants(key, flag);
  if (flag.state === 'DISABLED') return { percent: 0, enabled: false };
  const fractional = flag.targeting?.fractional;
  if (flag.targeting && Object.keys(flag.targeting).length > 0) {
    if (!Array.isArray(fractional)) {
      throw new FlagError(`flag \`${key}\` has targeting other than a fractional split; the plugin only reads and writes its own`);
    }
    // An optional first element is the bucketing expression.
    const buckets = fractional.filter(Array.isArray);
    const weight = (name) => buckets.filter((b) => b[0] === name).reduce((n, b) => n + (b.length > 1 ? b[1] : 1), 0);
    const total = weight(on) + weight(off);
    if (total === 0 || buckets.some((b) => b[0] !== on && b[0] !== off)) {
      throw new FlagError(`flag \`${key}\`: a fractional split over other variants than \`${on}\` and \`${off}\``);
    }
    return { percent: Math.round((weight(on) * 100) / total), enabled: true };
  }
  return { percent: flag.defaultVariant === on ? 100 : 0, enabled: true };
}

/** Flag `key` rewritten to expose `percent` (0-100) of users. */
export function withExposure(key, flag, percent) {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new FlagError(`flag \`${key}\`: exposure ${percent}% is not a percent (0-100)`);
  }
  const { on, off } = variants(key, flag);
  const next = { ...flag, state: 'ENABLED' };
  delete next.targeting;
  if (percent === 100) {
    next.defaultVariant = on;
  } else {
    next.defaultVariant = off;
    if (percent > 0) {
      next.targeting = { fractional: [[on, percent], [off, 100 - percent]] };
    }
  }
  return next;
}

/** JSON with object keys sorted, so that equal flags have equal text. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

/** FNV-1a (32 bits) of the flag's canonical JSON, as 8 hex digits. */
export function revision(flag) {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(canonical(flag))) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}
