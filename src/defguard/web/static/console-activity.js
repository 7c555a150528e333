// Empty filters stay out of the URL, so a copied link names only what was chosen.
"use strict";

(function () {
  const form = document.getElementById("activity-filters");
  if (!form) return;
  form.addEventListener("submit", () => {
    for (const el of form.elements) if (el.name && el.value === "") el.disabled = true;
  });
  // Coming back through the back-forward cache must not leave the emptied fields disabled.
  window.addEventListener("pageshow", () => { for (const el of form.elements) el.disabled = false; });
})();
