// The deploying team's own app, in miniature: it has its own users and sessions, and its
// "API keys" link hands the signed-in user over to Keyward (README: "Putting Keyward in
// front of your customers"). No dependencies beyond Node.js 18+.
//
//   KEYWARD_URL=http://127.0.0.1:8080 KEYWARD_OPERATOR_TOKEN=… PORT=3000 node examples/team-app.mjs
//
// Keyward must allow this app's origin as a return URL:
//   KEYWARD_PORTAL_RETURN_ORIGINS=http://127.0.0.1:3000

import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

/** This app's signed-in user (a real app reads it from its own session). */
const USER = {
  id: 'user_8431',
  email: 'ada@acme.test',
  name: 'Ada Lovelace',
  customer: { id: 'cus_acme', name: 'Acme Corp' },
  role: 'admin',
};

/**
 * Starts the app on 127.0.0.1:`port`; answers { base, close() }.
 * `keyward` is Keyward's base URL, `operatorToken` an operator credential.
 */
export async function startTeamApp({ keyward, operatorToken, port = 0, user = USER, product = 'Acme Cloud' }) {
  const server = createServer(async (req, res) => {
    const base = `http://127.0.0.1:${server.address().port}`;
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><title>${product}</title><h1>${product}</h1>
<p>Signed in as ${user.email} (${user.customer.name}).</p>
<p><a href="/api-keys">Manage API keys</a></p>`);
      return;
    }
    if (req.url === '/api-keys') {
      // Server to server: ask Keyward for a single-use sign-in link for this user.
      const answer = await fetch(`${keyward}/api/v1/portal/sessions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${operatorToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          external_user_id: user.id,
          email: user.email,
          name: user.name,
          organization: { external_id: user.customer.id, name: user.customer.name },
          role: user.role,
          return_url: `${base}/`,
        }),
      });
      const body = await answer.json();
      if (answer.status !== 201) {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`Keyward refused the hand-off: ${JSON.stringify(body.error)}`);
        return;
      }
      // The browser opens the link: Keyward signs the user in and shows their API keys.
      res.writeHead(303, { location: body.data.url });
      res.end();
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const app = await startTeamApp({
    keyward: process.env.KEYWARD_URL || 'http://127.0.0.1:8080',
    operatorToken: process.env.KEYWARD_OPERATOR_TOKEN,
    port: Number(process.env.PORT || 3000),
  });
  console.log(`team app on ${app.base}: open it and follow "Manage API keys"`);
}
