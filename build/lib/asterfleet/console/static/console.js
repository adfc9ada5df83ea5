// asterfleet console: live updates over server-sent events, and actions
// posted with fetch (with the CSRF token in a header) so the page never
// reloads. Without this script every form still works by plain POST.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function notice(text, bad) {
    var el = document.getElementById("notice");
    if (!el) return;
    el.textContent = text;
    el.className = "flash " + (bad ? "bad" : "ok");
    el.hidden = false;
    clearTimeout(notice.timer);
    notice.timer = setTimeout(function () { el.hidden = true; }, bad ? 8000 : 3000);
  }

  function formatAge(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    function pad(n) { return (n < 10 ? "0" : "") + n; }
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor((s % 86400) / 3600)) + "h";
  }

  function tickAges() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-started]").forEach(function (cell) {
      var started = parseFloat(cell.getAttribute("data-started"));
      if (started > 0) cell.textContent = formatAge(now - started);
    });
  }

  // Replace a live region, but never under the operator's fingers: while a
  // field inside it has focus, keep the newest fragment and apply it on blur.
  function follow(region) {
    var url = region.getAttribute("data-live");
    var eventName = region.getAttribute("data-event");
    var status = document.querySelector("[data-live-status]");
    var pending = null;

    function apply(html) {
      if (region.contains(document.activeElement) &&
          document.activeElement.tagName === "INPUT") {
        pending = html;
        return;
      }
      pending = null;
      region.innerHTML = html;
      tickAges();
    }
    region.addEventListener("focusout", function () {
      setTimeout(function () { if (pending !== null) apply(pending); }, 0);
    });

    var source = new EventSource(url);
    source.addEventListener(eventName, function (ev) { apply(ev.data); });
    source.addEventListener("logout", function () { window.location.assign("/login"); });
    source.onopen = function () {
      if (status) { status.textContent = "live"; status.className = "live on"; }
    };
    source.onerror = function () {
      if (status) { status.textContent = "reconnecting…"; status.className = "live off"; }
    };
  }

  function act(form, submitter) {
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var body = new URLSearchParams(new FormData(form));
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), "X-Requested-With": "fetch" }
    }).then(function (resp) {
      if (resp.redirected && resp.url.indexOf("/login") >= 0) {
        window.location.assign(resp.url);
        return null;
      }
      return resp.json().catch(function () {
        return { ok: false, error: "the console answered " + resp.status };
      });
    }).then(function (reply) {
      if (!reply) return;
      notice(reply.ok ? reply.message : reply.error, !reply.ok);
      if (reply.ok) form.reset();
    }).catch(function (err) {
      notice("the console did not answer: " + err, true);
    }).finally(function () {
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-action")) return;
    ev.preventDefault();
    act(form, ev.submitter);
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(follow);
    tickAges();
    setInterval(tickAges, 1000);
  });
})();
