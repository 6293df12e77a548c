// __NAME__: an exposure plugin. It shows a feature flag to a percent of
// users in an environment, so that a release can be deployed dark and
// exposed step by step (`{ expose = 10 }`, `{ expose = 50 }`...). This one
// speaks a small REST API at `api_url`; replace the calls with your flag
// service's:
//
// * `PUT {api_url}/flags/{flag}/{environment}` `{"percent": N}`
// * `GET {api_url}/flags/{flag}/{environment}` -> `{"percent": N, "enabled": bool, "revision": "..."}`
//
// setExposure is desired state, never a delta: the engine repeats it after
// a crash and calls it with the percent from before a run to roll back, so
// repeating it must be harmless.

import { config, parseConfig, returnsErrors, PluginError } from './rollcage.js';

// The plugin's `config` table: a constructor for a required key.
export const CONFIG = {
  api_url: String, // the flag service, such as http://127.0.0.1:8080
};

/** The config's problems as `{field, message}`, none when it is valid. */
export function problems(text) {
  let values;
  try {
    values = parseConfig(text, CONFIG);
  } catch (e) {
    return (e.problems ?? [e.message]).map((message) => ({ field: /`([^`]+)`/.exec(message)?.[1] ?? '', message }));
  }
  if (!/^https?:\/\//.test(values.api_url)) {
    return [{ field: 'api_url', message: `\`${values.api_url}\` is not an http:// or https:// URL` }];
  }
  return [];
}

function flagUrl(flag, environment) {
  const { api_url } = config(CONFIG);
  return `${api_url.replace(/\/+$/, '')}/flags/${encodeURIComponent(flag)}/${encodeURIComponent(environment)}`;
}

/** The flag service's answer to `GET .../flags/{flag}/{environment}`. */
export function toStatus(data) {
  if (!Number.isInteger(data?.percent) || typeof data.enabled !== 'boolean') {
    throw new PluginError(`unexpected answer from the flag service: ${JSON.stringify(data)}`);
  }
  return { percent: data.percent, enabled: data.enabled, revision: String(data.revision ?? '') };
}

async function expectOk(what, response) {
  if (!response.ok) {
    throw new PluginError(`${what}: the flag service answered ${response.status}: ${await response.text()}`);
  }
  return response;
}

export const exposureApi = {
  validate(params) {
    const found = problems(params);
    // validate's error is the list of every problem.
    if (found.length) throw new PluginError(found.map((p) => p.message).join('; '), found);
  },
  setExposure: returnsErrors(async (flag, environment, percent) => {
    const what = `flag \`${flag}\` in \`${environment}\``;
    if (percent > 100) throw new PluginError(`${what}: ${percent}% is not a percent`);
    await expectOk(
      what,
      await fetch(flagUrl(flag, environment), {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ percent }),
      }),
    );
  }),
  getExposure: returnsErrors(async (flag, environment) => {
    const response = await expectOk(`flag \`${flag}\` in \`${environment}\``, await fetch(flagUrl(flag, environment)));
    return toStatus(await response.json());
  }),
};
