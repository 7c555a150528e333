// Greys out what a choice makes irrelevant (it is still sent, so nothing is lost by toggling).
"use strict";

(function () {
  const form = document.getElementById("rule-form");
  if (!form) return;
  const sync = () => {
    const allLocations = form.querySelector('input[name="all_locations"][value="true"]').checked;
    document.getElementById("rule-location-list").classList.toggle("acl-off", allLocations);
    const manual = form.querySelector('input[name="use_manual_destination_settings"][value="true"]').checked;
    document.getElementById("rule-manual").classList.toggle("acl-off", !manual);
    form.querySelectorAll(".acl-source").forEach((box) => {
      const all = box.querySelector(`input[name="${box.dataset.all}"]`);
      box.querySelector(".acl-choices").classList.toggle("acl-off", all.checked);
    });
    [["any_address", "addresses"], ["any_port", "ports"], ["any_protocol", "protocols"]].forEach(([flag, name]) => {
      const on = form.querySelector(`input[name="${flag}"]`).checked;
      form.querySelectorAll(`[name="${name}"]`).forEach((el) => {
        (el.closest(".field") || el.closest("fieldset")).classList.toggle("acl-off", on);
      });
    });
  };
  form.addEventListener("change", sync);
  sync();
})();
