// panva's oidc-provider on loopback, for the interop tests (interop/test_oidc_provider.py, tox -e interop).
//
//     node server.mjs CONFIG.json
//
// CONFIG (written by the test): {"ttl": access-token seconds, "jwk": the private_key_jwt clients'
// public JWK, "secret": the client_secret_basic client's secret, "nonceRotation": seconds between
// two DPoP nonces of the resource server (0: never), "port"/"resourcePort": 0 for any free port}.
//
// Two servers on 127.0.0.1, in this one process:
// - the authorization server (the issuer): oidc-provider with its development login and consent
//   pages (devInteractions: any login name, any password), client credentials, revocation,
//   introspection, DPoP with nonces required, refresh-token rotation, access tokens of `ttl` s;
// - a resource server of ours (oidc-provider has none) on another origin: GET /api/me checks the
//   access token against the provider's own store (a bearer token, or a DPoP-bound one with its
//   proof and a nonce of this origin), and GET /stats[?reset=1] says what both servers saw, per client.
//
// Once both listen, one JSON line goes to stdout: {"issuer": ..., "resource": ...}; logs go to stderr.
// SIGTERM or SIGINT stops both.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import * as jose from 'jose';
import { Provider } from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2] ?? process.env.OIDC_INTEROP_CONFIG, 'utf8'));
const TTL = Number(config.ttl ?? 5);
const NONCE_ROTATION = Number(config.nonceRotation ?? 0);
const REDIRECT_URIS = ['http://127.0.0.1/callback']; // native clients: any loopback port (RFC 8252 §7.3)
const DPOP_ALGS = ['ES256', 'PS256', 'RS256', 'EdDSA', 'Ed25519'];

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

// -- what the servers saw, per client: GET /stats -------------------------------------------------

let stats;
function resetStats() {
  stats = { clients: new Map(), serverErrors: [] };
}
resetStats();

function client(id) {
  const key = id ?? '(none)';
  if (!stats.clients.has(key)) {
    stats.clients.set(key, {
      grants: {}, // grant_type -> token responses (200)
      errors: {}, // "grant_type error" -> token error responses
      issued: [], // access tokens: {at (server's epoch s, ms precision), exp, jkt}
      refreshTokens: { saved: 0, consumed: 0, bound: 0 },
      grantsRevoked: 0,
      api: { ok: 0, errors: {}, tokens: new Set() },
    });
  }
  return stats.clients.get(key);
}

function bump(counts, key) {
  counts[key] = (counts[key] ?? 0) + 1;
}

function statsJson() {
  const clients = {};
  for (const [id, c] of stats.clients) {
    clients[id] = { ...c, api: { ...c.api, tokens: c.api.tokens.size } };
  }
  return { clients, serverErrors: stats.serverErrors };
}

function fingerprint(value) {
  return crypto.hash('sha256', value, 'base64url').slice(0, 16);
}

// -- the authorization server -----------------------------------------------------------------------

const issuerServer = http.createServer();
const issuer = await listen(issuerServer, Number(config.port ?? 0));

const { privateKey: signingKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(signingKey)), kid: 'interop-rs256', alg: 'RS256', use: 'sig' };

const native = {
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: REDIRECT_URIS,
};
const privateKeyJwt = {
  application_type: 'native',
  token_endpoint_auth_method: 'private_key_jwt',
  jwks: { keys: [config.jwk] },
  grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: REDIRECT_URIS,
};

const provider = new Provider(issuer, {
  clients: [
    // (a) a public native client; its refresh tokens are DPoP-bound whenever the login used DPoP.
    { client_id: 'native', ...native },
    { client_id: 'native-dpop', ...native, dpop_bound_access_tokens: true },
    // (b) a confidential client that signs its assertions (the test's EC or RSA key).
    { client_id: 'service-jwt', ...privateKeyJwt },
    { client_id: 'service-jwt-dpop', ...privateKeyJwt, dpop_bound_access_tokens: true },
    // (c) the baseline: a shared secret in HTTP Basic.
    {
      client_id: 'basic',
      client_secret: config.secret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: REDIRECT_URIS,
      application_type: 'native',
    },
  ],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    dPoP: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true },
  },
  // A refresh token for every client allowed the grant, offline_access asked for or not.
  issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: TTL,
    ClientCredentials: TTL,
    RefreshToken: 3600,
    IdToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
    AuthorizationCode: 60,
  },
});

