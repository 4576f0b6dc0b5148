// Veil console, provider pages: after a preview or a refusal, move the keyboard focus to it,
// so that keyboard and screen-reader users land on the answer to what they just sent.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const target = document.querySelector("[data-focus]");
  if (target) {
    target.focus();
    target.scrollIntoView({ block: "center" });
  }
});
