// Progressive enhancement only: every page works without this script.
// It shows the copy button next to a read-only secret field.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    const status = document.getElementById(button.dataset.copyStatus);
    if (!field || !status) continue;
    field.addEventListener("focus", () => field.select());
    button.hidden = false;
    button.addEventListener("click", async () => {
      field.focus();
      field.select();
      let copied = false;
      try {
        await navigator.clipboard.writeText(field.value); // needs a secure context
        copied = true;
      } catch {
        copied = document.execCommand("copy");
      }
      status.textContent = copied ? "Copied to the clipboard." : "Could not copy: the text is selected, press Ctrl+C (or ⌘C).";
    });
  }
});
