// A call's page: click an arrow of the ladder (or a row of the table) to see
// that message in full beside the diagram. Without this script every message
// still opens in place (<details> in the table).
(function () {
  "use strict";
  var SVG_NS = "http://www.w3.org/2000/svg";

  function show(id) {
    var details = document.getElementById("msg-" + id);
    var text = document.getElementById("message-text");
    var title = document.getElementById("message-title");
    if (!details || !text) return;
    var pre = details.querySelector("pre");
    var row = document.getElementById("row-" + id);
    text.textContent = pre ? pre.textContent : "";
    if (title && row) {
      var cells = row.querySelectorAll("td");
      title.textContent = details.querySelector("summary").textContent.trim() +
        "  " + cells[2].textContent + "  " + cells[0].textContent;
    }
    document.querySelectorAll(".selected").forEach(function (el) { el.classList.remove("selected"); });
    var arrow = document.querySelector('svg.ladder g.msg[data-message-id="' + id + '"]');
    if (arrow) arrow.classList.add("selected");
    if (row) row.classList.add("selected");
  }

  // A line is 1.5 px thick: give every arrow a hit area as wide as its row.
  function widenTargets(svg) {
    var width = svg.viewBox.baseVal ? svg.viewBox.baseVal.width : 0;
    svg.querySelectorAll("g.msg").forEach(function (g) {
      var box = g.getBBox();
      var rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("class", "hit");
      rect.setAttribute("x", "0");
      rect.setAttribute("y", String(box.y - 2));
      rect.setAttribute("width", String(width || box.x + box.width));
      rect.setAttribute("height", String(box.height + 4));
      g.insertBefore(rect, g.firstChild);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var svg = document.querySelector("svg.ladder");
    if (svg) {
      widenTargets(svg);
      svg.addEventListener("click", function (ev) {
        var g = ev.target.closest ? ev.target.closest("g.msg") : null;
        if (g) show(g.getAttribute("data-message-id"));
      });
    }
    var table = document.getElementById("messages");
    if (table) {
      table.addEventListener("click", function (ev) {
        var row = ev.target.closest("tr[data-message-id]");
        if (row && !ev.target.closest("details")) show(row.getAttribute("data-message-id"));
      });
    }
  });
})();

// The Calls list: durations of calls in progress tick, and "Live" adds new
// calls at the top as the capture server stores them (server-sent events).
(function () {
  "use strict";

  function tick() {
    var now = Date.now() * 1000;
    document.querySelectorAll(".live-duration").forEach(function (el) {
      var start = Number(el.getAttribute("data-start-us"));
      if (start) el.textContent = Math.max(0, Math.round((now - start) / 1e6)) + " s";
    });
  }

  function addRow(html) {
    var tbody = document.querySelector("#calls-table tbody");
    if (!tbody) return;
    var holder = document.createElement("tbody");
    holder.innerHTML = html.trim();
    var row = holder.firstElementChild;
    if (!row) return;
    var id = row.getAttribute("data-call-id");
    tbody.querySelectorAll("tr").forEach(function (tr) {
      if (tr.getAttribute("data-call-id") === id || tr.querySelector("td.empty")) tr.remove();
    });
    row.classList.add("new");
    tbody.insertBefore(row, tbody.firstChild);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector(".live-duration")) setInterval(tick, 1000);
    var box = document.getElementById("live-tail");
    if (!box) return;
    var source = null;
    box.addEventListener("change", function () {
      if (box.checked && !source) {
        source = new EventSource(box.getAttribute("data-stream"));
        source.addEventListener("call", function (ev) {
          addRow(ev.data);
          tick();
        });
        // The tail could not go on from where it was (away too long): it
        // says so, and goes on from now.
        source.addEventListener("restarted", function (ev) {
          var note = document.getElementById("live-note");
          if (note) note.textContent = ev.data;
        });
        source.addEventListener("logout", function () { source.close(); source = null; box.checked = false; });
        setInterval(tick, 1000);
      } else if (!box.checked && source) {
        source.close();
        source = null;
      }
    });
  });
})();
