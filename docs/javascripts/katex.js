// Typeset the math pymdownx.arithmatex (generic mode) leaves in <span|div class="arithmatex">, with the
// KaTeX vendored in assets/katex (no network). Runs on every page load, also under instant navigation.
function renderArithmatex(root) {
  root.querySelectorAll(".arithmatex").forEach(function (element) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(function () { renderArithmatex(document.body); });
} else {
  document.addEventListener("DOMContentLoaded", function () { renderArithmatex(document.body); });
}
