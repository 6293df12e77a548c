// `json-status-check`: a Rollcage health check that GETs a JSON status
// document with `fetch()`, takes one value out of it with an RFC 6901 JSON
// pointer, and judges it: equal to `expect`, or meeting a numeric condition
// `pass_if` (`< 0.05`, `>= 3`, `between 0.1 0.5`...).
//
// `fetch()` goes through wasi:http/outgoing-handler, which the host only lets
// through to the plugin's `allow_hosts`.
//
// This module has no Rollcage import, so Node runs it as is (test.mjs);
// app.js binds it to the host.

const KEYS = ['url', 'pointer', 'expect', 'pass_if', 'timeout_ms'];

/** An error returned to the host (`err(string)` of `check`). */
export class PluginError extends Error {
  constructor(message) {
    super(message);
    // ComponentizeJS returns a thrown value's `payload` as the `err` case.
    this.payload = message;
  }
}

// ---- Conditions, as the Rust SDK parses them (`rollcage_sdk::condition`) ----

const OPS = {
  '<': (v, n) => v < n,
  '<=': (v, n) => v <= n,
  '>': (v, n) => v > n,
  '>=': (v, n) => v >= n,
  '==': (v, n) => v === n,
  '!=': (v, n) => !Number.isNaN(v) && v !== n,
};

export function parseCondition(text) {
  const bad = () =>
    new PluginError(
      `invalid condition \`${text}\`: use <, <=, >, >=, ==, != and a number, or \`between LOW HIGH\``,
    );
  const words = String(text).trim().split(/\s+/).filter(Boolean);
  const num = (s) => {
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s) && !/^[+-]?inf(inity)?$/i.test(s)) throw bad();
    return /inf/i.test(s) ? (s.startsWith('-') ? -Infinity : Infinity) : Number(s);
  };
  if (words.length === 3 && words[0] === 'between') {
    const [lo, hi] = [num(words[1]), num(words[2])];
    if (lo > hi) throw new PluginError(`invalid condition \`${text}\`: ${lo} is above ${hi}`);
    return { text: `between ${lo} ${hi}`, holds: (v) => v >= lo && v <= hi };
  }
  if (words.length === 2 && Object.hasOwn(OPS, words[0])) {
    const n = num(words[1]);
    return { text: `${words[0]} ${n}`, holds: (v) => OPS[words[0]](v, n) };
  }
  throw bad();
}

// ---- JSON pointers (RFC 6901) ----

/** The value at `pointer` in `doc`, or `undefined` when there is none. */
export function resolvePointer(doc, pointer) {
  if (pointer === '') return doc;
  let value = doc;
  for (const raw of pointer.slice(1).split('/')) {
    const token = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(value)) {
      if (!/^(0|[1-9]\d*)$/.test(token) || Number(token) >= value.length) return undefined;
      value = value[Number(token)];
    } else if (value !== null && typeof value === 'object') {
      if (!Object.hasOwn(value, token)) return undefined;
      value = value[token];
    } else {
      return undefined;
    }
  }
  return value;
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
}

// ---- Configuration ----

export function parseConfig(text) {
  let raw;
  try {
    raw = JSON.parse(text || '{}');
  } catch (e) {
    throw new PluginError(`config: not JSON: ${e.message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new PluginError('config: expected a table');
  }
  const problems = [];
  for (const key of Object.keys(raw)) {
    if (!KEYS.includes(key)) problems.push(`unknown key \`${key}\`; expected one of ${KEYS.join(', ')}`);
  }
  const url = raw.url;
  if (typeof url !== 'string' || !/^https?:\/\/./.test(url)) {
    problems.push('`url` is required: an http(s) URL, which may contain {endpoint}, {slot}, {environment}, {release}');
  }
  const pointer = raw.pointer ?? '';
  if (typeof pointer !== 'string' || (pointer !== '' && !pointer.startsWith('/'))) {
    problems.push(`\`pointer\` must be a JSON pointer such as "/status" or "" (the whole document), not ${JSON.stringify(pointer)}`);
  }
  const hasExpect = Object.hasOwn(raw, 'expect');
  const hasPassIf = Object.hasOwn(raw, 'pass_if');
  let condition = null;
  if (hasExpect === hasPassIf) {
    problems.push('set exactly one of `expect` (a JSON value) and `pass_if` (a condition such as "< 0.05")');
  } else if (hasPassIf) {
    try {
      condition = parseCondition(raw.pass_if);
    } catch (e) {
      problems.push(`pass_if: ${e.message}`);
    }
  }
  const timeoutMs = raw.timeout_ms ?? 2000;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    problems.push(`\`timeout_ms\` must be a positive whole number, not ${JSON.stringify(timeoutMs)}`);
  }
  if (problems.length) throw new PluginError(`config: ${problems.join('; ')}`);
  return { url, pointer, expect: raw.expect, condition, timeoutMs };
}