provider.on('grant.success', (ctx) => {
  bump(client(ctx.oidc.client?.clientId).grants, ctx.oidc.params.grant_type);
});
provider.on('grant.error', (ctx, err) => {
  const id = ctx.oidc?.client?.clientId ?? ctx.oidc?.params?.client_id;
  bump(client(id).errors, `${ctx.oidc?.params?.grant_type} ${err.error}`);
});
for (const kind of ['access_token', 'client_credentials']) {
  provider.on(`${kind}.saved`, (token) => {
    // An opaque token's exp is in its stored payload only: the same epochTime() + expiration.
    const at = Date.now() / 1000;
    const exp = token.exp ?? Math.floor(at) + token.expiration;
    client(token.clientId).issued.push({ at, exp, jkt: Boolean(token.jkt) });
  });
}
provider.on('refresh_token.saved', (token) => {
  const c = client(token.clientId);
  c.refreshTokens.saved += 1;
  if (token.jkt) c.refreshTokens.bound += 1;
});
provider.on('refresh_token.consumed', (token) => {
  client(token.clientId).refreshTokens.consumed += 1;
});
provider.on('grant.revoked', (ctx) => {
  client(ctx.oidc?.client?.clientId).grantsRevoked += 1;
});
provider.on('server_error', (ctx, err) => {
  stats.serverErrors.push(String(err?.stack ?? err));
  console.error('server_error', err);
});

issuerServer.on('request', provider.callback());

// -- the resource server: GET /api/me, GET /stats ----------------------------------------------------

const resourceServer = http.createServer();
const resource = await listen(resourceServer, Number(config.resourcePort ?? 0));

// This origin's DPoP nonce (RFC 9449 §9), its own, not the provider's. Only the current one is
// accepted, and it is replaced every NONCE_ROTATION s: every request in flight with the one before
// is answered use_dpop_nonce, from as many threads as there are (a strict server; many keep the
// previous one valid a while). Every answer to a request with a proof names the current one.
const nonces = { current: crypto.randomBytes(16).toString('base64url'), since: Date.now() };
function currentNonce() {
  if (NONCE_ROTATION > 0 && Date.now() - nonces.since >= NONCE_ROTATION * 1000) {
    nonces.current = crypto.randomBytes(16).toString('base64url');
    nonces.since = Date.now();
  }
  return nonces.current;
}
const seenJtis = new Map(); // jti -> epoch ms after which it is forgotten

class Unauthorized extends Error {
  constructor(scheme, error, description, extraHeaders = {}) {
    super(description);
    this.scheme = scheme;
    this.error = error;
    this.headers = extraHeaders;
  }
}

