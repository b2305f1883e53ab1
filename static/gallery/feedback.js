// Relevance feedback marks: + and − on one image exclude each other, and a marked card shows
// its mark at once. Without JavaScript the checkboxes work as they are (the server refuses
// an image marked both ways).
(function () {
  "use strict";
  const form = document.getElementById("feedback-form");
  if (!form) return;
  form.addEventListener("change", function (event) {
    const box = event.target;
    if (!box.matches('input[type="checkbox"][name="more"], input[type="checkbox"][name="less"]')) return;
    const other = box.name === "more" ? "less" : "more";
    const boxes = function (name) {
      return form.querySelectorAll('input[type="checkbox"][name="' + name + '"][value="' + box.value + '"]');
    };
    // The query image can also be a result: its boxes in both places agree.
    boxes(box.name).forEach(function (input) { input.checked = box.checked; });
    if (box.checked) boxes(other).forEach(function (input) { input.checked = false; });
    form.querySelectorAll('.card[data-image="' + box.value + '"]').forEach(function (card) {
      card.classList.toggle("marked-more", boxes("more")[0].checked);
      card.classList.toggle("marked-less", boxes("less")[0].checked);
    });
  });
})();