// ---- The check ----

function show(value) {
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function numberOf(value) {
  if (typeof value === 'number') return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  return null;
}

/** Judge one parsed document: { verdict, value, why }. */
export function judge(config, doc) {
  const where = config.pointer === '' ? 'the document' : config.pointer;
  const found = resolvePointer(doc, config.pointer);
  const n = found === undefined ? null : numberOf(found);
  if (config.condition) {
    if (n === null || Number.isNaN(n)) {
      const what = found === undefined ? 'missing' : `${show(found)}, not a number`;
      return { verdict: 'inconclusive', value: null, why: `${where} is ${what}` };
    }
    const ok = config.condition.holds(n);
    return {
      verdict: ok ? 'pass' : 'fail',
      value: n,
      why: `${where} is ${n}, ${ok ? 'meets' : 'does not meet'} ${config.condition.text}`,
    };
  }
  if (found === undefined) return { verdict: 'fail', value: null, why: `${where} is missing` };
  const ok = deepEqual(found, config.expect);
  return {
    verdict: ok ? 'pass' : 'fail',
    value: n,
    why: ok ? `${where} is ${show(found)}` : `${where} is ${show(found)}, expected ${show(config.expect)}`,
  };
}

/** GET `url` within `timeoutMs`: { status, text }, or throws. */
async function get(url, timeoutMs) {
  // The abort cancels the request where fetch() supports it; the race makes
  // sure the check answers in time either way.
  const abort = typeof AbortController === 'function' ? new AbortController() : null;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      abort?.abort();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([
      (async () => {
        const response = await fetch(url, { headers: { accept: 'application/json' }, signal: abort?.signal });
        return { status: response.status, text: await response.text() };
      })(),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One URL: a judgement, or { error } when the request itself failed. */
async function probe(config, url) {
  let answer;
  try {
    answer = await get(url, config.timeoutMs);
  } catch (e) {
    return { error: `${url}: ${e && e.message ? e.message : String(e)}` };
  }
  if (answer.status < 200 || answer.status > 299) {
    return { verdict: 'fail', value: null, why: `${url}: status ${answer.status}` };
  }
  let doc;
  try {
    doc = JSON.parse(answer.text);
  } catch (e) {
    return { verdict: 'fail', value: null, why: `${url}: body is not JSON (${e.message})` };
  }
  const j = judge(config, doc);
  return { ...j, why: `${url}: ${j.why}` };
}

export async function check(target, configText) {
  const config = parseConfig(configText);
  const fill = (template) =>
    template
      .replaceAll('{slot}', target.slot)
      .replaceAll('{environment}', target.environment)
      .replaceAll('{release}', target.release);
  const perEndpoint = config.url.includes('{endpoint}');
  if (perEndpoint && target.endpoints.length === 0) {
    return { verdict: 'inconclusive', value: undefined, detail: `slot \`${target.slot}\` has no ready endpoint` };
  }
  const urls = perEndpoint
    ? target.endpoints.map((e) => fill(config.url).replaceAll('{endpoint}', e))
    : [fill(config.url)];

  const results = [];
  for (const url of urls) results.push(await probe(config, url));

  // A request that could not be made is an error when it is the only one
  // (the status server is down: no measurement), and an unhealthy endpoint
  // among several. A host outside allow_hosts is always an error.
  for (const r of results) {
    if (r.error && (!perEndpoint || /denied/i.test(r.error))) throw new PluginError(r.error);
  }
  const judged = results.map((r) => (r.error ? { verdict: 'fail', value: null, why: r.error } : r));
  const failed = judged.filter((r) => r.verdict === 'fail');
  const inconclusive = judged.filter((r) => r.verdict === 'inconclusive');
  const shown = failed[0] ?? inconclusive[0] ?? judged[0];
  const verdict = failed.length ? 'fail' : inconclusive.length ? 'inconclusive' : 'pass';
  let detail;
  if (judged.length === 1) {
    detail = judged[0].why;
  } else if (verdict === 'pass') {
    detail = `${judged.length} of ${judged.length} endpoints pass: ${judged[0].why}`;
  } else {
    const bad = verdict === 'fail' ? failed : inconclusive;
    detail = `${bad.length} of ${judged.length} endpoints ${verdict === 'fail' ? 'fail' : 'inconclusive'}: ${bad.map((r) => r.why).join('; ')}`;
  }
  return { verdict, value: shown.value ?? undefined, detail };
}

