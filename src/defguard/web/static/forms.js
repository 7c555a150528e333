// Submits forms marked with data-api as JSON to the REST API and shows the API's
// error message next to the field it names. Buttons with data-api do the same
// without fields. After success: data-next (a URL with {placeholders} filled from
// the response or the form, or "reload"), and a "dg:success" event for page scripts.
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function setPath(obj, path, value) {
    const keys = path.split(".");
    let cur = obj;
    keys.slice(0, -1).forEach((k) => { cur = cur[k] = cur[k] || {}; });
    cur[keys[keys.length - 1]] = value;
  }

  function fieldValue(el) {
    const type = el.dataset.type || "";
    if (el.type === "checkbox" && !type) return el.checked;
    if (el.tagName === "SELECT" && el.multiple) {
      const vals = Array.from(el.selectedOptions).map((o) => o.value);
      return type === "intlist" ? vals.map(Number) : vals;
    }
    const raw = el.value;
    const trimmed = typeof raw === "string" ? raw.trim() : raw;
    switch (type) {
      case "int": return trimmed === "" ? null : (/^-?\d+$/.test(trimmed) ? Number(trimmed) : trimmed);
      case "list": return trimmed.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
      case "intlist": return trimmed.split(/[\n,]/).map((s) => s.trim()).filter(Boolean).map(Number);
      case "nullable": return trimmed === "" ? null : trimmed;
      case "datetime": return trimmed === "" ? null : trimmed + (trimmed.length === 16 ? ":00" : "");
      case "json": return trimmed === "" ? null : JSON.parse(trimmed);
      default: return raw;
    }
  }

  function collect(form) {
    const body = {};
    const groups = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.dataset.skip !== undefined) continue;
      if (el.type === "radio") { if (el.checked) setPath(body, el.name, fieldValue(el)); continue; }
      if (el.type === "checkbox" && el.dataset.group !== undefined) {
        // Several checkboxes with one name make a list of the checked values.
        groups[el.name] = groups[el.name] || [];
        if (el.checked) groups[el.name].push(el.dataset.type === "int" ? Number(el.value) : el.value);
        continue;
      }
      const value = fieldValue(el);
      if (el.dataset.omitEmpty !== undefined && (value === "" || value === null)) continue;
      setPath(body, el.name, value);
    }
    Object.entries(groups).forEach(([name, vals]) => setPath(body, name, vals));
    return body;
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
    const top = form.querySelector(".form-error");
    if (top) top.textContent = "";
  }

  function errorSlot(form, name) {
    const el = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (!el) return null;
    let slot = form.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
    if (!slot) {
      slot = document.createElement("p");
      slot.className = "field-error";
      slot.dataset.for = name;
      slot.setAttribute("role", "alert");
      (el.closest(".field, .check") || el).after(slot);
    }
    el.classList.add("invalid");
    return slot;
  }

  // "name: field required; address: not a network" -> each part next to its field.
  function showErrors(form, msg) {
    const leftovers = [];
    String(msg).split("; ").forEach((part) => {
      let m = part.match(/^([A-Za-z_][\w.\[\]]*): (.*)$/s);
      let slot = null;
      if (m) {
        const path = m[1].split(".");
        for (let i = path.length; i > 0 && !slot; i--) slot = errorSlot(form, path.slice(0, i).join("."));
      } else {
        const word = part.split(/[\s:]/)[0];
        if (word && /^[a-z_]+$/.test(word)) slot = errorSlot(form, word);
      }
      if (slot) slot.textContent = part; else leftovers.push(part);
    });
    if (leftovers.length) {
      let top = form.querySelector(".form-error");
      if (!top) {
        top = document.createElement("div");
        top.className = "form-error";
        top.setAttribute("role", "alert");
        form.prepend(top);
      }
      top.textContent = leftovers.join("; ");
    }
    const first = form.querySelector(".invalid");
    if (first) first.focus();
  }

  function fill(template, ...sources) {
    return template.replace(/\{(\w+)\}/g, (_, key) => {
      for (const src of sources) if (src && src[key] !== undefined && src[key] !== null) return encodeURIComponent(src[key]);
      return "";
    });
  }

  function busy(el, on) {
    const buttons = el.tagName === "FORM" ? el.querySelectorAll("button[type=submit], button:not([type])") : [el];
    buttons.forEach((b) => {
      if (on) {
        b.dataset.label = b.innerHTML;
        b.disabled = true;
        b.innerHTML = '<span class="spinner" aria-hidden="true"></span> ' + (b.dataset.busy || "Working…");
      } else if (b.dataset.label !== undefined) {
        b.disabled = false;
        b.innerHTML = b.dataset.label;
      }
    });
    el.setAttribute("aria-busy", on ? "true" : "false");
    const bar = (el.tagName === "FORM" ? el : document).querySelector("progress[data-progress]");
    if (bar) bar.hidden = !on;
  }

  async function call(el, body) {
    const method = (el.dataset.method || "POST").toUpperCase();
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined && method !== "GET" && method !== "DELETE") {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(el.dataset.api, init);
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : {}; } catch (_) { json = { msg: text }; }
    return { response, json };
  }

  async function submit(el, body, form) {
    if (el.dataset.confirm && !window.confirm(el.dataset.confirm)) return;
    if (form) clearErrors(form);
    busy(form || el, true);
    let result;
    try {
      result = await call(el, body);
    } catch (err) {
      busy(form || el, false);
      const msg = "The server could not be reached: " + err.message;
      if (form) showErrors(form, msg); else window.alert(msg);
      return;
    }
    const { response, json } = result;
    if (!response.ok) {
      busy(form || el, false);
      const msg = (json && (json.msg || json.error || json.message || json.detail)) || response.statusText;
      if (response.status === 401 && !form) { window.location.href = "/login"; return; }
      if (form) showErrors(form, msg); else window.alert(msg);
      return;
    }
    const detail = { status: response.status, json, body, element: el };
    const event = new CustomEvent("dg:success", { detail, bubbles: true, cancelable: true });
    const proceed = el.dispatchEvent(event);
    const next = el.dataset.next;
    if (proceed && next === "reload") { window.location.reload(); return; }
    if (proceed && next) { window.location.href = fill(next, json, body); return; }
    busy(form || el, false);
  }

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
    ev.preventDefault();
    let body;
    try {
      body = collect(form);
    } catch (err) {
      clearErrors(form);
      showErrors(form, "invalid input: " + err.message);
      return;
    }
    submit(form, body, form);
  });

  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button[data-api]");
    if (!btn || btn.form && btn.form.dataset.api) return;
    ev.preventDefault();
    submit(btn, btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined, null);
  });

  window.defguard = Object.assign(window.defguard || {}, { showErrors, clearErrors, call, csrf });
})();
