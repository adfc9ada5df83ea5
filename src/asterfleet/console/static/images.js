// asterfleet console, Images and Knots: confirmations, and a
// build log followed live over server-sent events (resumable: each event's
// id is the log offset, which EventSource sends back as Last-Event-ID).
(function () {
  "use strict";

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
