// What the host offers every plugin (`rollcage:plugin/host`), in
// JavaScript terms:
//
// * config(schema): the plugin's `config` table from the operator's TOML,
//   checked against `schema` (a typo is an error, not a silent default);
// * secret(name): a secret granted to the plugin (`secrets = [...]`);
// * log(level, message, fields): a line in the host's log, under the
//   plugin's id;
// * PluginError and returnsErrors: an error the run shows.
//
// HTTP is the standard fetch(), which the host lets through to the
// plugin's `allow_hosts` only. Importing this module makes fetch() say why
// a request could not be made: a `FetchError` whose message starts with
// `denied:` (the host refused it: a host not in allow_hosts) or
// `connection refused or failed:` (nothing answered), and whose `reason`
// is 'denied', 'connection' or 'url'.
//
// There is no `process` (no process.env, no files): read settings with
// config(schema) and secrets with secret(name).

import { config as hostConfig, log as hostLog, secret as hostSecret } from 'rollcage:plugin/host@0.2.0';

/**
 * An error the host shows as the call's result: a notifier's is retried, a
 * check's counts as "no measurement", a provider's fails the step (and the
 * engine rolls back).
 */
export class PluginError extends Error {
  constructor(message, payload = message) {
    super(message);
    // componentize-js returns a thrown value's `payload` as the `err` case.
    this.payload = payload;
  }
}

/** A config table or strategy parameters that do not fit their schema. */
export class ConfigError extends PluginError {
  constructor(what, problems) {
    super(`invalid ${what}: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

/**
 * Wrap every exported function with this: any exception becomes the `err`
 * the host shows, with its message. Works for async functions too.
 */
export function returnsErrors(fn) {
  const asError = (e) => {
    if (e instanceof PluginError) return e;
    return new PluginError(e && e.message ? `${e.name}: ${e.message}` : String(e));
  };
  return (...args) => {
    let result;
    try {
      result = fn(...args);
    } catch (e) {
      throw asError(e);
    }
    if (result && typeof result.then === 'function') {
      return result.catch((e) => {
        throw asError(e);
      });
    }
    return result;
  };
}

const TYPES = { string: 'a string', number: 'a number', boolean: 'true or false', object: 'a table' };

function typeOf(value) {
  if (Array.isArray(value)) return 'array';
  return value === null ? 'null' : typeof value;
}

/**
 * Parse a JSON table against `schema`: each key maps to its default value,
 * or to a constructor (String, Number, Boolean, Array, Object) for a
 * required key. Unknown keys, missing required keys and values of another
 * type than their default's are errors, all reported at once.
 */
export function parseConfig(text, schema, what = 'plugin config') {
  let raw;
  try {
    raw = text.trim() ? JSON.parse(text) : {};
  } catch (e) {
    throw new ConfigError(what, [`not JSON: ${e.message}`]);
  }
  if (typeOf(raw) !== 'object') throw new ConfigError(what, ['expected a table']);
  const keys = Object.keys(schema);
  const problems = Object.keys(raw)
    .filter((k) => !keys.includes(k))
    .map((k) => `unknown key \`${k}\`; expected ${keys.join(', ') || 'none'}`);
  const values = {};
  for (const [key, spec] of Object.entries(schema)) {
    const required = typeof spec === 'function';
    const wanted = required ? typeOf(spec()) : typeOf(spec);
    if (!Object.hasOwn(raw, key)) {
      if (required) problems.push(`\`${key}\` is required`);
      else values[key] = spec;
      continue;
    }
    if (typeOf(raw[key]) !== wanted) {
      problems.push(`\`${key}\` must be ${TYPES[wanted] ?? `an ${wanted}`}, not ${JSON.stringify(raw[key])}`);
    }
    values[key] = raw[key];
  }
  if (problems.length) throw new ConfigError(what, problems);
  return values;
}

/**
 * The plugin's `config` table (`{}` when the operator gave none), checked
 * against `schema` (see parseConfig). In it, `${secret:NAME}` references
 * are already filled in for the secrets the plugin is granted.
 */
export function config(schema) {
  return parseConfig(hostConfig(), schema);
}

/**
 * The value of a secret granted to the plugin. A name that is not granted
 * is an error naming the plugin and the secret, and the host records it as
 * a denied capability.
 */
export function secret(name) {
  try {
    return hostSecret(name);
  } catch (e) {
    throw new PluginError(String(e && e.payload !== undefined ? e.payload : e));
  }
}

/**
 * A line in the host's log under the plugin's id: `level` is trace, debug,
 * info, warn or error; `fields` an object of key/value pairs.
 */
export function log(level, message, fields = {}) {
  hostLog(level, message, Object.entries(fields).map(([k, v]) => [k, String(v)]));
}

/**
 * Why fetch() could not make a request: `reason` is 'denied' (the host
 * refused it before sending), 'connection' (nothing answered: a closed
 * port, a name that does not resolve, a timeout) or 'url' (not http:// or
 * https://; a plugin has no files).
 */
export class FetchError extends TypeError {
  constructor(message, reason) {
    super(message);
    this.name = 'FetchError';
    this.reason = reason;
  }
}

// What the JavaScript runtime's fetch() rejects with, by where the request
// failed: when the host refused it (`handle` failed: the host is not in
// allow_hosts, or its address is in a denied network) and when it was sent
// but nothing answered.
const HOST_REFUSED = /An error occurred while using the host API/;
const NETWORK_ERROR = /NetworkError when attempting to fetch resource/;

function describeRequest(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : String(input && input.url);
  const method = ((init && init.method) || (input && typeof input === 'object' && input.method) || 'GET').toUpperCase();
  return { url, method };
}

const runtimeFetch = globalThis.fetch;
if (typeof runtimeFetch === 'function' && !runtimeFetch.rollcage) {
  const fetchWithReasons = async function fetch(input, init) {
    const { url, method } = describeRequest(input, init);
    let scheme;
    try {
      scheme = new URL(url).protocol;
    } catch {
      throw new FetchError(`fetch ${method} ${url}: not a URL`, 'url');
    }
    if (scheme !== 'http:' && scheme !== 'https:') {
      throw new FetchError(
        `fetch ${method} ${url}: only http:// and https:// URLs; a plugin has no files (read its settings with config(schema))`,
        'url',
      );
    }
    try {
      return await runtimeFetch(input, init);
    } catch (e) {
      const message = String(e && e.message ? e.message : e);
      if (HOST_REFUSED.test(message)) {
        throw new FetchError(
          `fetch ${method} ${url}: denied: the host refused the request (its host is not in this plugin's allow_hosts, or its address is in a denied network; the host's log says which)`,
          'denied',
        );
      }
      if (NETWORK_ERROR.test(message)) {
        throw new FetchError(
          `fetch ${method} ${url}: connection refused or failed: nothing answered (no server at that address and port, a name that does not resolve, or a timeout)`,
          'connection',
        );
      }
      throw e;
    }
  };
  fetchWithReasons.rollcage = true;
  globalThis.fetch = fetchWithReasons;
}
