// The security officer's pages: when a form far down the page was refused, the page comes
// back scrolled to the top; bring the error (marked data-focus) into view and focus it, so
// that keyboard and screen-reader users land where the problem is.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const target = document.querySelector("[data-focus]");
  if (target) {
    target.scrollIntoView({ block: "center" });
    target.focus({ preventScroll: true });
  }
});
