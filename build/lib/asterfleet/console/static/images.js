// asterfleet console, Images and Builds: copy buttons, confirmations, and a
// build log followed live over server-sent events (resumable: each event's
// id is the log offset, which EventSource sends back as Last-Event-ID).
(function () {
  "use strict";

  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    var text = target.textContent;
    function done(ok) {
      var label = button.textContent;
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

  function followLog(pre) {
    var status = document.querySelector("[data-live-status]");
    var badge = document.getElementById("build-state");
    var source = new EventSource(pre.getAttribute("data-log-stream"));
    source.addEventListener("log", function (ev) {
      var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 8;
      pre.appendChild(document.createTextNode(JSON.parse(ev.data)));
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    });
    source.addEventListener("end", function (ev) {
      source.close();
      var state = JSON.parse(ev.data).state;
      if (badge) { badge.textContent = state; badge.className = "badge"; }
      if (status) { status.textContent = "finished"; status.className = "live"; }
    });
    source.onopen = function () {
      if (status) { status.textContent = "live"; status.className = "live on"; }
    };
    source.onerror = function () {
      if (status && source.readyState !== EventSource.CLOSED) {
        status.textContent = "reconnecting…"; status.className = "live off";
      }
    };
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target instanceof Element ? ev.target.closest("button[data-copy]") : null;
    if (button) copy(button);
  });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.hasAttribute("data-action")) return;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) ev.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre[data-log-stream]").forEach(followLog);
  });
})();
