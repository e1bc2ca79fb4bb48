/*
 * Keyward — passkeys (WebAuthn). Served under the strict CSP (script-src 'self').
 *
 * Buttons declare what they do:
 *   data-passkey="register"  data-options="…" data-finish="…" data-name-input="#id"
 *   data-passkey="assert"    data-options="…" data-finish="…" [data-next="/path"]
 * and carry the session's CSRF token in data-csrf. The server keeps each ceremony's
 * state; this file only moves bytes between it and navigator.credentials.
 */
document.addEventListener('DOMContentLoaded', function () {
  'use strict';

  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) { b64 += '='; }
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buf) {
    var bytes = new Uint8Array(buf);
    var bin = '';
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function status(button, message) {
    var target = document.querySelector(button.getAttribute('data-status') || '#passkey-status');
    if (target) {
      target.textContent = message;
      target.hidden = !message;
    }
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: {
        'Content-Type': 'application/json',
        'Accept': 'application/json',
        'X-CSRF-Token': csrf
      },
      body: JSON.stringify(body || {})
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (json) {
        return { ok: res.ok, json: json };
      });
    });
  }

  /* Answers that are not a success: a step-up page to visit, or a message to show. */
  function handleError(button, answer) {
    var err = answer.json && answer.json.error;
    if (err && err.confirm) {
      window.location.assign(err.confirm);
      return;
    }
    if (answer.json && answer.json.redirect) {
      window.location.assign(answer.json.redirect);
      return;
    }
    status(button, (err && err.message) || 'Something went wrong. Reload the page and try again.');
  }

  function register(button) {
    var csrf = button.getAttribute('data-csrf');
    var nameInput = document.querySelector(button.getAttribute('data-name-input'));
    return post(button.getAttribute('data-options'), csrf).then(function (answer) {
      if (!answer.ok) { return handleError(button, answer); }
      var pk = answer.json.publicKey;
      pk.challenge = toBytes(pk.challenge);
      pk.user.id = toBytes(pk.user.id);
      (pk.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
      return navigator.credentials.create({ publicKey: pk }).then(function (cred) {
        var body = {
          name: nameInput ? nameInput.value : '',
          credential: {
            id: cred.id,
            rawId: toB64url(cred.rawId),
            type: cred.type,
            response: {
              attestationObject: toB64url(cred.response.attestationObject),
              clientDataJSON: toB64url(cred.response.clientDataJSON),
              transports: cred.response.getTransports ? cred.response.getTransports() : []
            },
            extensions: cred.getClientExtensionResults()
          }
        };
        return post(button.getAttribute('data-finish'), csrf, body);
      }).then(function (done) {
        if (done.ok && done.json.redirect) {
          window.location.assign(done.json.redirect);
        } else {
          handleError(button, done);
        }
      });
    });
  }

  function assert(button) {
    var csrf = button.getAttribute('data-csrf');
    return post(button.getAttribute('data-options'), csrf).then(function (answer) {
      if (!answer.ok) { return handleError(button, answer); }
      var pk = answer.json.publicKey;
      pk.challenge = toBytes(pk.challenge);
      (pk.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
      return navigator.credentials.get({ publicKey: pk }).then(function (cred) {
        var userHandle = cred.response.userHandle;
        var body = {
          next: button.getAttribute('data-next') || undefined,
          credential: {
            id: cred.id,
            rawId: toB64url(cred.rawId),
            type: cred.type,
            response: {
              authenticatorData: toB64url(cred.response.authenticatorData),
              clientDataJSON: toB64url(cred.response.clientDataJSON),
              signature: toB64url(cred.response.signature),
              userHandle: userHandle ? toB64url(userHandle) : null
            },
            extensions: cred.getClientExtensionResults()
          }
        };
        return post(button.getAttribute('data-finish'), csrf, body);
      }).then(function (done) {
        if (done.ok && done.json.redirect) {
          window.location.assign(done.json.redirect);
        } else {
          handleError(button, done);
        }
      });
    });
  }

  document.querySelectorAll('[data-passkey]').forEach(function (button) {
    if (!window.PublicKeyCredential) {
      status(button, 'This browser cannot use passkeys.');
      button.disabled = true;
      return;
    }
    button.hidden = false;
    button.addEventListener('click', function () {
      status(button, '');
      button.disabled = true;
      var run = button.getAttribute('data-passkey') === 'register' ? register : assert;
      run(button).catch(function (e) {
        // The person cancelled, or the device refused.
        status(button, e && e.name === 'NotAllowedError'
          ? 'The passkey request was cancelled or timed out. Try again.'
          : 'Your device could not use a passkey here: ' + ((e && e.message) || 'unknown error') + '.');
      }).then(function () {
        button.disabled = false;
      });
    });
  });
});
