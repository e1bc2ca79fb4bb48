// A real OpenID Provider for Keyward's SSO tests: panva's oidc-provider (certified), on
// loopback, with a fresh RS256 signing key per run and its development login/consent pages.
//
// Environment:
//   IDP_PORT      port to listen on (default 0: a free port)
//   IDP_CLIENTS   JSON array of clients: [{"client_id", "client_secret", "redirect_uris": [...]}]
//   IDP_ACCOUNTS  JSON object: {"<login>": {"email", "email_verified", "name"}}; a login that is
//                 not listed gets email <login> (when it contains "@"), unverified
// Prints "READY <issuer>" on stdout once it accepts requests.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const clients = JSON.parse(process.env.IDP_CLIENTS || '[]');
const accounts = JSON.parse(process.env.IDP_ACCOUNTS || '{}');

// A fresh signing key per run (without one, oidc-provider signs with a publicly known key).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const server = createServer();
server.listen(Number(process.env.IDP_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      ...c,
    })),
    jwks: { keys: [jwk] },
    pkce: { required: () => true },
    // Put email and name in the ID token too (not only at the userinfo endpoint).
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 600,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
    },
    async findAccount(_ctx, id) {
      const known = accounts[id];
      const claims = known ?? { email: id.includes('@') ? id : `${id}@example.invalid`, email_verified: false, name: id };
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...claims };
        },
      };
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('idp server_error', err));
  server.on('request', provider.callback());
  console.log(`READY ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
