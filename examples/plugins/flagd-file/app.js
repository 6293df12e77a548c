// flagd-file: an exposure plugin. It exposes a boolean flag to a percent of
// users by rewriting the flag in a flagd flag file that a small HTTP file
// service keeps (flagd polls the file from there). See flagd.js for what
// the flag becomes; this file reads and writes it:
//
//   GET  url  ->  the file and its ETag
//   PUT  url  with If-Match: <ETag>  (a file changed meanwhile is read again)
//
// `url` may contain `{environment}`: one file per Rollcage environment.

import { config, secret, log, returnsErrors, PluginError, parseConfig } from './rollcage.js';
import { FlagError, canonical, exposureOf, revision, withExposure } from './flagd.js';

// The plugin's `config` table: each key with its default.
export const CONFIG = {
  url: String, // the flag file, e.g. http://flags.internal/flags/{environment}.flagd.json
  token_secret: '', // name of a granted secret sent as `Authorization: Bearer`; none when empty
};

/** The configuration's problems as `{field, message}`, none when it is valid. */
export function problems(params) {
  const found = [];
  let values;
  try {
    values = parseConfig(params, CONFIG);
  } catch (e) {
    for (const p of e.problems ?? [e.message]) {
      const key = /`([^`]+)`/.exec(p);
      found.push({ field: key ? key[1] : '', message: p });
    }
    return found;
  }
  if (!/^https?:\/\//.test(values.url)) {
    found.push({ field: 'url', message: `\`${values.url}\` is not an http:// or https:// URL` });
  }
  return found;
}

/** The file's URL for a Rollcage environment. */
export function fileUrl(template, environment) {
  return template.replaceAll('{environment}', encodeURIComponent(environment));
}

async function send(cfg, method, url, { body, ifMatch } = {}) {
  const headers = { accept: 'application/json', 'user-agent': 'rollcage-flagd-file/1' };
  if (cfg.token_secret) headers.authorization = `Bearer ${secret(cfg.token_secret)}`;
  if (ifMatch) headers['if-match'] = ifMatch;
  if (body !== undefined) headers['content-type'] = 'application/json';
  // The host bounds the call's time; a request cannot outlive it.
  return fetch(url, { method, headers, body });
}

/** The file at `url` (parsed), its ETag, and flag `key` in it. */
async function read(cfg, url, key, environment) {
  const where = `flag \`${key}\` in environment \`${environment}\` (${url})`;
  const res = await send(cfg, 'GET', url);
  const text = await res.text();
  if (res.status === 401 || res.status === 403) {
    throw new PluginError(`${where}: the file service refused the token (${res.status}): ${text}`);
  }
  if (res.status === 404) {
    throw new PluginError(`${where}: there is no flag file at that URL (404)`);
  }
  if (!res.ok) throw new PluginError(`${where}: GET answered ${res.status}: ${text}`);
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new PluginError(`${where}: the file is not JSON: ${e.message}`);
  }
  const flag = doc?.flags?.[key];
  if (!flag) {
    throw new PluginError(
      `${where}: the flag is not in the file; add it there first (flags belong to the code that reads them; this plugin only sets their exposure)`,
    );
  }
  return { doc, flag, etag: res.headers.get('etag'), where };
}

/** Expose `key` to `percent` of users; nothing is written when it already is. */
export async function setExposure(cfg, key, environment, percent) {
  const url = fileUrl(cfg.url, environment);
  // Another writer between our read and write makes the PUT fail (412):
  // read again and redo, a few times.
  for (let attempt = 1; ; attempt++) {
    const { doc, flag, etag, where } = await read(cfg, url, key, environment);
    let next;
    try {
      next = withExposure(key, flag, percent);
    } catch (e) {
      if (e instanceof FlagError) throw new PluginError(`${where}: ${e.message}`);
      throw e;
    }
    if (canonical(next) === canonical(flag)) return;
    doc.flags[key] = next;
    const res = await send(cfg, 'PUT', url, { body: JSON.stringify(doc, null, 2) + '\n', ifMatch: etag });
    if (res.ok) {
      log('info', `${key}: exposed to ${percent}% in ${environment}`, { url });
      return;
    }
    const text = await res.text();
    if (res.status === 412 && attempt < 3) continue;
    throw new PluginError(`${where}: PUT answered ${res.status}: ${text}`);
  }
}

/** What `key` exposes now, and a revision of the flag. */
export async function getExposure(cfg, key, environment) {
  const { flag, where } = await read(cfg, fileUrl(cfg.url, environment), key, environment);
  try {
    return { ...exposureOf(key, flag), revision: revision(flag) };
  } catch (e) {
    if (e instanceof FlagError) throw new PluginError(`${where}: ${e.message}`);
    throw e;
  }
}

export const exposureApi = {
  validate(params) {
    const found = problems(params);
    if (found.length) throw new PluginError(found.map((p) => `${p.field}: ${p.message}`).join('; '), found);
  },
  setExposure: returnsErrors((flag, environment, percent) => setExposure(config(CONFIG), flag, environment, percent)),
  getExposure: returnsErrors((flag, environment) => getExposure(config(CONFIG), flag, environment)),
};
