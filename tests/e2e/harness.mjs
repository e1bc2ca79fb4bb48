// The e2e harness: a fresh Keyward (the cargo-built binary) on a free loopback port with
// a fresh SQLite file or Postgres database, the test identity provider (tests/idp), and
// Debian's Chromium driven by playwright-core. Nothing leaves loopback: every browser
// request to another host is aborted.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '../..');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
export const PASSWORD = 'correct horse battery staple';
export const VERIFIER_TOKEN = 'e2e-verifier-token';
export const IDP_CLIENT = { id: 'keyward-e2e', secret: 'e2e-idp-client-secret-4b1c' };
export const PG_URL = process.env.KEYWARD_TEST_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Every journey runs on a branded deployment (README "Branding"), as a team that puts
 * Keyward in front of its customers does; the README's screenshots show it too.
 */
export const BRANDING = {
  KEYWARD_PRODUCT_NAME: 'Acme API',
  KEYWARD_ACCENT_COLOR: '#0f766e',
  KEYWARD_SUPPORT_URL: 'https://acme.example.com/support',
  KEYWARD_SUPPORT_EMAIL: 'api-support@acme.example.com',
};

/** Screenshots go to tests/e2e/output; with KEYWARD_SCREENSHOTS_DIR, the README's too. */
const OUT = join(here, 'output');
const README_SHOTS = process.env.KEYWARD_SCREENSHOTS_DIR;

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function keywardBinary() {
  const bin = process.env.KEYWARD_BIN || join(root, 'target/debug/keyward');
  if (!existsSync(bin)) {
    execFileSync('cargo', ['build', '--bin', 'keyward'], { cwd: root, stdio: 'inherit' });
  }
  return bin;
}

/** Waits until `url` answers 200. */
async function ready(url, what, child) {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start within 30 s`);
}

export function postgresAvailable() {
  try {
    execFileSync('psql', [PG_URL, '-qAtc', 'SELECT 1'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** The test identity provider (panva's oidc-provider) with a client for `redirectUri`. */
export async function startIdp(redirectUri, accounts) {
  const child = spawn('node', [join(root, 'tests/idp/provider.mjs')], {
    env: {
      ...process.env,
      IDP_PORT: '0',
      IDP_CLIENTS: JSON.stringify([
        { client_id: IDP_CLIENT.id, client_secret: IDP_CLIENT.secret, redirect_uris: [redirectUri] },
      ]),
      IDP_ACCOUNTS: JSON.stringify(accounts),
    },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const issuer = await new Promise((ok, fail) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/READY (\S+)/);
      if (m) ok(m[1]);
    });
    child.on('exit', (code) => fail(new Error(`identity provider exited with ${code}`)));
    setTimeout(() => fail(new Error('identity provider did not start')), 30_000);
  });
  child.stdout.resume();
  return { issuer, stop: () => child.kill('SIGTERM') };
}

/**
 * A fresh Keyward on `backend` ('sqlite' or 'postgres') plus the identity provider, at
 * `http://<host>:<port>`.
 * Returns { base, idp, verify(key, scopes), verificationLink(email), stop() }.
 */
export async function startKeyward(backend, { idpAccounts = {}, host = '127.0.0.1', env = {} } = {}) {
  const port = await freePort();
  // `host: 'localhost'` for passkeys: browsers offer them only to domain names.
  const base = `http://${host}:${port}`;
  const idp = await startIdp(`${base}/sso/callback`, idpAccounts);
  const dir = mkdtempSync(join(tmpdir(), 'keyward-e2e-'));
  let databaseUrl = `sqlite://${dir}/keyward.db`;
  let dropDb = null;
  if (backend === 'postgres') {
    const name = `kw_e2e_${process.pid}_${port}`;
    execFileSync('psql', [PG_URL, '-qc', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
    databaseUrl = PG_URL.replace(/\/[^/]*$/, `/${name}`);
    dropDb = () => execFileSync('psql', [PG_URL, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`], { stdio: 'pipe' });
  }
  const child = spawn(keywardBinary(), [], {
    env: {
      ...process.env,
      KEYWARD_BIND: `127.0.0.1:${port}`,
      KEYWARD_BASE_URL: base,
      DATABASE_URL: databaseUrl,
      KEYWARD_SECRETS_FILE: join(dir, 'keyward.secrets'),
      KEYWARD_VERIFIER_TOKENS: VERIFIER_TOKEN,
      KEYWARD_ALLOW_PRIVATE_NETWORKS: 'true',
      KEYWARD_API_BASE_URL: 'https://api.example.com',
      ...BRANDING,
      RUST_LOG: process.env.E2E_LOG ? 'info' : 'warn',
      ...env,
    },
    stdio: ['ignore', process.env.E2E_LOG ? 'inherit' : 'ignore', 'inherit'],
  });
  await ready(`${base}/healthz`, 'Keyward', child);
  return {
    base,
    idp,
    backend,
    /**
     * The path of the newest email-verification link sent to `email`, read from the
     * outbox as an operator does (`keyward mail outbox`, same database and secrets file;
     * the bodies are sealed at rest). Sign-up sends it in the background: waits up to 10 s.
     */
    async verificationLink(email) {
      for (let i = 0; i < 100; i++) {
        const out = execFileSync(keywardBinary(), ['mail', 'outbox', '--limit', '100'], {
          env: { ...process.env, DATABASE_URL: databaseUrl, KEYWARD_SECRETS_FILE: join(dir, 'keyward.secrets'), RUST_LOG: 'warn' },
          encoding: 'utf8',
        });
        // Newest first: "#id time to <recipient> [status] subject", then "  | body" lines.
        for (const block of out.split(/^(?=#\d+ )/m)) {
          if (!block.includes(` to ${email} [`) || !block.includes('Confirm your email address')) continue;
          const m = block.match(/\/verify-email\/[A-Za-z0-9_-]+/);
          if (m) return m[0];
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`no verification email to ${email}`);
    },
    async verify(key, scopes = []) {
      const res = await fetch(`${base}/v1/keys/verify`, {
        method: 'POST',
        headers: { authorization: `Bearer ${VERIFIER_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ key, scopes }),
      });
      return res.json();
    },
    async stop() {
      idp.stop();
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
      if (dropDb) dropDb();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let browser;
export async function launch() {
  browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  return browser;
}

export async function closeBrowser() {
  if (browser) await browser.close();
  browser = undefined;
}

/** A browser context that can reach only loopback, with clipboard access. */
export async function newContext(base, options = {}) {
  const b = await launch();
  const context = await b.newContext({ baseURL: base, acceptDownloads: true, ...options });
  context.setDefaultTimeout(10_000);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await context.route('**/*', (route) => {
    const { hostname } = new URL(route.request().url());
    if (hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]') {
      return route.continue();
    }
    return route.abort('blockedbyclient');
  });
  return context;
}

/** Saves a screenshot; `readme` ones also go to KEYWARD_SCREENSHOTS_DIR when set. */
export async function shot(page, name, { readme = false } = {}) {
  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
  if (readme && README_SHOTS) {
    mkdirSync(README_SHOTS, { recursive: true });
    const plain = name.replace(/-(sqlite|postgres)$/, '');
    await page.screenshot({ path: join(README_SHOTS, `${plain}.png`), fullPage: true });
  }
}

/** Accepts every confirm dialog, remembering its text. */
export function acceptDialogs(page) {
  const seen = [];
  page.on('dialog', async (d) => {
    seen.push(d.message());
    await d.accept();
  });
  return seen;
}
