/*
 * Keyward — progressive enhancement.
 *
 * The site works without this file (except copy-to-clipboard). It is served
 * under a strict CSP (script-src 'self'): no inline handlers, no eval.
 * Everything is scoped inside the DOMContentLoaded callback; no globals.
 */
document.addEventListener('DOMContentLoaded', function () {
  'use strict';

  /* ------------------------------------------------------------------
   * Live region for screen-reader announcements
   * ------------------------------------------------------------------ */
  function getLiveRegion() {
    var region = document.getElementById('live-region');
    if (!region) {
      region = document.createElement('div');
      region.id = 'live-region';
      region.className = 'sr-only';
      region.setAttribute('aria-live', 'polite');
      region.setAttribute('role', 'status');
      document.body.appendChild(region);
    }
    return region;
  }

  function announce(message) {
    var region = getLiveRegion();
    // Clear first so repeating the same message is announced again.
    region.textContent = '';
    window.setTimeout(function () {
      region.textContent = message;
    }, 50);
  }

  // Create the region up front so it already exists when content changes
  // (some screen readers ignore regions inserted at announcement time).
  getLiveRegion();

  /* ------------------------------------------------------------------
   * Hide no-JS fallbacks (e.g. the org switcher's submit button)
   * ------------------------------------------------------------------ */
  document.querySelectorAll('.js-hide').forEach(function (el) {
    el.hidden = true;
  });

  /* ------------------------------------------------------------------
   * Copy to clipboard: button[data-copy-target="<selector>"]
   * ------------------------------------------------------------------ */

  // Fallback for browsers/contexts without the async Clipboard API
  // (e.g. plain HTTP on a non-localhost host).
  function legacyCopy(el) {
    var selection = window.getSelection();
    var range = document.createRange();
    range.selectNodeContents(el);
    selection.removeAllRanges();
    selection.addRange(range);
    var ok = false;
    try {
      ok = document.execCommand('copy');
    } catch (e) {
      ok = false;
    }
    // Leave the text selected on failure so the user can press Ctrl/Cmd+C.
    if (ok) {
      selection.removeAllRanges();
    }
    return ok;
  }

  function copyText(el) {
    var text = el.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(
        function () { return true; },
        function () { return legacyCopy(el); }
      );
    }
    return Promise.resolve(legacyCopy(el));
  }

  document.querySelectorAll('button[data-copy-target]').forEach(function (button) {
    var original = button.textContent;
    var resetTimer = null;

    button.addEventListener('click', function (event) {
      event.preventDefault();
      var target = null;
      try {
        target = document.querySelector(button.getAttribute('data-copy-target'));
      } catch (e) {
        target = null; // invalid selector
      }
      if (!target) {
        return;
      }

      copyText(target).then(function (ok) {
        if (!ok) {
          announce('Copy failed. The text is selected; press Ctrl+C or Cmd+C to copy it.');
          return;
        }
        button.textContent = 'Copied!';
        announce('Copied to clipboard.');
        window.clearTimeout(resetTimer);
        resetTimer = window.setTimeout(function () {
          button.textContent = original;
        }, 2000);
      });
    });
  });

  /* ------------------------------------------------------------------
   * Confirmation before destructive submits: form[data-confirm]
   * ------------------------------------------------------------------ */
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });

  /* ------------------------------------------------------------------
   * Auto-submit selects: select[data-autosubmit] (org switcher)
   * ------------------------------------------------------------------ */
  document.querySelectorAll('select[data-autosubmit]').forEach(function (select) {
    select.addEventListener('change', function () {
      var form = select.form;
      if (!form) {
        return;
      }
      // requestSubmit fires submit listeners (e.g. data-confirm); fall back
      // to submit() in older browsers.
      if (typeof form.requestSubmit === 'function') {
        form.requestSubmit();
      } else {
        form.submit();
      }
    });
  });

  /* ------------------------------------------------------------------
   * Custom expiry: show #custom-expiry-field only when "custom" chosen.
   * Driven by select[name=expiry] or input[type=radio][name=expiry].
   * Without JS the field simply stays visible.
   * ------------------------------------------------------------------ */
  var customField = document.getElementById('custom-expiry-field');
  var expirySelect = document.querySelector('select[name="expiry"]');
  var expiryRadios = document.querySelectorAll('input[type="radio"][name="expiry"]');

  if (customField && (expirySelect || expiryRadios.length)) {
    var currentExpiry = function () {
      if (expirySelect) {
        return expirySelect.value;
      }
      var checked = document.querySelector('input[type="radio"][name="expiry"]:checked');
      return checked ? checked.value : '';
    };

    var updateCustomField = function () {
      var show = currentExpiry() === 'custom';
      customField.hidden = !show;
      // Keep hidden inputs out of the tab order and out of validation.
      customField.querySelectorAll('input, select, textarea').forEach(function (input) {
        input.disabled = !show;
      });
    };

    if (expirySelect) {
      expirySelect.addEventListener('change', updateCustomField);
    }
    expiryRadios.forEach(function (radio) {
      radio.addEventListener('change', updateCustomField);
    });

    updateCustomField();
  }

  /* ------------------------------------------------------------------
   * Show/hide password: button[data-toggle-password="#id"] (hidden in
   * the HTML so it only appears when this script runs).
   * ------------------------------------------------------------------ */
  document.querySelectorAll('button[data-toggle-password]').forEach(function (btn) {
    var input = document.querySelector(btn.getAttribute('data-toggle-password'));
    if (!input) {
      return;
    }
    btn.hidden = false;
    btn.setAttribute('aria-pressed', 'false');
    btn.addEventListener('click', function () {
      var show = input.type === 'password';
      input.type = show ? 'text' : 'password';
      btn.textContent = show ? 'Hide password' : 'Show password';
      btn.setAttribute('aria-pressed', show ? 'true' : 'false');
    });
  });
});
