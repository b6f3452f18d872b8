// The test page's script, bundled by esbuild (e2e.mjs) from the stock
// OpenFeature web SDK and OFREP web provider in node_modules (npm, pinned in
// package-lock.json). Nothing here speaks OFREP itself: the page only
// configures the provider and records what the SDK tells it.
//
// window.guidonTest is what the test (Playwright, from e2e.mjs) calls.

import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

// Milliseconds since the epoch, sub-millisecond: comparable with the same
// expression in the Node process driving the test (one machine, one clock).
const now = () => performance.timeOrigin + performance.now();

const client = OpenFeature.getClient('guidon-ofrep-web-e2e');

function details(method, key, fallback) {
  const d = client[method](key, fallback);
  return {
    value: d.value,
    variant: d.variant ?? null,
    reason: d.reason ?? null,
    errorCode: d.errorCode ?? null,
    errorMessage: d.errorMessage ?? null,
    flagMetadata: d.flagMetadata ?? {},
  };
}

window.guidonTest = {
  // Every ConfigurationChanged the SDK emitted, with the flags' values at
  // that moment.
  changes: [],
  errors: [],
  provider: null,

  // Sets the provider and waits until it is ready; throws its error if it
  // fails to get ready.
  async start({ baseUrl, token, context, watch }) {
    const provider = new OFREPWebProvider({
      baseUrl,
      headers: [['Authorization', `Bearer ${token}`]],
      // Only the event stream may deliver a change: no polling (0 disables
      // it), no re-fetch when the page becomes visible, no persisted cache.
      pollInterval: 0,
      changeDetection: 'sse',
      disableVisibilityRefresh: true,
      cacheMode: 'disabled',
    });
    this.provider = provider;
    OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (event) => {
      const at = now();
      this.changes.push({
        at,
        flagsChanged: event?.flagsChanged ?? null,
        values: Object.fromEntries(
          watch.map(([method, key, fallback]) => [key, client[method](key, fallback)]),
        ),
      });
    });
    OpenFeature.addHandler(ProviderEvents.Error, (event) => {
      this.errors.push({ at: now(), message: event?.message ?? String(event) });
    });
    await OpenFeature.setProviderAndWait(provider, context);
    return client.providerStatus;
  },

  // [method, key, default] -> the SDK's evaluation details.
  resolve(checks) {
    return checks.map(([method, key, fallback]) => details(method, key, fallback));
  },

  // What the provider holds (the page's view of every flag).
  cache() {
    return this.provider ? this.provider.flagCache : null;
  },

  // A plain fetch from the page, to show what CORS lets it read.
  async tryFetch(url, init) {
    try {
      const response = await fetch(url, init);
      return { ok: true, status: response.status, body: await response.text() };
    } catch (e) {
      return { ok: false, error: `${e.name}: ${e.message}` };
    }
  },
};
