// A real OpenID provider (panva/oidc-provider) for the Airlock tests, on loopback only.
//
//   node provider.mjs <port>
//
// Issues JWT access tokens through the client-credentials grant for the resource `urn:airlock`
// (audience `airlock`): client `agent` gets RS256 tokens with groups ["agents"], client `ops` gets
// ES256 tokens with groups ["ehr-readers"]. Signing keys are generated at start-up. Prints one
// line `READY <issuer>` once it accepts connections.
import * as crypto from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs <port>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const jwk = (type, options, kid, alg) => ({
  ...crypto.generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
  kid,
  alg,
  use: 'sig',
});

const clients = {
  agent: { secret: 'agent-secret', alg: 'RS256', groups: ['agents'] },
  ops: { secret: 'ops-secret', alg: 'ES256', groups: ['ehr-readers'] },
};

const provider = new Provider(issuer, {
  clients: Object.entries(clients).map(([id, c]) => ({
    client_id: id,
    client_secret: c.secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'read',
  })),
  jwks: {
    keys: [
      jwk('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'),
      jwk('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256'),
    ],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:airlock',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => {
        if (resource !== 'urn:airlock') throw new Error(`unknown resource ${resource}`);
        return {
          scope: 'read',
          audience: 'airlock',
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: clients[client.clientId].alg } },
        };
      },
    },
  },
  scopes: ['openid', 'read'],
  extraTokenClaims: (ctx, token) => ({ groups: clients[token.clientId]?.groups ?? [] }),
});
provider.proxy = false;

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
