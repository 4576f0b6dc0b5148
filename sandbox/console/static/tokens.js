// The API tokens page: after a rotation or a refusal, move the keyboard focus to the answer
// (marked data-focus); a new token's field selects its whole value when focused, to copy it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const target = document.querySelector("[data-focus]");
  if (target) {
    target.scrollIntoView({ block: "center" });
    target.focus({ preventScroll: true });
  }
  const secret = document.querySelector("input.secret");
  if (secret) {
    secret.addEventListener("focus", () => secret.select());
  }
});
