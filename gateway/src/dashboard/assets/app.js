// AI Aggregator dashboard: progressive enhancement only (every page works without it except the
// playground). Theme toggle, copy button, auto-refresh of live pages, playground streaming.
"use strict";
(function () {
  var root = document.documentElement;
  function setCookie(name, value) {
    document.cookie = name + "=" + value + "; Path=/dashboard; SameSite=Strict; Max-Age=31536000";
  }
  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      var order = ["system", "light", "dark"];
      var next = order[(order.indexOf(root.dataset.theme) + 1) % order.length];
      root.dataset.theme = next;
      setCookie("agg_theme", next);
      toggle.setAttribute("aria-label", toggle.textContent + ": " + next);
    });
  }
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.dataset.copy);
      if (el && navigator.clipboard) { navigator.clipboard.writeText(el.textContent).catch(function () {}); }
    });
  });
  var main = document.querySelector("main[data-refresh]");
  if (main) {
    setInterval(function () {
      if (document.hidden || document.activeElement && document.activeElement.closest("form")) { return; }
      fetch(location.href, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        if (fresh) { main.innerHTML = fresh.innerHTML; }
      }).catch(function () {});
    }, Number(main.dataset.refresh) * 1000);
  }
  var pg = document.getElementById("playground");
  if (pg) {
    pg.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var out = document.getElementById("pg-answer");
      var lang = pg.dataset.lang || "en";
      out.textContent = "";
      var body = JSON.stringify({ model: pg.model.value, prompt: pg.prompt.value });
      fetch("/dashboard/playground/chat", {
        method: "POST", credentials: "same-origin", body: body,
        headers: { "content-type": "application/json", "x-csrf-token": pg.dataset.csrf }
      }).then(function (resp) {
        var price = (resp.headers.get("x-dashboard-price") || "").split(",").map(function (v) { return BigInt(v || 0); });
        if (!resp.ok || !resp.body) {
          return resp.text().then(function (t) { out.textContent = t; });
        }
        var reader = resp.body.getReader();
        var dec = new TextDecoder();
        var buf = "";
        function usage(u) {
          var nf = new Intl.NumberFormat(lang);
          document.getElementById("pg-prompt-tokens").textContent = nf.format(u.prompt_tokens || 0);
          document.getElementById("pg-completion-tokens").textContent = nf.format(u.completion_tokens || 0);
          if (price.length === 4) {
            // The ledger's formula (domain::pricing::cost_nano_usd), in integers.
            var cached = BigInt((u.prompt_tokens_details || {}).cached_tokens || 0);
            var prompt = BigInt(u.prompt_tokens || 0);
            var m = (prompt - cached) * price[0] + BigInt(u.completion_tokens || 0) * price[1] + cached * price[2];
            var nano = (m + 500n) / 1000n;
            var usd = Number(nano) / 1e9;
            document.getElementById("pg-cost").textContent = new Intl.NumberFormat(lang, {
              style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6
            }).format(usd);
          }
        }
        function pump() {
          return reader.read().then(function (r) {
            if (r.done) { return; }
            buf += dec.decode(r.value, { stream: true });
            var events = buf.split("\n\n");
            buf = events.pop();
            events.forEach(function (ev) {
              ev.split("\n").forEach(function (line) {
                if (line.indexOf("data:") !== 0) { return; }
                var data = line.slice(5).trim();
                if (data === "[DONE]") { return; }
                try {
                  var chunk = JSON.parse(data);
                  var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
                  if (delta && delta.content) { out.textContent += delta.content; }
                  if (chunk.usage) { usage(chunk.usage); }
                  if (chunk.error) { out.textContent += "\n" + chunk.error.message; }
                } catch (e) { /* a partial or non-JSON event: skipped */ }
              });
            });
            return pump();
          });
        }
        return pump();
      }).catch(function (e) { out.textContent = String(e); });
    });
  }
})();
