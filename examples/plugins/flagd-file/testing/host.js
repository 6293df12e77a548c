// A stand-in for `rollcage:plugin/host` under Node. Tests set
// `host.config` (the plugin's config table) and `host.secrets`, and read
// the log lines from `host.lines`.
export const host = { config: {}, secrets: {}, lines: [] };

export function config() {
  return JSON.stringify(host.config);
}

export function secret(name) {
  if (Object.hasOwn(host.secrets, name)) return host.secrets[name];
  const e = new Error(`secret \`${name}\` is not granted to plugin \`test\``);
  e.payload = e.message;
  throw e;
}

export function log(level, message, fields) {
  host.lines.push({ level, message, fields });
}
