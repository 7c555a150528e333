// The settings page: sends only what changed, and shows the test e-mail's answer.
"use strict";

(function () {
  // Only the fields the admin changed are sent: the activity log then names
  // what really changed, and another admin's change to other fields stands.
  const unchanged = (el) => {
    if (el.type === "checkbox" || el.type === "radio") return el.checked === el.defaultChecked;
    if (el.tagName === "SELECT") {
      const initial = Array.from(el.options).find((o) => o.defaultSelected) || el.options[0];
      return !initial || el.value === initial.value;
    }
    return el.value === el.defaultValue;
  };
  document.querySelectorAll("form[data-changed-only]").forEach((form) => {
    form.addEventListener("submit", () => {
      for (const el of form.elements) {
        if (!el.name) continue;
        if (unchanged(el)) el.dataset.skip = ""; else delete el.dataset.skip;
      }
    });
  });
  // After a save the next page may be this very URL, where going to it would
  // only move to #smtp: reload instead, so the page shows what is stored now.
  document.addEventListener("dg:success", (ev) => {
    const target = ev.detail.element.dataset.next;
    if (!target || target === "reload") return;
    const next = new URL(target, location.href);
    if (next.pathname + next.search === location.pathname + location.search) {
      ev.preventDefault();
      location.hash = next.hash;
      location.reload();
    }
  });

  const mail = document.getElementById("test-mail-form");
  const result = document.getElementById("test-mail-result");
  if (!mail) return;
  mail.addEventListener("submit", () => { result.hidden = true; });
  mail.addEventListener("dg:success", (ev) => {
    result.textContent = "Test e-mail queued for " + ev.detail.body.to +
      "; the mail worker sends it in the background.";
    result.hidden = false;
  });
})();
