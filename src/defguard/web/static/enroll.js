// The Edge's enrollment and password-reset pages. Every step calls the Edge's own
// JSON API, the routes the desktop client uses, and the Edge keeps the session in
// its HttpOnly cookie. Secrets (the new password, a private key made here, the TOTP
// secret, recovery codes) live only in this page's memory and leave the screen as
// soon as their step is over.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  // Python's string.punctuation: the set Core's password rule counts as "special".
  const PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  // Core's phone pattern (users/validation.py), matched against the whole value.
  const PHONE = /^(?:\+?\d{1,3}[ \t\n\r\f\v]?)?(?:\(\d{1,3}\)|\d{1,3})[- \t\n\r\f\v]?\d{1,4}[- \t\n\r\f\v]?\d{1,4}?$/;
  const PUBKEY = /^[A-Za-z0-9+/]{43}=$/;

  // The same rule as Core's check_password_strength, so the page says what is
  // missing before the last step rather than after it.
  function passwordProblem(password) {
    const chars = Array.from(password);
    if (chars.length < 8 || chars.length > 128) return "The password must be 8–128 characters long.";
    const missing = [];
    if (!chars.some((c) => PUNCTUATION.includes(c))) missing.push("a special character");
    if (!/[0-9]/.test(password)) missing.push("a digit");
    if (!/[a-z]/.test(password)) missing.push("a lowercase letter");
    if (!/[A-Z]/.test(password)) missing.push("an uppercase letter");
    return missing.length ? "The password must contain " + missing.join(", ") + "." : null;
  }

  // Takes the token out of the address bar so it stays out of history and screenshots.
  function takeToken() {
    const params = new URLSearchParams(window.location.search);
    const token = params.get("token");
    if (token === null) return "";
    params.delete("token");
    const rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
    return token.trim();
  }

  async function api(path, body) {
    let response;
    try {
      response = await fetch("/api/v1/" + path, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
    } catch (_) {
      return { ok: false, status: 0, json: null, message: "The server could not be reached. Check your connection and try again." };
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    const message = (json && typeof json === "object" && (json.error || json.msg)) || text || "";
    return { ok: response.ok, status: response.status, json, message: String(message) };
  }

  // Plain words for failures that are not about what the user typed.
  function explain(result) {
    switch (result.status) {
      case 0: return result.message;
      case 503: return "The service is not connected to Defguard right now. Try again in a minute.";
      case 429: return "Too many attempts. Wait a moment and try again.";
      case 408: return "The request took too long. Try again.";
      case 500: return "Something went wrong on the server. Try again, or contact your administrator.";
      default: return result.message || "The request failed (" + result.status + ").";
    }
  }

  function busy(el, on) {
    const buttons = el.tagName === "FORM" ? el.querySelectorAll("button[type=submit]") : [el];
    buttons.forEach((b) => {
      if (on) {
        b.dataset.label = b.innerHTML;
        b.disabled = true;
        b.innerHTML = '<span class="spinner" aria-hidden="true"></span> ' + (b.dataset.busy || el.dataset.busy || "Working…");
      } else if (b.dataset.label !== undefined) {
        b.disabled = false;
        b.innerHTML = b.dataset.label;
        delete b.dataset.label;
      }
    });
    el.setAttribute("aria-busy", on ? "true" : "false");
  }

  async function withBusy(el, work) {
    busy(el, true);
    try { return await work(); } finally { busy(el, false); }
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
    form.querySelectorAll(".form-error").forEach((e) => { e.textContent = ""; });
  }

  function formError(container, message) {
    const box = container.classList.contains("form-error") ? container : container.querySelector(".form-error");
    box.textContent = message;
  }

  function fieldError(form, name, message) {
    const input = form.querySelector(`[name="${name}"]`);
    const slot = form.querySelector(`.field-error[data-for="${name}"]`);
    if (!input || !slot) { formError(form, message); return; }
    slot.textContent = message;
    input.classList.add("invalid");
    input.focus();
  }

  function showSection(ids, id) {
    ids.forEach((s) => { $(s).hidden = s !== id; });
    window.scrollTo(0, 0);
    const first = $(id).querySelector("input:not([type=hidden]):not([hidden]):not([readonly]), button:not([hidden])");
    if (first && !first.closest("[hidden]")) first.focus({ preventScroll: true });
  }

  function text(tag, value, className) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (className) el.className = className;
    return el;
  }

  async function qrInto(box, value) {
    try {
      const svg = await window.defguard.qrFor(value);
      if (!svg.startsWith("<svg")) throw new Error("not an image");
      box.innerHTML = svg; // drawn by this Edge from path data only
    } catch (_) {
      box.replaceChildren(text("p", "The QR code is not available; use the text instead.", "small muted"));
    }
  }

  const LINK_REASONS = {
    "token expired": "The link has expired.",
    "invalid token": "The link is not valid: it was already used, replaced by a newer one, or mistyped.",
    "user is disabled": "Your account is disabled.",
    "user disabled": "Your account is disabled.",
    "user disabled or not yet enrolled": "The account is disabled, or has not finished its enrollment yet.",
    "Session expired": "Your session has expired: the link is valid only for a limited time.",
    "Missing authorization header": "Your session has ended: the page was open too long, or this browser blocks the site's cookies.",
  };

  function showLinkError(message, fallback) {
    $("link-error-reason").textContent = LINK_REASONS[message] || fallback;
  }

  // --- enrollment ---------------------------------------------------------------------

  function enrollmentPage() {
    const SECTIONS = ["token-step", "link-error", "client-only", "welcome-step", "password-step",
      "mfa-step", "device-step", "finish-step", "enrollment-done"];
    const state = { start: null, steps: [], password: "", phone: null, privateKey: null,
      recoveryCodes: null, mfa: null, device: null };
    const tokenForm = $("token-form");
    const passwordForm = $("password-form");
    const totpForm = $("totp-code-form");
    const emailForm = $("email-code-form");
    const deviceForm = $("device-form");

    function renderSteps(current) {
      const list = $("steps");
      const index = state.steps.findIndex((s) => s.section === current);
      const finished = current === "enrollment-done";
      list.hidden = !(index >= 0 || finished) || !state.steps.length;
      list.replaceChildren(...state.steps.map((step, i) => {
        const li = text("li", step.label);
        li.dataset.step = step.key;
        if (finished || i < index) li.className = "done";
        else if (i === index) { li.className = "current"; li.setAttribute("aria-current", "step"); }
        return li;
      }));
    }

    function show(id) {
      renderSteps(id);
      showSection(SECTIONS, id);
    }

    function forget() {
      state.password = "";
      state.privateKey = null;
      state.recoveryCodes = null;
      passwordForm.reset();
      $("totp-secret").textContent = "";
      $("totp-qr").replaceChildren();
      $("recovery-codes").replaceChildren();
      $("device-config-list").replaceChildren();
    }

    function linkError(message, fallback) {
      forget();
      state.steps = [];
      showLinkError(message, fallback);
      show("link-error");
    }

    function sessionLost(result) {
      linkError(result.message, "Your enrollment session has ended.");
    }

    function next(key) {
      const index = state.steps.findIndex((s) => s.key === key);
      const step = state.steps[index + 1];
      if (step) enter(step.key); else done(false);
    }

    function enter(key) {
      const step = state.steps.find((s) => s.key === key);
      if (key === "mfa") prepareMfa();
      if (key === "finish") prepareFinish();
      show(step.section);
    }

    async function start(token) {
      clearErrors(tokenForm);
      if (!token) { fieldError(tokenForm, "token", "Enter the token from your invitation."); return; }
      const result = await withBusy(tokenForm, () => api("enrollment/start", { token }));
      if (result.ok) { tokenForm.reset(); begin(result.json); return; }
      if (result.status === 401 || result.status === 403) {
        tokenForm.reset();
        linkError(result.message, "The link is not valid.");
        return;
      }
      formError(tokenForm, explain(result));
    }

    function begin(data) {
      state.start = data;
      const user = data.user;
      const settings = data.settings;
      $("instance-name").textContent = data.instance.name || "";
      if (settings.only_client_activation) {
        $("client-only-url").textContent = data.instance.proxy_url;
        state.steps = [];
        show("client-only");
        return;
      }
      const steps = [{ key: "welcome", label: "Welcome", section: "welcome-step" }];
      if (!user.enrolled) {
        steps.push({ key: "password", label: "Password", section: "password-step" });
        steps.push({ key: "mfa", label: "Two-factor", section: "mfa-step" });
      }
      if (!settings.admin_device_management || user.is_admin) {
        steps.push({ key: "device", label: "Device", section: "device-step" });
      }
      if (!user.enrolled) steps.push({ key: "finish", label: "Activate", section: "finish-step" });
      state.steps = steps;

      const name = [user.first_name, user.last_name].filter(Boolean).join(" ") || user.login;
      $("user-name").textContent = name;
      $("user-login").textContent = user.login;
      document.querySelectorAll(".user-email").forEach((e) => { e.textContent = user.email; });
      $("already-enrolled").hidden = !user.enrolled;
      $("deadline").textContent = new Date(data.deadline_timestamp * 1000).toLocaleString();
      const admin = data.admin;
      $("admin-contact").hidden = !admin;
      if (admin) {
        $("admin-name").textContent = admin.name;
        const mail = $("admin-email");
        mail.textContent = admin.email;
        mail.href = "mailto:" + encodeURIComponent(admin.email).replace(/%40/g, "@");
        $("admin-phone-line").hidden = !admin.phone_number;
        $("admin-phone").textContent = admin.phone_number || "";
      }
      $("pm-username").value = user.login;
      passwordForm.elements.phone_number.value = user.phone_number || "";
      $("device-skip").hidden = !settings.vpn_setup_optional;
      enter("welcome");
    }

    tokenForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      start(tokenForm.elements.token.value.trim());
    });
    $("link-error-retry").addEventListener("click", () => {
      tokenForm.reset();
      clearErrors(tokenForm);
      show("token-step");
    });
    $("welcome-continue").addEventListener("click", () => next("welcome"));

    // Password: checked here, sent with activate_user at the very end.
    passwordForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearErrors(passwordForm);
      const password = passwordForm.elements.password.value;
      const phone = passwordForm.elements.phone_number.value.trim();
      const problem = passwordProblem(password);
      if (problem) { fieldError(passwordForm, "password", problem); return; }
      if (passwordForm.elements.password_confirm.value !== password) {
        fieldError(passwordForm, "password_confirm", "The passwords do not match.");
        return;
      }
      if (phone && !PHONE.test(phone)) {
        fieldError(passwordForm, "phone_number", "invalid phone number: use digits, e.g. +48 600 100 200");
        return;
      }
      state.password = password;
      state.phone = phone || null;
      next("password");
    });

    // Second factor.
    function prepareMfa() {
      const settings = state.start.settings;
      $("mfa-required-note").hidden = !settings.mfa_required;
      $("mfa-optional-note").hidden = settings.mfa_required;
      $("mfa-email-start").hidden = !settings.smtp_configured;
      $("mfa-skip").hidden = settings.mfa_required && !state.mfa;
      $("mfa-skip").textContent = state.mfa ? "Continue" : "Skip";
    }

    function mfaFailure(result, form) {
      if (result.status === 401) { sessionLost(result); return; }
      if (/already enabled/i.test(result.message)) {
        // Set up earlier in this session (e.g. before a reload): nothing left to do here.
        state.mfa = state.mfa || "existing";
        prepareMfa();
        $("mfa-error").textContent = result.message + ": two-factor authentication is already set up, you can continue.";
        return;
      }
      if (form && /code/i.test(result.message)) {
        fieldError(form, "code", result.message + ": enter the current code and try again.");
        return;
      }
      if (form) formError(form, explain(result)); else $("mfa-error").textContent = explain(result);
    }

    async function mfaStart(button, method) {
      $("mfa-error").textContent = "";
      const result = await withBusy(button, () => api("enrollment/register-mfa/code/start", { method }));
      if (!result.ok) { mfaFailure(result, null); return; }
      $("totp-setup").hidden = method !== "Totp";
      $("email-setup").hidden = method !== "Email";
      const form = method === "Totp" ? totpForm : emailForm;
      form.reset();
      clearErrors(form);
      if (method === "Totp") {
        const secret = result.json.totp_secret;
        const issuer = state.start.instance.name || "Defguard";
        const login = state.start.user.login;
        const uri = "otpauth://totp/" + encodeURIComponent(issuer) + ":" + encodeURIComponent(login) +
          "?secret=" + encodeURIComponent(secret) + "&issuer=" + encodeURIComponent(issuer) +
          "&algorithm=SHA1&digits=6&period=30";
        $("totp-secret").textContent = secret;
        $("totp-qr").replaceChildren();
        await qrInto($("totp-qr"), uri);
      }
      form.elements.code.focus();
    }

    async function mfaFinish(form, method) {
      clearErrors(form);
      const code = form.elements.code.value.replace(/\s+/g, "");
      if (!/^\d{6}$/.test(code)) { fieldError(form, "code", "Enter the 6-digit code."); return; }
      const result = await withBusy(form, () => api("enrollment/register-mfa/code/finish", { code, method }));
      if (!result.ok) { mfaFailure(result, form); return; }
      state.mfa = method;
      state.recoveryCodes = result.json.recovery_codes || [];
      $("totp-secret").textContent = "";
      $("totp-qr").replaceChildren();
      $("totp-setup").hidden = true;
      $("email-setup").hidden = true;
      $("mfa-choices").hidden = true;
      $("mfa-error").textContent = "";
      $("recovery-codes").replaceChildren(...state.recoveryCodes.map((c) => text("li", c)));
      $("recovery").hidden = false;
      $("mfa-continue").focus();
    }

    $("mfa-totp-start").addEventListener("click", (ev) => mfaStart(ev.currentTarget, "Totp"));
    $("mfa-email-start").addEventListener("click", (ev) => mfaStart(ev.currentTarget, "Email"));
    totpForm.addEventListener("submit", (ev) => { ev.preventDefault(); mfaFinish(totpForm, "Totp"); });
    emailForm.addEventListener("submit", (ev) => { ev.preventDefault(); mfaFinish(emailForm, "Email"); });
    $("mfa-skip").addEventListener("click", () => next("mfa"));
    $("recovery-download").addEventListener("click", () => {
      const lines = ["Defguard recovery codes for " + state.start.user.login + " (" + (state.start.instance.name || "") + ")",
        "Each code works once.", "", ...(state.recoveryCodes || [])];
      window.defguard.download("defguard-recovery-codes.txt", lines.join("\n") + "\n");
    });
    $("mfa-continue").addEventListener("click", () => {
      state.recoveryCodes = null;
      $("recovery-codes").replaceChildren();
      next("mfa");
    });

    // Device: keys made here (private key kept in memory for the config) or pasted.
    $("generate-keys").addEventListener("click", async (ev) => {
      const button = ev.currentTarget;
      clearErrors(deviceForm);
      try {
        const pair = await withBusy(button, () => window.defguard.generateKeypair());
        state.privateKey = pair.privateKey;
        deviceForm.elements.pubkey.value = pair.publicKey;
        deviceForm.dataset.generated = pair.publicKey;
        $("keys-status").textContent = "Keys made in this browser; the private key stays here and goes into your configuration file.";
      } catch (err) {
        fieldError(deviceForm, "pubkey", err.message);
      }
    });
    deviceForm.elements.pubkey.addEventListener("input", () => {
      if (deviceForm.elements.pubkey.value.trim() !== deviceForm.dataset.generated) {
        state.privateKey = null;
        $("keys-status").textContent = "";
      }
    });

    function configFile(config) {
      return state.privateKey ? window.defguard.withPrivateKey(config.config, state.privateKey) : config.config;
    }

    function showConfigs(response) {
      const configs = response.configs || [];
      state.device = response.device ? response.device.name : null;
      deviceForm.hidden = true;
      $("device-intro").hidden = true;
      $("device-name").textContent = state.device || "";
      let intro;
      if (!configs.length) {
        intro = "You have no VPN locations yet. Once your administrator gives you access, the Defguard client picks them up.";
      } else if (state.privateKey) {
        intro = "Download the configuration of each location, or scan its QR code with the WireGuard app. " +
          "They hold this device's private key: keep them safe. They are shown only now.";
      } else {
        intro = "Download the configuration of each location and replace YOUR_PRIVATE_KEY in it with your private key.";
      }
      $("device-config-intro").textContent = intro;
      const list = $("device-config-list");
      list.replaceChildren();
      configs.forEach((config) => {
        const item = document.createElement("div");
        item.className = "config-item";
        item.append(text("h3", config.network_name));
        item.append(text("p", "Address " + config.assigned_ip + " · endpoint " + config.endpoint, "small muted"));
        const file = window.defguard.safeName(config.network_name).slice(0, 15) + ".conf";
        const button = text("button", "Download " + file, "config-download");
        button.type = "button";
        button.dataset.location = String(config.network_id);
        button.addEventListener("click", () => window.defguard.download(file, configFile(config) + "\n"));
        item.append(button);
        if (state.privateKey) {
          const box = document.createElement("div");
          box.className = "qr-box";
          item.append(box);
          qrInto(box, configFile(config));
        }
        list.append(item);
      });
      $("device-config").hidden = false;
      $("device-continue").focus();
    }

    deviceForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(deviceForm);
      const name = deviceForm.elements.name.value.trim();
      const pubkey = deviceForm.elements.pubkey.value.trim();
      if (!name) { fieldError(deviceForm, "name", "Enter a name for this device."); return; }
      if ((state.start.user.device_names || []).includes(name)) {
        fieldError(deviceForm, "name", "You already have a device named " + name + ".");
        return;
      }
      if (!pubkey) { fieldError(deviceForm, "pubkey", "Generate keys in this browser or paste a public key."); return; }
      if (!PUBKEY.test(pubkey)) {
        fieldError(deviceForm, "pubkey", "invalid pubkey: a WireGuard public key is 44 characters of base64 ending in '='.");
        return;
      }
      const result = await withBusy(deviceForm, () => api("enrollment/create_device", { name, pubkey }));
      if (result.ok) { showConfigs(result.json); return; }
      if (result.status === 401) { sessionLost(result); return; }
      if (result.message === "invalid key") {
        fieldError(deviceForm, "pubkey", "invalid key: this public key is already used by another device.");
      } else if (/pubkey|key/i.test(result.message)) {
        fieldError(deviceForm, "pubkey", result.message);
      } else if (/name/i.test(result.message)) {
        fieldError(deviceForm, "name", result.message);
      } else {
        formError(deviceForm, explain(result));
      }
    });
    $("device-skip").addEventListener("click", () => next("device"));
    $("device-continue").addEventListener("click", () => {
      state.privateKey = null;
      $("device-config-list").replaceChildren();
      next("device");
    });

    // Activation: the password and phone collected earlier.
    function prepareFinish() {
      const items = ["Password: chosen"];
      if (state.phone) items.push("Phone: " + state.phone);
      items.push("Two-factor authentication: " + (state.mfa === "Totp" ? "authenticator app" : state.mfa === "Email" ? "e-mail codes" : state.mfa ? "on" : "not set up"));
      if (state.steps.some((s) => s.key === "device")) items.push("Device: " + (state.device || "none yet"));
      $("finish-summary").replaceChildren(...items.map((i) => text("li", i)));
      $("finish-error").textContent = "";
    }

    $("finish-enrollment").addEventListener("click", async (ev) => {
      $("finish-error").textContent = "";
      const result = await withBusy(ev.currentTarget, () =>
        api("enrollment/activate_user", { password: state.password, phone_number: state.phone }));
      if (result.ok) { forget(); done(true); return; }
      if (result.status === 401) { sessionLost(result); return; }
      if (/password/i.test(result.message) || /phone/i.test(result.message)) {
        enter("password");
        fieldError(passwordForm, /phone/i.test(result.message) ? "phone_number" : "password", result.message);
        return;
      }
      $("finish-error").textContent = explain(result);
    });

    function done(activated) {
      let title = "All set: there is nothing more to do here.";
      if (activated) title = "Enrollment complete: your account is active.";
      else if (state.device) title = "All set: " + state.device + " is added to your account.";
      $("done-title").textContent = title;
      const content = state.start.final_page_content || "";
      $("final-page-content").textContent = content;
      $("final-page-content").hidden = !content.trim();
      $("done-url").textContent = state.start.instance.proxy_url;
      show("enrollment-done");
    }

    const token = takeToken();
    show("token-step");
    if (token) {
      tokenForm.elements.token.value = token;
      start(token);
    }
  }

  // --- password reset -----------------------------------------------------------------

  function passwordResetPage() {
    const SECTIONS = ["reset-request", "reset-checking", "link-error", "reset-password", "reset-done"];
    const show = (id) => showSection(SECTIONS, id);
    const requestForm = $("reset-request-form");
    const resetForm = $("reset-password-form");

    function linkError(message) {
      resetForm.reset();
      showLinkError(message, "The link is not valid.");
      show("link-error");
    }

    async function startReset(token) {
      $("reset-checking-status").hidden = false;
      $("reset-checking-error").textContent = "";
      $("reset-retry").hidden = true;
      show("reset-checking");
      const result = await api("password-reset/start", { token });
      if (result.ok) { show("reset-password"); return; }
      if (result.status === 401 || result.status === 403) { linkError(result.message); return; }
      $("reset-checking-status").hidden = true;
      $("reset-checking-error").textContent = explain(result);
      $("reset-retry").hidden = false;
    }

    requestForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(requestForm);
      const email = requestForm.elements.email.value.trim();
      if (!email) { fieldError(requestForm, "email", "Enter your e-mail address."); return; }
      const result = await withBusy(requestForm, () => api("password-reset/request", { email }));
      // The same answer whether or not the address has an account (a failed
      // mail must not tell the two apart either).
      if (result.ok || result.status === 500) {
        requestForm.hidden = true;
        $("reset-requested").hidden = false;
        return;
      }
      formError(requestForm, explain(result));
    });

    resetForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(resetForm);
      const password = resetForm.elements.password.value;
      const problem = passwordProblem(password);
      if (problem) { fieldError(resetForm, "password", problem); return; }
      if (resetForm.elements.password_confirm.value !== password) {
        fieldError(resetForm, "password_confirm", "The passwords do not match.");
        return;
      }
      const result = await withBusy(resetForm, () => api("password-reset/reset", { password }));
      if (result.ok) { resetForm.reset(); show("reset-done"); return; }
      if (result.status === 401 || result.status === 403) { linkError(result.message); return; }
      if (/password/i.test(result.message)) { fieldError(resetForm, "password", result.message); return; }
      formError(resetForm, explain(result));
    });

    const token = takeToken();
    $("reset-retry").addEventListener("click", () => startReset(token));
    if (token) startReset(token); else show("reset-request");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "enrollment") enrollmentPage();
    else if (page === "password-reset") passwordResetPage();
  });
})();
