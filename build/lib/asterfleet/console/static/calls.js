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
