// The console's sign-in: password first; when the account has MFA, the TOTP step
// (or a recovery code) completes the same session.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const login = document.getElementById("login-form");
  const totp = document.getElementById("totp-form");
  const recovery = document.getElementById("recovery-form");
  const target = () => {
    const next = login.dataset.return || "/";
    return next.startsWith("/") && !next.startsWith("//") ? next : "/";
  };
  login.addEventListener("dg:success", (ev) => {
    ev.preventDefault();
    if (ev.detail.status === 201) {
      login.hidden = true;
      totp.hidden = false;
      totp.querySelector("input[name=code]").focus();
    } else {
      window.location.href = target();
    }
  });
  document.getElementById("use-recovery").addEventListener("click", () => {
    totp.hidden = true;
    recovery.hidden = false;
    recovery.querySelector("input[name=code]").focus();
  });
});
