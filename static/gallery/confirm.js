// Asks before a destructive action: a button or form with data-confirm="question" goes on
// only when the person says OK. (A script file, not onclick/onsubmit attributes, so the
// Content-Security-Policy needs no inline-script exception.)
document.addEventListener("click", function (event) {
  const button = event.target.closest("button[data-confirm], input[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});
document.addEventListener("submit", function (event) {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
