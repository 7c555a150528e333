// Picking a location shows it at once; the button stays for keyboards and no-script use.
"use strict";

(function () {
  const picker = document.getElementById("firewall-location");
  if (!picker) return; // no locations yet: nothing to pick
  picker.addEventListener("change", (ev) => ev.target.form.submit());
})();
