// The firewall explain page: builds the API query from the form's inputs and
// draws the verdict table from the answer.
"use strict";

(function () {
  const form = document.getElementById("explain-form");
  if (!form) return; // no locations yet: the page has no form
  const result = document.getElementById("explain-result");
  const PROTOCOLS = { 1: "ICMP", 6: "TCP", 17: "UDP" };
  const value = (name) => form.elements[name].value.trim();

  // The API's `to`: ADDR[:PORT][/tcp|udp|icmp], an IPv6 address in brackets when a port follows.
  function flow() {
    const address = value("to").replace(/^\[(.*)\]$/, "$1");
    const port = value("port");
    const protocol = value("protocol");
    let to = address;
    if (port !== "") to = address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
    if (protocol) to += "/" + protocol;
    return to;
  }

  function showFlow() { document.getElementById("explain-flow").textContent = flow() || "—"; }
  form.addEventListener("input", showFlow);
  showFlow();

  // Runs before forms.js (which listens on the document): point the GET at the chosen inputs.
  form.addEventListener("submit", () => {
    const query = new URLSearchParams({ user: value("user"), to: flow() });
    form.dataset.api = `/api/v1/network/${encodeURIComponent(value("location"))}/firewall/explain?${query}`;
    result.replaceChildren();
  });

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function verdictBadge(verdict) {
    const badge = el("span", verdict.toUpperCase(), "badge " + (verdict === "allow" ? "ok" : "bad"));
    badge.dataset.verdict = verdict;
    return badge;
  }

  function render(out) {
    result.replaceChildren();
    const head = el("h2", "Result");
    result.append(head);
    const summary = el("p");
    summary.id = "explain-summary";
    const port = out.port === null ? "" : `:${out.port}`;
    summary.append(`${out.user} → ${out.destination}${port} in ${out.location}: `);
    summary.append(out.acl_enabled
      ? `firewall on, default policy ${out.default_policy}.`
      : "firewall (ACL) disabled, so everything is allowed.");
    result.append(summary);
    if (!out.results.length) {
      const none = el("p", `${out.user} has no device with an address of this family in ${out.location}, so there is nothing to evaluate.`, "notice warn");
      none.id = "explain-no-devices";
      result.append(none);
    } else {
      const verdicts = new Set(out.results.map((r) => r.verdict));
      const overall = el("p");
      overall.id = "explain-verdict";
      overall.append(verdicts.size === 1 ? "Verdict: " : "Verdict depends on device and protocol: ");
      verdicts.forEach((v) => { overall.append(verdictBadge(v), " "); });
      result.append(overall);
      const wrap = el("div", undefined, "table-wrap");
      const table = el("table");
      table.id = "explain-table";
      const headRow = el("tr");
      ["Device", "Source", "Protocol", "Verdict", "Decided by"].forEach((h) => headRow.append(el("th", h)));
      table.append(el("thead"));
      table.tHead.append(headRow);
      const body = el("tbody");
      out.results.forEach((r) => {
        const row = el("tr");
        row.dataset.verdict = r.verdict;
        row.append(el("td", r.device), el("td", r.source, "mono"), el("td", PROTOCOLS[r.protocol] || String(r.protocol)));
        const v = el("td");
        v.append(verdictBadge(r.verdict));
        row.append(v);
        const by = el("td", undefined, "small");
        if (r.rule_id !== null) by.append(el("span", `firewall rule [${r.rule_id}] `, "muted"));
        const match = /^RULE (\d+)\b/.exec(r.decided_by);
        if (match) {
          const link = el("a", r.decided_by);
          link.href = `/acl/rules/${match[1]}`;
          by.append(link);
        } else {
          by.append(r.decided_by);
        }
        row.append(by);
        body.append(row);
      });
      table.append(body);
      wrap.append(table);
      result.append(wrap);
    }
    const raw = el("details", undefined, "panel");
    raw.append(el("summary", "Answer as JSON"), el("pre", JSON.stringify(out, null, 2)));
    result.append(raw);
  }

  form.addEventListener("dg:success", (ev) => {
    ev.preventDefault();
    render(ev.detail.json);
  });
})();
