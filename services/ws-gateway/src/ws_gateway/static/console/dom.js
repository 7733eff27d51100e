// A few DOM helpers: elements built from data, text always set as text (never as HTML).

// el("td", { class: "amount", title: "…", dataset: { paymentId: id } }, "12.50 EUR")
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

// Replace a table body's rows (or any container's children) at once.
export function fill(container, rows) {
  container.replaceChildren(...rows);
}

// A row of cells from [className, text | Node] pairs.
export function row(cells, attrs = {}) {
  return el("tr", attrs, ...cells.map(([cls, content]) => el("td", { class: cls }, content)));
}
