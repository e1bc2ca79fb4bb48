// Keyward's dashboard, end to end in Debian's Chromium. Each journey runs on SQLite and on
// Postgres (Postgres is skipped with a notice when it does not answer, unless
// KEYWARD_REQUIRE_POSTGRES=1). Screenshots land in tests/e2e/output (and, with
// KEYWARD_SCREENSHOTS_DIR=docs/screenshots, the README's).

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';

import {
  BRANDING,
  PASSWORD,
  IDP_CLIENT,
  acceptDialogs,
  closeBrowser,
  newContext,
  postgresAvailable,
  shot,
  startKeyward,
  freePort,
} from './harness.mjs';
import { startTeamApp } from '../../examples/team-app.mjs';

const requirePostgres = process.env.KEYWARD_REQUIRE_POSTGRES === '1';
const pg = postgresAvailable();
if (!pg && requirePostgres) throw new Error('Postgres is required but not reachable');
const backends = (pg ? ['sqlite', 'postgres'] : ['sqlite']).filter(
  (b) => !process.env.E2E_BACKENDS || process.env.E2E_BACKENDS.split(',').includes(b),
);
if (!pg) console.log('NOTE: Postgres not reachable: e2e journeys run on SQLite only');

after(closeBrowser);

const IDP_ACCOUNTS = {
  teammate: { email: 'teammate@acme.test', email_verified: true, name: 'Tea Mate' },
};

/** Signs up, confirms the address with the emailed link, then signs in (the link never
 * signs in by itself). */
async function signUp(app, page, email, name = '') {
  await page.goto('/signup');
  await page.getByLabel('Email').fill(email);
  if (name) await page.getByLabel('Name').fill(name);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Check your inbox' }).waitFor();
  await page.goto(await app.verificationLink(email));
  await page.getByRole('button', { name: `Confirm ${email}` }).click();
  await page.getByRole('heading', { name: 'Email address confirmed' }).waitFor();
  await signIn(page, email);
}

async function signIn(page, email) {
  await page.goto('/login');
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL('**/settings/api-keys');
}

/** Creates a key through the form; returns { id, key } from the "created" page. */
/** RFC 6238 (SHA-1, 6 digits, 30 s) from the base32 secret the enrolment page shows. */
function totp(secret, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(n).padStart(6, '0');
}

/** Waits into a later 30-second step, so that a new code is not refused as already used. */
async function nextStep(page) {
  await page.waitForTimeout(30_000 - (Date.now() % 30_000) + 200);
}

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL('**/login?reason=signed_out');
}

async function createKey(page, { name, scopes = ['read', 'write'], expiry = '30d' }) {
  await page.goto('/settings/api-keys/new');
  await page.getByLabel('Name').fill(name);
  await page.getByRole('radio', { name: /Live/ }).check();
  await page.getByRole('radio', { name: /Custom/ }).check();
  for (const s of scopes) await page.locator(`input[name="scopes"][value="${s}"]`).check();
  await page.getByLabel('Expiration').selectOption(expiry);
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.waitForSelector('#new-key');
  const key = (await page.locator('#new-key').textContent()).trim();
  const id = (await page.getByRole('link', { name: /view the key/ }).getAttribute('href')).split('/').pop();
  return { id, key };
}

async function newTeamOrg(page, name) {
  await page.goto('/orgs/new');
  await page.getByLabel('Name').fill(name);
  await page.getByRole('button', { name: /Create organization/ }).click();
  await page.waitForURL('**/settings/api-keys');
}

