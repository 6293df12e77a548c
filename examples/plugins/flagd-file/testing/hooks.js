// Module resolution hooks (see register.js).
export async function resolve(specifier, context, nextResolve) {
  if (specifier.startsWith('rollcage:plugin/host@')) {
    return { url: new URL('./host.js', import.meta.url).href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
