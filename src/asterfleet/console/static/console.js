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

  // The Fleet page's rows, kept current one row at a time: the server sends
  // only the rows of this page that changed (keyed by node id, with a
  // version), the order when it changed, and the summary when it changed.
  function followRows(tbody) {
    var status = document.querySelector("[data-live-status]");
    var summary = document.getElementById("fleet-summary");
    var empty = document.getElementById("fleet-empty");
    var scratch = document.createElement("tbody");

    function rowsById() {
      var byId = {};
      tbody.querySelectorAll("tr[data-node]").forEach(function (tr) { byId[tr.dataset.node] = tr; });
      return byId;
    }

    function apply(msg) {
      var byId = rowsById();
      msg.rows.forEach(function (r) {
        var old = byId[r[0]];
        if (old && old.dataset.v === r[1]) return;
        scratch.innerHTML = r[2];
        var tr = scratch.firstElementChild;
        if (old) old.replaceWith(tr); else tbody.appendChild(tr);
        byId[r[0]] = tr;
      });
      if (msg.order) {
        var keep = {};
        msg.order.forEach(function (id) { keep[id] = true; });
        Object.keys(byId).forEach(function (id) { if (!keep[id]) byId[id].remove(); });
        var at = tbody.firstElementChild;
        msg.order.forEach(function (id) {
          var tr = byId[id];
          if (!tr) return;
          if (tr !== at) tbody.insertBefore(tr, at); else at = at.nextElementSibling;
        });
        if (empty) empty.hidden = msg.order.length > 0;
      }
      if (msg.summary !== undefined && summary) summary.innerHTML = msg.summary;
      tickAges();
    }

    var source = new EventSource(tbody.getAttribute("data-rows"));
    source.addEventListener("rows", function (ev) { apply(JSON.parse(ev.data)); });
    source.addEventListener("logout", function () { window.location.assign("/login"); });
    source.onopen = function () {
      if (status) { status.textContent = "live"; status.className = "live on"; }
    };
    source.onerror = function () {
      if (status) { status.textContent = "reconnecting…"; status.className = "live off"; }
    };
  }

  function act(form, submitter) {
    var question = (submitter && submitter.getAttribute("data-confirm")) ||
      form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    var body = new URLSearchParams(new FormData(form, submitter || undefined));
    var target = (submitter && submitter.getAttribute("formaction")) || form.action;
    var buttons = submitter && submitter.form === form && !form.contains(submitter)
      ? [submitter] : Array.prototype.slice.call(form.querySelectorAll("button"));
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(target, {
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

  // Copy buttons: data-copy="ID" copies the element ID's text; an empty
  // data-copy copies the value just before the button (see _long.html).
  function copy(button) {
    var id = button.getAttribute("data-copy");
    var target = id ? document.getElementById(id) : button.previousElementSibling;
    if (!target) return;
    var text = target.textContent;
    function done(ok) {
      var label = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", label);
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
      return;
    }
    // Plain HTTP: the async clipboard API is not offered; select the text instead.
    var range = document.createRange();
    range.selectNodeContents(target);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    done(ok);
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target instanceof Element ? ev.target.closest("button[data-copy]") : null;
    if (button) copy(button);
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-action")) return;
    ev.preventDefault();
    act(form, ev.submitter);
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(follow);
    document.querySelectorAll("[data-rows]").forEach(followRows);
    tickAges();
    setInterval(tickAges, 1000);
  });
})();
