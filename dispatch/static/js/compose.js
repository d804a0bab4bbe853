/* The composer, enhanced: autosave to the server (and to this browser while offline), a live
   preview, per-field errors as you type, the directory search without reloading, a size check
   before uploading. Everything here is optional: without JavaScript the buttons of the form do
   the same work through ordinary posts. */
(function () {
  "use strict";

  var form = document.getElementById("compose-form");
  if (!form || !window.fetch || !window.FormData || !window.JSON) {
    return;
  }

  var statusLine = document.getElementById("autosave-status");
  var frame = document.getElementById("preview-frame");
  var csrfInput = form.querySelector('input[name="csrf_token"]');
  var csrf = csrfInput ? csrfInput.value : "";
  var autosaveUrl = form.getAttribute("data-autosave-url");
  var dispatchId = form.getAttribute("data-dispatch-id") || "";
  var DEBOUNCE = 2500; // after the last keystroke
  var INTERVAL = 15000; // a save at least this often while there are changes
  var timer = null;
  var inFlight = false;
  var again = false;
  var submitting = false;

  function storageKey() {
    return "dispatch:draft:" + (dispatchId || "new");
  }

  function say(message, isError) {
    if (!statusLine) {
      return;
    }
    statusLine.textContent = message;
    statusLine.classList.toggle("is-error", Boolean(isError));
  }

  // The form's text fields as [name, value] pairs: what the server stores. Files, the CSRF
  // token and the pressed button are not part of the draft.
  function snapshot() {
    var pairs = [];
    var data = new FormData(form);
    data.forEach(function (value, name) {
      if (typeof value === "string" && name !== "csrf_token" && name !== "action") {
        pairs.push([name, value]);
      }
    });
    return JSON.stringify(pairs);
  }

  var lastSaved = snapshot();

  function keepLocally(state) {
    try {
      window.localStorage.setItem(
        storageKey(),
        JSON.stringify({ at: new Date().toISOString(), state: state })
      );
    } catch (e) {
      /* storage full or disabled: the server copy is what counts */
    }
  }

  function forgetLocal() {
    try {
      window.localStorage.removeItem(storageKey());
    } catch (e) {
      /* ignore */
    }
  }

  function refreshPreview(url) {
    if (!frame || !url) {
      return;
    }
    frame.hidden = false;
    var placeholder = document.querySelector("[data-preview-placeholder]");
    if (placeholder) {
      placeholder.hidden = true;
    }
    frame.src = url + (url.indexOf("?") < 0 ? "?" : "&") + "t=" + Date.now();
  }

  function fieldWrapper(key) {
    return form.querySelector('[data-field="' + key + '"]');
  }

  // Put each field's current problem next to it (and take away the fixed ones).
  function showErrors(errors) {
    var wrappers = form.querySelectorAll("[data-field]");
    Array.prototype.forEach.call(wrappers, function (wrapper) {
      var key = wrapper.getAttribute("data-field");
      var control = wrapper.querySelector("input, textarea, select");
      var errorId = "f-" + (key === "attachments" ? "attachment" : key) + "-loi";
      var existing = document.getElementById(errorId);
      var message = errors[key];
      if (!control || wrapper.querySelector('[role="alert"]')) {
        return; // an upload refusal stays until the next upload
      }
      var described = (control.getAttribute("aria-describedby") || "")
        .split(" ")
        .filter(function (id) {
          return id && id !== errorId;
        });
      if (message) {
        if (!existing) {
          existing = document.createElement("p");
          existing.className = "field-error";
          existing.id = errorId;
          control.parentNode.insertBefore(existing, control);
        }
        existing.textContent = message;
        described.push(errorId);
        control.setAttribute("aria-invalid", "true");
        wrapper.classList.add("has-error");
      } else {
        if (existing) {
          existing.parentNode.removeChild(existing);
        }
        control.removeAttribute("aria-invalid");
        wrapper.classList.remove("has-error");
      }
      if (described.length) {
        control.setAttribute("aria-describedby", described.join(" "));
      } else {
        control.removeAttribute("aria-describedby");
      }
    });
  }

  function adopt(result) {
    // The first save created the draft: from now on this page edits it.
    dispatchId = String(result.id);
    form.setAttribute("data-dispatch-id", dispatchId);
    autosaveUrl = result.urls.autosave;
    form.setAttribute("action", result.urls.edit);
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", result.urls.edit);
    }
    var link = document.querySelector("[data-preview-link]");
    if (link) {
      link.href = result.urls.preview;
    }
  }

  function save() {
    window.clearTimeout(timer);
    if (submitting) {
      return;
    }
    var state = snapshot();
    if (state === lastSaved) {
      return;
    }
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    var body = new FormData();
    JSON.parse(state).forEach(function (pair) {
      body.append(pair[0], pair[1]);
    });
    body.append("csrf_token", csrf);
    say("Đang lưu…", false);
    fetch(autosaveUrl, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" },
    })
      .then(function (response) {
        return response
          .json()
          .catch(function () {
            return { message: "máy chủ trả lời " + response.status };
          })
          .then(function (data) {
            if (!response.ok) {
              throw new Error(data.message || "máy chủ trả lời " + response.status);
            }
            return data;
          });
      })
      .then(function (result) {
        if (!result.id) {
          // A new letter still blank: the server kept nothing, and there is nothing to keep.
          lastSaved = state;
          forgetLocal();
          say(result.message, false);
          return;
        }
        var wasNew = !dispatchId;
        if (wasNew) {
          forgetLocal();
          adopt(result);
        }
        lastSaved = state;
        if (snapshot() === state) {
          forgetLocal();
        }
        var count = Object.keys(result.errors || {}).length;
        say(
          result.message +
            (count ? " Còn " + count + " mục cần sửa trước khi ban hành." : " Có thể ban hành."),
          false
        );
        showErrors(result.errors || {});
        if ((result.changed || wasNew) && result.valid) {
          refreshPreview(result.urls.preview);
        }
      })
      .catch(function (error) {
        say(
          "Chưa lưu được lên máy chủ (" + error.message + "). Nội dung vẫn được giữ tạm trên " +
            "máy này và sẽ được lưu khi kết nối lại.",
          true
        );
      })
      .then(function () {
        inFlight = false;
        if (again) {
          again = false;
          timer = window.setTimeout(save, 500);
        }
      });
  }

  function changed(delay) {
    keepLocally(snapshot());
    window.clearTimeout(timer);
    timer = window.setTimeout(save, delay);
  }

  form.addEventListener("input", function (event) {
    if (event.target && event.target.type === "file") {
      return;
    }
    changed(DEBOUNCE);
  });
  form.addEventListener("change", function (event) {
    if (event.target && event.target.type === "file") {
      return;
    }
    changed(500);
  });
  window.setInterval(save, INTERVAL);
  window.addEventListener("online", save);

  form.addEventListener("submit", function () {
    submitting = true;
    window.clearTimeout(timer);
  });

  // Leaving the page (closing the tab): send what is unsaved in one last request.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "hidden" || submitting || !navigator.sendBeacon) {
      return;
    }
    var state = snapshot();
    if (state === lastSaved || !dispatchId) {
      return; // a new letter stays in this browser rather than becoming a second draft
    }
    var body = new FormData();
    JSON.parse(state).forEach(function (pair) {
      body.append(pair[0], pair[1]);
    });
    body.append("csrf_token", csrf);
    if (navigator.sendBeacon(autosaveUrl, body)) {
      lastSaved = state;
    }
  });

  // What a state says, as the server keeps it: the page drawn after a save differs from the
  // form that was posted (a fresh empty appendix slot, renumbered slots, trimmed spaces, the
  // page's own bookkeeping fields), and a copy whose content the server already has is no
  // copy "the server never got".
  var LAYOUT_FIELDS = ["appendix_count", "appendix_slots", "recipients_group", "q"];
  function content(state) {
    var items = [];
    var offices = []; // ticked offices: the page may list them in another order
    JSON.parse(state).forEach(function (pair) {
      var value = String(pair[1]).normalize("NFC").replace(/\s+/g, " ").trim();
      if (!value || LAYOUT_FIELDS.indexOf(pair[0]) >= 0) {
        return;
      }
      if (pair[0] === "recipient") {
        offices.push(value);
      } else {
        items.push(pair[0].replace(/^appendix-\d+-/, "appendix-") + "=" + value);
      }
    });
    return items.concat(offices.sort()).join("\n");
  }

  // A copy kept in this browser that the server never got: offer it back.
  (function offerRestore() {
    var banner = document.getElementById("restore-banner");
    var saved = null;
    try {
      saved = JSON.parse(window.localStorage.getItem(storageKey()) || "null");
    } catch (e) {
      saved = null;
    }
    if (!banner || !saved || !saved.state) {
      return;
    }
    if (content(saved.state) === content(snapshot())) {
      forgetLocal(); // saved by a button of the form: the server has it all
      return;
    }
    var time = banner.querySelector("[data-restore-time]");
    if (time) {
      time.textContent = new Date(saved.at).toLocaleString("vi-VN");
    }
    banner.hidden = false;
    banner.addEventListener("click", function (event) {
      var choice = event.target.getAttribute && event.target.getAttribute("data-restore");
      if (!choice) {
        return;
      }
      banner.hidden = true;
      if (choice === "no") {
        forgetLocal();
        return;
      }
      restore(JSON.parse(saved.state));
      changed(100);
    });
  })();

  function restore(pairs) {
    var byName = {};
    pairs.forEach(function (pair) {
      (byName[pair[0]] = byName[pair[0]] || []).push(pair[1]);
    });
    Array.prototype.forEach.call(form.elements, function (element) {
      if (!element.name || !(element.name in byName) || element.type === "file") {
        return;
      }
      if (element.type === "checkbox") {
        element.checked = byName[element.name].indexOf(element.value) >= 0;
      } else if (element.type !== "hidden" && element.type !== "submit") {
        element.value = byName[element.name][0];
      }
    });
  }

  // Files: refuse what is over the limit of a request, or over the room left in the e-mail,
  // before sending it (the server refuses it too, and keeps the files already uploaded).
  var fileInput = document.getElementById("f-attachment");
  var maxUpload = parseInt(form.getAttribute("data-max-upload"), 10) || 0;
  var mailRoom = parseInt(form.getAttribute("data-mail-room"), 10);
  if (fileInput && maxUpload) {
    fileInput.addEventListener("change", function () {
      var total = 0;
      Array.prototype.forEach.call(fileInput.files || [], function (file) {
        total += file.size;
      });
      var wrapper = fieldWrapper("attachments");
      var error = document.getElementById("f-attachment-loi");
      var overRoom = !isNaN(mailRoom) && total > mailRoom;
      if (total > maxUpload || overRoom) {
        if (!error) {
          error = document.createElement("p");
          error.className = "field-error";
          error.id = "f-attachment-loi";
          fileInput.parentNode.insertBefore(error, fileInput);
        }
        error.textContent = overRoom && total <= maxUpload
          ? "Tệp quá lớn: thư gửi đi chỉ còn trống " + form.getAttribute("data-mail-room-text") +
            " cho tệp gửi kèm."
          : "Tệp quá lớn: mỗi lần gửi tối đa " + form.getAttribute("data-max-upload-text") + ".";
        fileInput.value = "";
        fileInput.setAttribute("aria-invalid", "true");
        fileInput.setAttribute("aria-describedby", "f-attachment-goi-y f-attachment-loi");
        if (wrapper) {
          wrapper.classList.add("has-error");
        }
      } else if (error && !error.hasAttribute("role")) {
        error.parentNode.removeChild(error);
        fileInput.removeAttribute("aria-invalid");
      }
    });
  }

  // Changing the group: the offices listed change with it, which the server decides.
  var pickGroup = form.querySelector("[data-pick-group]");
  var groupSelect = document.getElementById("f-group");
  if (pickGroup && groupSelect) {
    groupSelect.addEventListener("change", function () {
      pickGroup.click();
    });
  }

  // Counting the ticked offices.
  function countChosen() {
    var counter = form.querySelector("[data-chosen-count]");
    if (counter) {
      counter.textContent = form.querySelectorAll('input[name="recipient"]:checked').length;
    }
  }
  form.addEventListener("change", function (event) {
    if (event.target && event.target.name === "recipient") {
      countChosen();
    }
  });

  // The directory search without leaving the page.
  var searchButton = form.querySelector("[data-search]");
  var searchInput = document.getElementById("f-q");
  var results = document.getElementById("search-results");
  function search(event) {
    if (event) {
      event.preventDefault();
    }
    var query = (searchInput.value || "").trim();
    if (!query) {
      return;
    }
    var url =
      form.getAttribute("data-search-url") +
      "?q=" +
      encodeURIComponent(query) +
      "&on=" +
      encodeURIComponent(form.getAttribute("data-recipients-day") || "");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.json();
      })
      .then(function (data) {
        var listed = {};
        Array.prototype.forEach.call(
          form.querySelectorAll('input[name="recipient"]'),
          function (box) {
            listed[box.value] = true;
          }
        );
        results.textContent = "";
        var fieldset = document.createElement("fieldset");
        fieldset.className = "checklist";
        var legend = document.createElement("legend");
        legend.textContent = "Kết quả tìm “" + query + "”";
        fieldset.appendChild(legend);
        var offices = data.offices.filter(function (office) {
          return !listed[String(office.id)];
        });
        if (!offices.length) {
          var none = document.createElement("p");
          none.textContent = "Không tìm thấy cơ quan nào khác với “" + query + "”.";
          fieldset.appendChild(none);
        } else {
          var list = document.createElement("ul");
          offices.forEach(function (office) {
            var item = document.createElement("li");
            var box = document.createElement("input");
            box.type = "checkbox";
            box.name = "recipient";
            box.value = office.id;
            box.id = "r-" + office.id;
            var label = document.createElement("label");
            label.htmlFor = box.id;
            label.textContent = office.code + " — " + office.name + " ";
            var email = document.createElement("span");
            email.className = "muted";
            email.textContent = office.email + (office.placeholder ? " (địa chỉ tạm)" : "");
            label.appendChild(email);
            item.appendChild(box);
            item.appendChild(label);
            list.appendChild(item);
          });
          fieldset.appendChild(list);
        }
        results.appendChild(fieldset);
      })
      .catch(function () {
        // Fall back to the ordinary post, which searches on the server.
        searchButton.removeEventListener("click", search);
        searchButton.click();
      });
  }
  if (searchButton && searchInput && results) {
    searchButton.addEventListener("click", search);
    searchInput.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        search(event);
      }
    });
  }
})();