for (const backend of backends) {
  describe(`on ${backend}`, () => {
    test('1. sign up, create a key, copy it, verify it, see "last used", never see it again', async () => {
      const app = await startKeyward(backend);
      const context = await newContext(app.base);
      try {
        const page = await context.newPage();
        await signUp(app, page, 'ada@example.com', 'Ada');
        // Landed in the personal organization, on an empty API keys page.
        await assert.doesNotReject(page.getByRole('heading', { name: 'No API keys yet' }).waitFor());
        assert.match(await page.locator('.sidenav-title').first().textContent(), /Ada/);
        // The deployment's branding (harness BRANDING): name, accent colour, favicon.
        assert.equal(await page.title(), `API keys · ${BRANDING.KEYWARD_PRODUCT_NAME}`);
        assert.equal(await page.locator('header .brand').textContent(), BRANDING.KEYWARD_PRODUCT_NAME);
        assert.equal(
          await page.getByRole('link', { name: 'Create API key' }).first().evaluate((el) => getComputedStyle(el).backgroundColor),
          'rgb(15, 118, 110)',
        );
        assert.equal((await page.request.get('/favicon.ico')).status(), 200);
        await shot(page, `keys-empty-${backend}`, { readme: backend === 'sqlite' });

        const { id, key } = await createKey(page, { name: 'Billing worker', scopes: ['read', 'write'] });
        assert.match(key, /^kw_live_[0-9A-Za-z]{49}$/);
        assert.ok(await page.getByText('You will not see it again').isVisible());
        for (const snippet of ['curl', 'Python (requests)', 'Node.js (fetch)']) {
          assert.ok(await page.getByRole('heading', { name: snippet }).isVisible(), snippet);
        }
        await shot(page, `key-created-${backend}`, { readme: backend === 'sqlite' });
        await page.getByRole('button', { name: 'Copy' }).click();
        await page.getByText('Copied to clipboard.').waitFor();
        const copied = await page.evaluate(() => navigator.clipboard.readText());
        assert.equal(copied, key, 'the copy button put the key on the clipboard');

        const v = await app.verify(copied, ['read']);
        assert.equal(v.valid, true, JSON.stringify(v));
        assert.equal(v.key_id, id);

        // Usage is flushed every second: the list shows "last used".
        let lastUsed = '';
        for (let i = 0; i < 30 && !/ago|just now/i.test(lastUsed); i++) {
          await page.waitForTimeout(300);
          await page.goto('/settings/api-keys');
          lastUsed = await page.locator('tr', { hasText: 'Billing worker' }).innerText();
        }
        assert.match(lastUsed, /ago|just now/i, lastUsed);
        await shot(page, `keys-list-${backend}`, { readme: backend === 'sqlite' });

        // The created page, reloaded (a re-POST), never shows the key again.
        await page.goBack();
        await page.goBack();
        await page.reload();
        assert.ok(!(await page.content()).includes(key), 'the key is not shown again');
      } finally {
        await context.close();
        await app.stop();
      }
    });

    test('2. roll with a 1-hour grace, revoke the old key, audit log filtered and exported', async () => {
      const app = await startKeyward(backend);
      const context = await newContext(app.base);
      try {
        const page = await context.newPage();
        const dialogs = acceptDialogs(page);
        await signUp(app, page, 'roller@example.com');
        const { id: oldId, key: oldKey } = await createKey(page, { name: 'Deploy bot' });

        await page.goto(`/settings/api-keys/${oldId}`);
        await shot(page, `key-detail-${backend}`, { readme: backend === 'sqlite' });
        await page.getByLabel('Current key stops working').selectOption('1h');
        await page.getByRole('button', { name: 'Roll key' }).click();
        await page.waitForSelector('#new-key');
        assert.match(dialogs.at(-1), /Roll “Deploy bot”/, 'the confirmation names the key');
        const newKey = (await page.locator('#new-key').textContent()).trim();
        assert.notEqual(newKey, oldKey);
        assert.ok(await page.getByText('keeps working until').isVisible());
        for (const k of [oldKey, newKey]) assert.equal((await app.verify(k)).valid, true);

        await page.goto(`/settings/api-keys/${oldId}`);
        await page.getByRole('button', { name: 'Revoke “Deploy bot”' }).click();
        await page.waitForURL(`**/settings/api-keys/${oldId}`);
        assert.match(dialogs.at(-1), /Revoke “Deploy bot” now\?/);
        assert.ok(await page.getByText(/revoked/i).first().isVisible());
        assert.equal((await app.verify(oldKey)).valid, false);
        assert.equal((await app.verify(newKey)).valid, true);

        await page.goto(`/settings/audit-log?key=${oldId}`);
        const log = await page.locator('main').innerText();
        for (const what of ['Key created', 'Key rolled', 'Key revoked']) assert.ok(log.includes(what), what);
        await shot(page, `audit-log-${backend}`, { readme: backend === 'sqlite' });
        const [download] = await Promise.all([
          page.waitForEvent('download'),
          page.getByRole('link', { name: 'Export CSV' }).click(),
        ]);
        const csv = readFileSync(await download.path(), 'utf8');
        assert.match(download.suggestedFilename(), /^keyward-audit-.*\.csv$/);
        for (const action of ['key.created', 'key.rolled', 'key.revoked']) assert.ok(csv.includes(action), action);
      } finally {
        await context.close();
        await app.stop();
      }
    });

    test('3. an admin invites a viewer, who sees keys but cannot change them', async () => {
      const app = await startKeyward(backend);
      const adminCtx = await newContext(app.base);
      const viewerCtx = await newContext(app.base);
      try {
        const admin = await adminCtx.newPage();
        await signUp(app, admin, 'boss@example.com');
        await newTeamOrg(admin, 'Acme');
        await createKey(admin, { name: 'Team key' });
        await admin.goto('/settings/members');
        await admin.getByLabel('Email').fill('viewer@example.com');
        await admin.getByLabel('Role').selectOption('viewer');
        await admin.getByRole('button', { name: 'Create invitation' }).click();
        const link = (await admin.locator('#invite-link').textContent()).trim();

        const viewer = await viewerCtx.newPage();
        await viewer.goto(link);
        await viewer.getByRole('link', { name: 'Create an account' }).click();
        await viewer.getByLabel('Password', { exact: true }).fill(PASSWORD);
        await viewer.getByRole('button', { name: 'Create account' }).click();
        await viewer.waitForURL('**/settings/api-keys');
        const body = await viewer.locator('main').innerText();
        assert.ok(body.includes('Team key'), 'the viewer sees the org\'s keys');
        assert.equal(await viewer.getByRole('link', { name: /Create/ }).count(), 0, 'no create control');
        await viewer.getByRole('link', { name: 'Team key' }).click();
        assert.equal(await viewer.getByRole('button', { name: /Revoke/ }).count(), 0, 'no revoke control');
        assert.equal(await viewer.getByRole('button', { name: /Roll/ }).count(), 0, 'no roll control');
        await shot(viewer, `viewer-key-${backend}`);
        // A forged POST (with the viewer's own valid CSRF token) is refused.
        const csrf = await viewer.locator('meta[name="csrf-token"]').getAttribute('content');
        const org = await viewer.locator('#org-switch').inputValue();
        const res = await viewer.request.post('/settings/api-keys', {
          form: { csrf, org, name: 'forged', environment: 'live', preset: 'Admin', expiry: 'never' },
        });
        assert.equal(res.status(), 403);
      } finally {
        await adminCtx.close();
        await viewerCtx.close();
        await app.stop();
      }
    });

    test('4. SSO: an admin connects the test provider; a teammate continues with SSO and lands in the org', async () => {
      const app = await startKeyward(backend, { idpAccounts: IDP_ACCOUNTS });
      const adminCtx = await newContext(app.base);
      const mateCtx = await newContext(app.base);
      try {
        const admin = await adminCtx.newPage();
        await signUp(app, admin, 'owner@acme.test');
        await newTeamOrg(admin, 'Acme');
        await admin.goto('/settings/sso/new');
        await admin.getByLabel('Name').fill('Acme IdP');
        await admin.getByLabel('Issuer URL').fill(app.idp.issuer);
        await admin.getByLabel('Client ID').fill(IDP_CLIENT.id);
        await admin.getByLabel('Client secret').fill(IDP_CLIENT.secret);
        await admin.getByLabel('Email domains').fill('acme.test');
        await admin.getByLabel('Role of new members').selectOption('developer');
        await admin.getByRole('button', { name: 'Add connection' }).click();
        await admin.getByRole('button', { name: 'Test connection' }).click();
        await admin.getByText('Connection works.').waitFor();
        await shot(admin, `sso-connection-${backend}`, { readme: backend === 'sqlite' });

        const mate = await mateCtx.newPage();
        await mate.goto('/login');
        await mate.getByLabel('Work email').fill('teammate@acme.test');
        await mate.getByRole('button', { name: 'Continue with SSO' }).click();
        // The provider's own login and consent pages.
        await mate.locator('input[name="login"]').fill('teammate');
        await mate.locator('input[name="password"]').fill('anything');
        await mate.getByRole('button', { name: 'Sign-in' }).click();
        await mate.getByRole('button', { name: 'Continue' }).click();
        await mate.waitForURL(`${app.base}/settings/api-keys`);
        assert.ok(await mate.getByText('You joined through Acme IdP').isVisible());
        assert.equal(await mate.locator('#org-switch option:checked').textContent(), 'Acme');
        assert.match(await mate.locator('.badge-role').first().textContent(), /developer/);
        await shot(mate, `sso-landed-${backend}`);
      } finally {
        await adminCtx.close();
        await mateCtx.close();
        await app.stop();
      }
    });

    test('5. keyboard only: sign in and create a key without the mouse', async () => {
      const app = await startKeyward(backend);
      const setup = await newContext(app.base);
      const context = await newContext(app.base);
      try {
        await signUp(app, await setup.newPage(), 'keys@example.com');
        const page = await context.newPage();
        await page.goto('/login');
        // Tab order from the top: skip link, brand?, email.
        const focusOn = async (label) => {
          for (let i = 0; i < 40; i++) {
            await page.keyboard.press('Tab');
            const name = await page.evaluate(() => {
              const el = document.activeElement;
              if (!el) return '';
              const label = el.labels && el.labels[0];
              return (label?.textContent || el.getAttribute('aria-label') || el.textContent || '').trim();
            });
            if (name.startsWith(label)) return;
          }
          throw new Error(`never reached ${label} with Tab`);
        };
        const focusVisible = () =>
          page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle !== 'none');
        await focusOn('Email');
        assert.ok(await focusVisible(), 'focus is visible');
        await page.keyboard.type('keys@example.com');
        await page.keyboard.press('Tab');
        await page.keyboard.type(PASSWORD);
        await page.keyboard.press('Enter');
        await page.waitForURL('**/settings/api-keys');

        await focusOn('Create your first API key');
        await page.keyboard.press('Enter');
        await page.waitForURL('**/settings/api-keys/new');
        await focusOn('Name');
        await page.keyboard.type('Keyboard key');
        // Radio groups: Tab enters the group, arrow keys choose.
        const choose = async (name, label) => {
          await focusOnName(name);
          for (let i = 0; i < 10; i++) {
            const current = await page.evaluate(() => document.activeElement.labels[0].textContent.trim());
            if (current.startsWith(label)) {
              await page.keyboard.press('Space');
              return;
            }
            await page.keyboard.press('ArrowDown');
          }
          throw new Error(`no ${label} in ${name}`);
        };
        const focusOnName = async (name) => {
          for (let i = 0; i < 40; i++) {
            await page.keyboard.press('Tab');
            if ((await page.evaluate(() => document.activeElement?.name)) === name) return;
          }
          throw new Error(`never reached ${name} with Tab`);
        };
        await choose('environment', 'Live');
        await choose('preset', 'Read-only');
        await focusOn('Expiration');
        await page.keyboard.press('ArrowDown'); // 30 days
        assert.ok(await focusVisible());
        await focusOn('Create key');
        await page.keyboard.press('Enter');
        await page.waitForSelector('#new-key');
        const key = (await page.locator('#new-key').textContent()).trim();
        assert.equal((await app.verify(key, ['read'])).valid, true);
        // Every form control on the pages visited has a label.
        await page.goto('/settings/api-keys/new');
        const unlabelled = await page.evaluate(() =>
          [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map((el) => el.name),
        );
        assert.deepEqual(unlabelled, []);
      } finally {
        await setup.close();
        await context.close();
        await app.stop();
      }
    });

    test('6. at 375 px wide, and at 200% zoom: the key pages fit the screen', async () => {
      const app = await startKeyward(backend);
      // A phone, and a 1280 px window zoomed to 200% (640 CSS pixels at scale 2).
      const views = [
        { name: 'mobile', viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true },
        { name: 'zoom200', viewport: { width: 640, height: 400 }, deviceScaleFactor: 2 },
      ];
      const contexts = [];
      try {
        let id;
        for (const { name, ...options } of views) {
          const context = await newContext(app.base, options);
          contexts.push(context);
          const page = await context.newPage();
          if (!id) {
            await signUp(app, page, 'phone@example.com');
            ({ id } = await createKey(page, { name: 'Phone key' }));
          } else {
            await signIn(page, 'phone@example.com');
          }
          for (const path of ['/settings/api-keys', `/settings/api-keys/${id}`, '/settings/api-keys/new', '/settings/audit-log', '/settings/members']) {
            await page.goto(path);
            const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
            assert.ok(overflow <= 1, `${name} ${path} overflows by ${overflow}px`);
          }
          await page.goto('/settings/api-keys');
          await shot(page, `keys-${name}-${backend}`, { readme: backend === 'sqlite' && name === 'mobile' });
        }
      } finally {
        for (const c of contexts) await c.close();
        await app.stop();
      }
    });
    test('7. passkeys: enrol with the virtual authenticator, sign out, sign in with the passkey alone', async () => {
      const app = await startKeyward(backend, { host: 'localhost' });
      const context = await newContext(app.base);
      try {
        const page = await context.newPage();
        // Chromium's virtual authenticator: a platform passkey with user verification.
        const cdp = await context.newCDPSession(page);
        await cdp.send('WebAuthn.enable');
        const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
          options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
        });
        acceptDialogs(page);
        await signUp(app, page, 'passkey@example.com');
        await page.goto('/settings/account');
        await page.getByRole('link', { name: 'Security settings' }).click();
        await page.getByLabel('Name for a new passkey').fill('Virtual laptop');
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        // The first factor comes with recovery codes, shown once.
        await page.waitForURL('**/settings/account/security/recovery-codes');
        assert.equal(await page.locator('#recovery-codes li').count(), 10);
        await shot(page, `recovery-codes-${backend}`);
        await page.getByRole('link', { name: 'I have saved them' }).click();
        await page.getByRole('cell', { name: 'Virtual laptop' }).waitFor();
        await shot(page, `security-${backend}`);
        const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
        assert.equal(credentials.length, 1);
        assert.equal(credentials[0].isResidentCredential, true, 'a discoverable credential');

        await signOut(page);
        await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
        await page.waitForURL('**/settings/api-keys');
        await page.goto('/settings/audit-log');
        await page.getByText('"method":"passkey"').first().waitFor();

        // As the second step after the password, too.
        await signOut(page);
        await page.getByLabel('Email', { exact: true }).fill('passkey@example.com');
        await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
        await page.getByRole('button', { name: 'Sign in', exact: true }).click();
        await page.waitForURL('**/login/two-step');
        await page.getByRole('button', { name: 'Use a passkey' }).click();
        await page.waitForURL('**/settings/api-keys');
        await page.goto('/settings/account/security');
        assert.doesNotMatch(await page.locator('tr', { hasText: 'Virtual laptop' }).innerText(), /Never/);
      } finally {
        await context.close();
        await app.stop();
      }
    });

    test('8. authenticator app: enrol from the shown secret, sign in with password + code; a recovery code works once', async () => {
      const app = await startKeyward(backend);
      const context = await newContext(app.base);
      try {
        const page = await context.newPage();
        await signUp(app, page, 'totp@example.com');
        await page.goto('/settings/account/security');
        await page.getByRole('link', { name: 'Set up an authenticator app' }).click();
        assert.equal(await page.locator('.qr svg').count(), 1, 'a QR code drawn by the server');
        const secret = (await page.locator('#totp-secret').textContent()).trim();
        await page.getByLabel('Code from the app').fill(totp(secret));
        await page.getByRole('button', { name: 'Turn on' }).click();
        await page.waitForURL('**/settings/account/security/recovery-codes');
        const codes = await page.locator('#recovery-codes li').allTextContents();
        assert.equal(codes.length, 10);
        await page.getByRole('link', { name: 'I have saved them' }).click();
        await page.getByText('You have 10 unused recovery codes').waitFor();

        await signOut(page);
        await nextStep(page);
        await page.getByLabel('Email', { exact: true }).fill('totp@example.com');
        await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
        await page.getByRole('button', { name: 'Sign in', exact: true }).click();
        await page.waitForURL('**/login/two-step');
        await shot(page, `two-step-${backend}`);
        await page.getByLabel('Code from your authenticator app').fill(totp(secret));
        await page.getByRole('button', { name: 'Verify' }).click();
        await page.waitForURL('**/settings/api-keys');

        // A recovery code: once.
        for (const attempt of ['first', 'second']) {
          await signOut(page);
          await page.getByLabel('Email', { exact: true }).fill('totp@example.com');
          await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
          await page.getByRole('button', { name: 'Sign in', exact: true }).click();
          await page.waitForURL('**/login/two-step');
          await page.getByText('Use a recovery code').click();
          await page.getByLabel('Recovery code').fill(codes[0]);
          await page.getByRole('button', { name: 'Use recovery code' }).click();
          if (attempt === 'first') {
            await page.waitForURL('**/settings/api-keys');
            await page.getByText('You have 9 recovery codes left.').waitFor();
          } else {
            await page.getByText('That recovery code is not right, or it was already used.').waitFor();
            assert.match(page.url(), /\/login\/two-step$/);
          }
        }
      } finally {
        await context.close();
        await app.stop();
      }
    });
    test('9. the team\'s app hands its signed-in user to Keyward: they create a key and go back', async () => {
      const operatorToken = 'e2e-operator-token-7f3a9c';
      const teamPort = await freePort();
      const app = await startKeyward(backend, {
        env: {
          KEYWARD_OPERATOR_TOKENS: `acme=${operatorToken}`,
          KEYWARD_PORTAL_RETURN_ORIGINS: `http://127.0.0.1:${teamPort}`,
        },
      });
      const team = await startTeamApp({ keyward: app.base, operatorToken, port: teamPort });
      const context = await newContext(app.base);
      try {
        const page = await context.newPage();
        await page.goto(`${team.base}/`);
        await page.getByRole('link', { name: 'Manage API keys' }).click();
        // No second account, no password: the link says whom and where, one click on.
        await page.getByText('ada@acme.test').waitFor();
        await page.getByRole('button', { name: 'Continue' }).click();
        await page.waitForURL(`${app.base}/settings/api-keys`);
        assert.match(await page.locator('.sidenav-title').first().textContent(), /Acme Corp/);
        const { key } = await createKey(page, { name: 'From the team app', scopes: ['read'] });
        const v = await app.verify(key, ['read']);
        assert.equal(v.valid, true);
        assert.equal(v.external_org_id, 'cus_acme', 'the team knows its customer without a lookup');
        await page.goto('/settings/api-keys');
        await shot(page, `portal-keys-${backend}`);
        await page.getByRole('link', { name: /Back to/ }).click();
        await page.waitForURL(`${team.base}/`);
        await page.getByRole('heading', { name: 'Acme Cloud' }).waitFor();
        // The same person coming back is the same account, with the key still there.
        await page.getByRole('link', { name: 'Manage API keys' }).click();
        await page.getByRole('button', { name: 'Continue' }).click();
        await page.waitForURL(`${app.base}/settings/api-keys`);
        await page.getByText('From the team app').first().waitFor();
      } finally {
        await context.close();
        await team.close();
        await app.stop();
      }
    });
  });
}
