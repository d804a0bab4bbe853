// Wide tables on every page: each data cell learns its column's name (data-label), shown in
// front of it when a phone lays the table out as cards (site.css); a table box that still
// scrolls sideways becomes keyboard-focusable, named by its table's caption.
(function () {
  "use strict";
  function label(wrap) {
    var table = wrap.querySelector("table");
    if (!table || !table.tHead) return;
    var headings = Array.prototype.map.call(
      table.tHead.rows[0] ? table.tHead.rows[0].cells : [],
      function (cell) { return cell.textContent.replace(/\s+/g, " ").trim(); }
    );
    Array.prototype.forEach.call(table.tBodies, function (body) {
      Array.prototype.forEach.call(body.rows, function (row) {
        Array.prototype.forEach.call(row.cells, function (cell, index) {
          if (cell.tagName === "TD" && !cell.hasAttribute("data-label")) {
            cell.setAttribute("data-label", headings[index] || "");
          }
        });
      });
    });
  }
  function focusable(wrap) {
    if (wrap.scrollWidth > wrap.clientWidth + 1) {
      if (!wrap.hasAttribute("tabindex")) wrap.setAttribute("tabindex", "0");
      if (!wrap.hasAttribute("role")) wrap.setAttribute("role", "region");
      var caption = wrap.querySelector("caption");
      if (caption && !wrap.hasAttribute("aria-label")) {
        wrap.setAttribute("aria-label", caption.textContent.replace(/\s+/g, " ").trim());
      }
    }
  }
  function run() {
    var wraps = document.querySelectorAll(".table-wrap");
    Array.prototype.forEach.call(wraps, label);
    Array.prototype.forEach.call(wraps, focusable);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
  window.addEventListener("resize", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".table-wrap"), focusable);
  });
})();
