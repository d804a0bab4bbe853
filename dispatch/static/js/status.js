/* The delivery status, live: while letters are being sent, ask the server every 5 seconds and
   update the counts and each recipient's row in place. Without JavaScript the page refreshes
   itself (a <meta> refresh inside <noscript>) for as long as something is in flight. */
(function () {
  "use strict";

  var section = document.querySelector("[data-status-url]");
  if (!section || !window.fetch) {
    return;
  }
  var url = section.getAttribute("data-status-url");
  var note = section.querySelector("[data-refresh-note]");
  var PERIOD = 5000;
  var timer = null;
  var FIELDS = [
    "email",
    "delivery_label",
    "delivery_detail",
    "opened_at",
    "confirmed_label",
    "acknowledged_by",
    "reminders_label",
  ];

  function update(data) {
    Object.keys(data.counts).forEach(function (key) {
      Array.prototype.forEach.call(
        section.querySelectorAll('[data-count="' + key + '"]'),
        function (element) {
          element.textContent = data.counts[key];
        }
      );
    });
    var confirmed = section.querySelector("[data-count-confirmed]");
    if (confirmed) {
      confirmed.textContent =
        "đã xác nhận " + data.counts.acknowledged + "/" + data.counts.total;
    }
    data.recipients.forEach(function (recipient) {
      var row = section.querySelector('tr[data-recipient-id="' + recipient.id + '"]');
      if (!row) {
        return;
      }
      row.className = "delivery-" + (recipient.delivery || "none");
      FIELDS.forEach(function (field) {
        var cell = row.querySelector('[data-field="' + field + '"]');
        if (cell && cell.textContent !== recipient[field]) {
          cell.textContent = recipient[field];
        }
      });
    });
    if (note) {
      note.textContent = data.in_flight
        ? "Đang gửi thư: trang tự cập nhật."
        : "Không còn thư nào đang chờ gửi.";
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.json();
      })
      .then(function (data) {
        update(data);
        // Keep polling while letters are in flight; a slower pace afterwards, since
        // confirmations and reminders still arrive.
        timer = window.setTimeout(poll, data.in_flight ? PERIOD : PERIOD * 6);
      })
      .catch(function () {
        // A blip (a restart, a busy database): ask again soon, not at the slow pace.
        timer = window.setTimeout(poll, PERIOD * 2);
      });
  }

  document.addEventListener("visibilitychange", function () {
    window.clearTimeout(timer);
    if (document.visibilityState === "visible") {
      poll();
    }
  });
  timer = window.setTimeout(poll, PERIOD);
})();
