// A user's page: adds a device with keys made in the browser and shows its configs
// once, and shows new enrollment and activation tokens.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const dg = () => window.defguard;

  // -- add device, optionally with keys made here --------------------------------
  const deviceForm = $("add-device-form");
  const pubkey = deviceForm.elements.wireguard_pubkey;
  let keypair = null;

  function forgetKeys() {
    keypair = null;
    pubkey.readOnly = false;
    pubkey.value = "";
    $("generated-note").hidden = true;
    $("use-own-key").hidden = true;
  }

  $("generate-keys").addEventListener("click", async () => {
    dg().clearErrors(deviceForm);
    try {
      keypair = await dg().generateKeypair();
    } catch (err) {
      dg().showErrors(deviceForm, err.message);
      return;
    }
    pubkey.value = keypair.publicKey;
    pubkey.readOnly = true;
    $("generated-note").hidden = false;
    $("use-own-key").hidden = false;
  });
  $("use-own-key").addEventListener("click", () => { forgetKeys(); pubkey.focus(); });

  function configItem(device, config, privateKey) {
    const item = document.createElement("div");
    item.className = "config-item";
    item.dataset.location = config.network_name;
    const title = document.createElement("h4");
    title.textContent = config.network_name;
    const addr = document.createElement("p");
    addr.className = "small muted";
    addr.textContent = "Address " + config.address.join(", ") + " · endpoint " + config.endpoint;
    item.append(title, addr);
    if (config.location_mfa_mode && config.location_mfa_mode !== "disabled") {
      const note = document.createElement("p");
      note.className = "small notice";
      note.textContent = "This location requires MFA: connect with the Defguard client. The config below still needs the private key.";
      item.append(note);
    }
    const text = dg().withPrivateKey(config.config, privateKey);
    const box = document.createElement("div");
    box.className = "config-box";
    const qr = document.createElement("div");
    qr.className = "qr-box";
    qr.textContent = "Drawing QR code…";
    const side = document.createElement("div");
    side.className = "config-text";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "download-config";
    const file = dg().safeName(device.name + "-" + config.network_name) + ".conf";
    button.textContent = "Download " + file;
    button.addEventListener("click", () => dg().download(file, text));
    side.append(button);
    box.append(qr, side);
    item.append(box);
    dg().qrFor(text).then((svg) => { qr.innerHTML = svg; }, (err) => { qr.textContent = err.message; });
    return item;
  }

  deviceForm.addEventListener("dg:success", (ev) => {
    const pair = keypair;
    if (!pair || ev.detail.body.wireguard_pubkey !== pair.publicKey) return; // reload shows the new device
    ev.preventDefault();
    const { device, configs } = ev.detail.json;
    const list = $("new-device-configs");
    list.replaceChildren();
    $("new-device-name").textContent = device.name;
    if (!configs.length) {
      const p = document.createElement("p");
      p.textContent = "The device has no address in any location yet, so there is no config. Its private key:";
      const key = document.createElement("p");
      key.className = "secret";
      key.textContent = pair.privateKey;
      list.append(p, key);
    }
    configs.forEach((c) => list.append(configItem(device, c, pair.privateKey)));
    deviceForm.reset();
    forgetKeys();
    deviceForm.closest("details").hidden = true;
    $("new-device-result").hidden = false;
    $("new-device-result").scrollIntoView({ block: "start" });
  });
  $("new-device-done").addEventListener("click", () => window.location.reload());

  // -- enrollment and activation tokens ---------------------------------------------
  const enrollForm = $("start-enrollment-form");
  if (enrollForm) {
    enrollForm.addEventListener("dg:success", async (ev) => {
      const { enrollment_token: token, enrollment_url: url } = ev.detail.json;
      const link = url + "?token=" + encodeURIComponent(token);
      $("enrollment-url").textContent = url;
      $("enrollment-token").textContent = token;
      $("enrollment-link").textContent = link;
      $("enrollment-result").hidden = false;
      const qr = $("enrollment-qr");
      qr.textContent = "Drawing QR code…";
      try { qr.innerHTML = await dg().qrFor(link); } catch (err) { qr.textContent = err.message; }
    });
  }
  const desktop = $("start-desktop");
  if (desktop) {
    desktop.addEventListener("dg:success", (ev) => {
      $("desktop-url").textContent = ev.detail.json.enrollment_url;
      $("desktop-token").textContent = ev.detail.json.enrollment_token;
      $("desktop-result").hidden = false;
    });
  }

  // Secrets live only in this page: drop them when it is left, so that going
  // back to it (the back-forward cache) shows nothing.
  window.addEventListener("pagehide", () => {
    keypair = null;
    ["new-device-configs", "enrollment-qr", "enrollment-token", "enrollment-link", "desktop-token"].forEach((id) => {
      const el = $(id);
      if (el) el.replaceChildren();
    });
    ["new-device-result", "enrollment-result", "desktop-result"].forEach((id) => {
      const el = $(id);
      if (el) el.hidden = true;
    });
  });
})();