async function checkProof(req, accessToken, jkt) {
  const proof = req.headers.dpop;
  if (!proof) throw new Unauthorized('DPoP', 'invalid_dpop_proof', 'no DPoP proof');
  let verified;
  try {
    verified = await jose.jwtVerify(proof, jose.EmbeddedJWK, { typ: 'dpop+jwt', algorithms: DPOP_ALGS });
  } catch (err) {
    throw new Unauthorized('DPoP', 'invalid_dpop_proof', `bad proof: ${err.code ?? err.message}`);
  }
  const { payload, protectedHeader } = verified;
  const htu = URL.parse(String(payload.htu));
  if (htu) {
    htu.search = '';
    htu.hash = '';
  }
  const expected = new URL(new URL(req.url, resource).pathname, resource).href;
  const now = Date.now() / 1000;
  if (payload.htm !== req.method) throw new Unauthorized('DPoP', 'invalid_dpop_proof', 'htm mismatch');
  if (htu?.href !== expected) throw new Unauthorized('DPoP', 'invalid_dpop_proof', `htu mismatch: ${payload.htu}`);
  if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > 60) {
    throw new Unauthorized('DPoP', 'invalid_dpop_proof', 'iat not recent');
  }
  if (payload.ath !== crypto.hash('sha256', accessToken, 'base64url')) {
    throw new Unauthorized('DPoP', 'invalid_dpop_proof', 'ath mismatch');
  }
  if (typeof payload.jti !== 'string' || seenJtis.has(payload.jti)) {
    throw new Unauthorized('DPoP', 'invalid_dpop_proof', 'jti missing or replayed');
  }
  if ((await jose.calculateJwkThumbprint(protectedHeader.jwk)) !== jkt) {
    throw new Unauthorized('DPoP', 'invalid_token', 'the proof is signed by another key than the token is bound to');
  }
  const nonce = currentNonce();
  if (payload.nonce !== nonce) {
    throw new Unauthorized('DPoP', 'use_dpop_nonce', 'use the nonce of this origin', { 'DPoP-Nonce': nonce });
  }
  seenJtis.set(payload.jti, Date.now() + 120_000);
  if (seenJtis.size > 10_000) {
    for (const [jti, until] of seenJtis) if (until < Date.now()) seenJtis.delete(jti);
  }
}

async function apiMe(req) {
  const [scheme, value, ...rest] = (req.headers.authorization ?? '').split(' ');
  if (!value || rest.length || !['bearer', 'dpop'].includes(scheme.toLowerCase())) {
    throw new Unauthorized('Bearer', 'invalid_request', 'no access token');
  }
  const opts = { ignoreExpiration: true };
  const token = (await provider.AccessToken.find(value, opts)) ?? (await provider.ClientCredentials.find(value, opts));
  const c = client(token?.clientId ?? '(unknown token)');
  try {
    if (!token) throw new Unauthorized(scheme, 'invalid_token', 'unknown');
    if (token.isExpired) throw new Unauthorized(scheme, 'invalid_token', 'expired');
    if (token.jkt) {
      if (scheme.toLowerCase() !== 'dpop') throw new Unauthorized('DPoP', 'invalid_token', 'DPoP-bound token sent as Bearer');
      await checkProof(req, value, token.jkt);
    } else if (scheme.toLowerCase() !== 'bearer') {
      throw new Unauthorized('Bearer', 'invalid_token', 'Bearer token sent as DPoP');
    }
  } catch (err) {
    if (err instanceof Unauthorized) bump(c.api.errors, err.error === 'invalid_token' ? err.message : err.error);
    throw err;
  }
  c.api.ok += 1;
  c.api.tokens.add(fingerprint(value));
  return { sub: token.accountId ?? null, client_id: token.clientId, dpop: Boolean(token.jkt) };
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

resourceServer.on('request', async (req, res) => {
  const url = new URL(req.url, resource);
  try {
    if (req.method === 'GET' && url.pathname === '/stats') {
      const body = statsJson();
      if (url.searchParams.get('reset') === '1') resetStats();
      send(res, 200, body);
    } else if (req.method === 'GET' && url.pathname === '/api/me') {
      const body = await apiMe(req);
      send(res, 200, body, req.headers.dpop ? { 'DPoP-Nonce': currentNonce() } : {});
    } else {
      send(res, 404, { error: 'not_found' });
    }
  } catch (err) {
    if (!(err instanceof Unauthorized)) {
      stats.serverErrors.push(String(err?.stack ?? err));
      console.error('resource server error', err);
      send(res, 500, { error: 'server_error' });
      return;
    }
    const challenge = `${err.scheme} error="${err.error}", error_description="${err.message}"`;
    const algs = err.scheme === 'DPoP' ? `, algs="${DPOP_ALGS.join(' ')}"` : '';
    send(res, 401, { error: err.error, error_description: err.message }, {
      'WWW-Authenticate': challenge + algs,
      ...err.headers,
    });
  }
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    issuerServer.close();
    resourceServer.close();
    process.exit(0);
  });
}

console.log(JSON.stringify({ issuer, resource }));
