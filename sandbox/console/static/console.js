// Veil console: the little script the pages need. Everything works by keyboard.
"use strict";

// The CSRF token of this page (forms carry it too; scripts send it as a header).
function veilCsrf() {
  const field = document.querySelector('input[name="csrf"]');
  return field ? field.value : "";
}

// POST a form's fields with fetch and put the HTML answer into a target element.
// Used where a page shows a partial answer (a preview, detected columns) in place.
async function veilFetchInto(url, body, target) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "X-CSRF-Token": veilCsrf() },
    body: body,
    credentials: "same-origin",
  });
  target.innerHTML = await response.text();
  target.focus();
  return response.ok;
}

// Pages that show work in progress ask to be refreshed: <main data-refresh="3">.
document.addEventListener("DOMContentLoaded", () => {
  const main = document.querySelector("main[data-refresh], [data-refresh]");
  if (main) {
    const seconds = Number(main.getAttribute("data-refresh")) || 3;
    setTimeout(() => window.location.reload(), seconds * 1000);
  }
  document.dispatchEvent(new Event("veil:ready"));
});
