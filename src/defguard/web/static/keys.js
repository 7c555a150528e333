// WireGuard keys made in the browser (WebCrypto X25519), so the private key never
// leaves the user's machine, and helpers to offer a config file for download.
"use strict";

(function () {
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));

  async function generateKeypair() {
    if (!window.crypto || !crypto.subtle) {
      throw new Error("this browser offers no WebCrypto here (it needs HTTPS); paste a public key instead");
    }
    const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
    const pub = await crypto.subtle.exportKey("raw", pair.publicKey);
    // PKCS#8 of an X25519 key ends with the 32-byte private scalar.
    const pkcs8 = await crypto.subtle.exportKey("pkcs8", pair.privateKey);
    return { publicKey: b64(pub), privateKey: b64(pkcs8.slice(pkcs8.byteLength - 32)) };
  }

  function withPrivateKey(config, privateKey) {
    return config.replace("YOUR_PRIVATE_KEY", privateKey);
  }

  function download(filename, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function safeName(name) {
    return String(name).replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 60) || "defguard";
  }

  window.defguard = Object.assign(window.defguard || {}, { generateKeypair, withPrivateKey, download, safeName });
})();

// A QR code (SVG markup) for text that exists only in this page, drawn by the server
// that served the page (nothing is kept there).
window.defguard.qrFor = async function qrFor(text) {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const response = await fetch("/ui/qr", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({ text }),
  });
  if (!response.ok) throw new Error("QR code failed: " + response.status);
  return response.text();
};
