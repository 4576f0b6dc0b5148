// Veil console, enterprise pages: detect a chosen file's columns, and send uploads in the
// background so that an error appears next to the form without losing the chosen file.
"use strict";

const PARQUET = /\.(parquet|pq)$/i;

// The page's words for what this script says, in the reader's language: the template puts
// them on the file field as data-text-* attributes (the CSP allows no inline script).
function veilText(name) {
  const holder = document.querySelector("[data-text-" + name + "]");
  return holder ? holder.getAttribute("data-text-" + name) : "";
}

// Send the start of the chosen file (a CSV's first MiB; a Parquet file whole, as its schema
// is at its end) for the server to detect each column's type; show the fieldsets it answers.
async function veilDetect(input) {
  const file = input.files && input.files[0];
  const target = document.getElementById("detected-columns");
  const status = document.getElementById("detect-status");
  if (!file || !target) {
    return;
  }
  const whole = PARQUET.test(file.name) || file.type.includes("parquet");
  const limit = Number(input.dataset.sampleBytes) || 1048576;
  const sample = whole ? file : file.slice(0, limit);
  const body = new FormData();
  body.append("sample", sample, file.name);
  body.append("partial", !whole && file.size > limit ? "1" : "0");
  // A CSV's text encoding, when the owner chose one (else the server detects it).
  const encoding = input.form && input.form.elements.namedItem("encoding");
  if (encoding && encoding.value) {
    body.append("encoding", encoding.value);
  }
  status.textContent = veilText("reading");
  const ok = await veilFetchInto(input.dataset.detect, body, target);
  status.textContent = ok ? veilText("detected") : veilText("unreadable");
  if (ok) {
    const first = target.querySelector("select, input:not([type=hidden])");
    if (first) {
      first.focus();
    }
  }
}

// Post an upload form with the CSRF header; go to the page it redirects to, or show the
// error it answers in the form's own error box.
async function veilUpload(form) {
  const box = form.querySelector("[data-error]");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  box.innerHTML = "";
  try {
    const response = await fetch(form.action, {
      method: "POST",
      headers: { "X-CSRF-Token": veilCsrf() },
      body: new FormData(form),
      credentials: "same-origin",
    });
    if (response.ok && response.redirected) {
      window.location.assign(response.url);
      return;
    }
    const html = await response.text();
    const doc = new DOMParser().parseFromString(html, "text/html");
    const main = doc.querySelector("main");
    box.innerHTML = main ? main.innerHTML : doc.body.innerHTML;
  } catch (error) {
    const alert = document.createElement("div");
    const line = document.createElement("p");
    const strong = document.createElement("strong");
    alert.className = "error";
    alert.setAttribute("role", "alert");
    strong.textContent = veilText("offline");
    line.appendChild(strong);
    alert.appendChild(line);
    box.replaceChildren(alert);
  }
  button.disabled = false;
  box.focus();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("input[data-detect]").forEach((input) => {
    input.addEventListener("change", () => veilDetect(input));
    const encoding = input.form && input.form.elements.namedItem("encoding");
    if (encoding) {
      encoding.addEventListener("change", () => veilDetect(input));
    }
  });
  document.querySelectorAll("form[data-upload]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      veilUpload(form);
    });
  });
});
