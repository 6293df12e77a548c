// __NAME__: an environment provider. It drives a platform's API to run a
// service's slots (a release and its replicas each) and split traffic
// between them. This one speaks a small REST API at `api_url`; replace the
// calls with your platform's:
//
// * PUT    {api_url}/services/{service}/slots/{slot}  {"release", "replicas", "spec"}
// * DELETE {api_url}/services/{service}/slots/{slot}
// * PUT    {api_url}/services/{service}/weights       [{"slot", "weight"}]
// * GET    {api_url}/services/{service}  ->  {"slots": [...], "weights": [...]}
//
// Actions are desired state, never deltas: the engine may repeat one after
// a crash, and repeating it must be harmless.

import { config, PluginError, returnsErrors } from './rollcage.js';

// The plugin's `config` table: a constructor for a required key.
export const CONFIG = {
  api_url: String, // the platform API, such as http://127.0.0.1:8080
};

function serviceUrl(target) {
  const { api_url } = config(CONFIG);
  return `${api_url.replace(/\/+$/, '')}/services/${encodeURIComponent(target.service)}`;
}

/** fetch() that names the request when it cannot be made. */
async function request(method, url, body) {
  const init = { method };
  if (body !== undefined) {
    init.headers = { 'content-type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(url, init);
  } catch (e) {
    throw new PluginError(`${method} ${url}: ${e && e.message ? e.message : e}`);
  }
}

/** Nothing for a 2xx answer, else an error with the status. */
async function expectSuccess(what, response) {
  if (!response.ok) {
    throw new PluginError(`${what}: the platform answered ${response.status}: ${await response.text()}`);
  }
}

/** The platform's answer to `GET {api_url}/services/{service}`. */
export function toStatus(data) {
  try {
    return {
      slots: data.slots.map((s) => ({
        name: String(s.name),
        release: String(s.release),
        desired: s.desired >>> 0,
        ready: s.ready >>> 0,
        endpoints: (s.endpoints ?? []).map(String),
      })),
      weights: data.weights.map((w) => ({ slot: String(w.slot), weight: w.weight >>> 0 })),
    };
  } catch (e) {
    throw new PluginError(`status: unexpected answer from the platform (${e.message})`);
  }
}

export const providerApi = {
  // A service's spec (its `service = { ... }` table as JSON) before any run
  // uses it: throw `new PluginError(message, [{ field, message }, ...])`
  // for its problems. This platform takes any spec.
  validate(_serviceSpec) {},

  prepare: returnsErrors(() => {
    // Nothing to prepare on this platform.
  }),

  applySlot: returnsErrors(async (target, spec) => {
    const url = `${serviceUrl(target)}/slots/${encodeURIComponent(spec.name)}`;
    const body = { release: spec.release.version, replicas: spec.replicas, spec: target.serviceSpec };
    await expectSuccess('apply-slot', await request('PUT', url, body));
  }),

  route: returnsErrors(async (target, weights) => {
    const body = weights.map((w) => ({ slot: w.slot, weight: w.weight }));
    await expectSuccess('route', await request('PUT', `${serviceUrl(target)}/weights`, body));
  }),

  status: returnsErrors(async (target) => {
    const response = await request('GET', serviceUrl(target));
    if (response.status === 404) return { slots: [], weights: [] };
    await expectSuccess('status', response);
    let data;
    try {
      data = await response.json();
    } catch (e) {
      throw new PluginError(`status: the platform's answer is not JSON (${e.message})`);
    }
    return toStatus(data);
  }),

  removeSlot: returnsErrors(async (target, slot) => {
    const response = await request('DELETE', `${serviceUrl(target)}/slots/${encodeURIComponent(slot)}`);
    // Removing a slot that is not there succeeds.
    if (response.status !== 404) await expectSuccess('remove-slot', response);
  }),

  runJob: returnsErrors((target, job) => {
    throw new PluginError(`this provider cannot run jobs (job \`${job.name}\`)`);
  }),
};
