// Sovereign Hub dashboard: the little that needs a script. Everything works without it.
"use strict";
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  var question = button && button.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  if (button) {
    // One click, one request: a double click must not queue the same retry twice.
    window.setTimeout(function () { button.disabled = true; }, 0);
  }
});
