// Greys out the group list while "Allow all groups" makes it irrelevant (it is still sent).
"use strict";

(function () {
  const form = document.getElementById("location-form");
  if (!form) return;
  const all = form.querySelector('input[name="allow_all_groups"]');
  const box = document.getElementById("allowed-groups");
  const sync = () => box.classList.toggle("muted", all.checked);
  all.addEventListener("change", sync);
  sync();
})();
