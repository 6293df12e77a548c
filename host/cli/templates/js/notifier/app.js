// __NAME__: a notifier. It receives every event of a run (started, step,
// analysis failed, awaiting approval, succeeded, rolled back...) and tells
// someone; here, one log line per event, prefixed by `prefix`.
//
// To tell a chat or a ticketing system instead, send the event with
// fetch() and grant the plugin that host (`allow_hosts`).

import { config, log, returnsErrors } from './rollcage.js';

// The plugin's `config` table: each key with its default.
export const CONFIG = {
  prefix: 'rollcage', // put before every line
};

/** The line for an event. */
export function render(prefix, event) {
  const environment = event.environment ?? '-';
  return `${prefix}: ${event.pipeline} ${event.release.version} in ${environment}: ${event.message}`;
}

export const notifierApi = {
  notify: returnsErrors((event) => {
    const { prefix } = config(CONFIG);
    log('info', render(prefix, event), { run_id: event.runId });
  }),
};
