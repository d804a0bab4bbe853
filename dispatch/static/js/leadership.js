// Optional enhancement of the leadership pages: sorting the table of offices without a full
// page load. The header links work on their own (the server sorts); with this script a click
// fetches the same URL, swaps in the new table and keeps the address bar and focus in step.
(function () {
  "use strict";
  var wrap = document.querySelector("[data-sortable-table]");
  if (!wrap || !window.fetch || !window.DOMParser || !window.history) {
    return;
  }
  wrap.addEventListener("click", function (event) {
    var link = event.target.closest("th a");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) {
      return;
    }
    event.preventDefault();
    var url = link.href;
    var column = link.closest("th").cellIndex;
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.querySelector("[data-sortable-table]");
        if (!fresh) {
          throw new Error("no table");
        }
        wrap.innerHTML = fresh.innerHTML;
        var exports = page.querySelector(".exports");
        var current = document.querySelector(".exports");
        if (exports && current) {
          current.innerHTML = exports.innerHTML;
        }
        window.history.replaceState(null, "", url);
        var header = wrap.querySelectorAll("th")[column];
        var again = header && header.querySelector("a");
        if (again) {
          again.focus();
        }
      })
      .catch(function () {
        window.location.href = url; // fall back to the ordinary link
      });
  });
})();
