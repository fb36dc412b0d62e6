// Render the math that pymdownx.arithmatex marked (\( \) inline, \[ \] display) with the vendored KaTeX,
// on every page Material shows (document$ also fires on instant navigation).
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
