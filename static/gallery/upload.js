// Uploads each chosen or dropped file in its own request, so each gets a progress bar and
// its own result; the form still works without JavaScript (one request for all files).
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form || !window.FormData) return;
  const input = form.querySelector('input[type="file"]');
  const dropZone = document.getElementById("drop-zone");
  const list = document.getElementById("upload-list");
  const maxBytes = Number(form.dataset.maxBytes);
  const queue = [];
  let active = 0;
  const PARALLEL = 2;

  // As the server words it (validation.human_size): 25 MiB, 26.3 MiB.
  function megabytes(bytes) { return String(Math.round(bytes / 1048576 * 10) / 10) + " MiB"; }

  function addRow(file) {
    const row = document.createElement("li");
    row.className = "upload-item pending";
    row.innerHTML = '<span class="name"></span><progress max="100" value="0"></progress>' +
      '<span class="message">Waiting…</span>';
    row.querySelector(".name").textContent = file.name;
    list.prepend(row);
    return row;
  }

  function finish(row, ok, message, notes) {
    row.className = "upload-item " + (ok ? "ok" : "error");
    row.querySelector("progress").value = 100;
    row.querySelector(".message").textContent = message;
    (notes || []).forEach(function (note) {
      const span = document.createElement("span");
      span.className = "note";
      span.textContent = note;
      row.appendChild(span);
    });
  }

  function send(file, row) {
    const data = new FormData();
    data.append("csrfmiddlewaretoken", form.elements.csrfmiddlewaretoken.value);
    data.append("tags", form.elements.tags.value);
    data.append("caption", form.elements.caption.value);
    data.append("files", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", form.action || window.location.href);
    request.setRequestHeader("Accept", "application/json");
    request.upload.onprogress = function (event) {
      if (event.lengthComputable) {
        row.querySelector("progress").value = Math.round(100 * event.loaded / event.total);
        row.querySelector(".message").textContent = "Uploading…";
      }
    };
    request.onload = function () {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (error) { body = null; }
      if (body && body.results && body.results.length) {
        const result = body.results[0];
        const message = result.ok
          ? (result.created ? "Uploaded; indexing " + result.image.status + "." : "Already in the library.")
          : result.error;
        finish(row, result.ok, message, result.notes);
        if (result.image && result.image.thumbnail_url) {
          const thumbnail = document.createElement("img");
          thumbnail.className = "thumb";
          thumbnail.alt = "";
          thumbnail.src = result.image.thumbnail_url;
          row.prepend(thumbnail);
        }
      } else if (body && body.errors) {
        const messages = Object.values(body.errors).flat().map(function (e) { return e.message; });
        finish(row, false, messages.join(" "));
      } else {
        finish(row, false, "The server answered " + request.status + "; the file was not stored.");
      }
      next();
    };
    request.onerror = function () {
      finish(row, false, "Network error; the file was not stored. Try again.");
      next();
    };
    request.send(data);
  }

  function next() {
    active -= 1;
    pump();
  }

  function pump() {
    while (active < PARALLEL && queue.length) {
      const item = queue.shift();
      active += 1;
      send(item.file, item.row);
    }
  }

  function enqueue(files) {
    Array.prototype.forEach.call(files, function (file) {
      const row = addRow(file);
      if (file.size === 0) {
        finish(row, false, "The file is empty (0 bytes).");
      } else if (file.size > maxBytes) {
        finish(row, false, "The file is too large (" + megabytes(file.size) + "); the limit is " +
          megabytes(maxBytes) + ".");
      } else {
        queue.push({ file: file, row: row });
      }
    });
    pump();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    enqueue(input.files);
    input.value = "";
  });
  input.addEventListener("change", function () {
    enqueue(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach(function (name) {
    dropZone.addEventListener(name, function (event) {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropZone.addEventListener(name, function (event) {
      event.preventDefault();
      dropZone.classList.remove("dragging");
    });
  });
  dropZone.addEventListener("drop", function (event) {
    enqueue(event.dataTransfer.files);
  });
})();
