// Optional: every page works without it. Filters apply as soon as a choice changes, and a
// form cannot be sent twice by a double click.
"use strict";
document.addEventListener("change", (event) => {
  const field = event.target;
  if (field.matches("select[data-autosubmit]")) field.form.requestSubmit();
});
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (button) setTimeout(() => { button.disabled = true; }, 0);
});
