// obdsync dashboard: the live gauges (server-sent events) and the actions (POST with
// the session's CSRF token). No framework, nothing loaded from elsewhere.
"use strict";
(function () {
  const body = document.body;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function live() {
    if (body.dataset.page !== "now" || !window.EventSource) return;
    const dev = body.dataset.device;
    const es = new EventSource("/api/v1/live" + (dev ? "?device=" + encodeURIComponent(dev) : ""));
    es.onmessage = function (ev) {
      const msg = JSON.parse(ev.data);
      for (const [key, g] of Object.entries(msg.values)) {
        const el = document.querySelector('.val[data-key="' + key + '"]');
        if (el && Number(el.dataset.t || 0) <= g.t) {
          el.textContent = g.text;
          el.dataset.t = g.t;
        }
      }
      const conn = document.getElementById("conn");
      if (conn && msg.connected) { conn.className = "up"; }
      const seen = document.getElementById("last-seen");
      if (seen) seen.textContent = new Date(Math.max(...Object.values(msg.values).map(g => g.t)))
        .toLocaleString();
      body.dataset.liveCount = String(Number(body.dataset.liveCount || 0) + 1);
    };
  }

  function actions() {
    for (const form of document.querySelectorAll("form.action-form")) {
      form.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
        const out = form.querySelector(".result");
        const payload = { device: body.dataset.device || undefined };
        if (form.dataset.item) payload.items = [form.dataset.item];
        if (form.dataset.confirm) payload.confirm = true;
        const km = form.querySelector('input[name="km"]');
        if (km && km.value) payload.km = Number(km.value);
        const r = await fetch(form.dataset.api, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(payload),
        });
        let msg;
        try { const j = await r.json(); msg = j.ok ? "✓" : (j.error || r.statusText); }
        catch (e) { msg = await r.text().catch(() => r.statusText); }
        if (out) out.textContent = msg;
        if (r.ok && form.dataset.item) window.location.reload();
      });
    }
  }

  live();
  actions();
})();
