// A cited passage as text, with the rows of a table (lines with " | " between cells, as the
// extractors write them) laid out as a table whose rows keep their cells on one line; the
// table scrolls sideways instead of wrapping a row.

import { h } from "./dom.js";

const CELL_SEPARATOR = " | ";

/** Nodes for the passage: text runs, and a scrollable table per run of table rows. */
export function passageNodes(text) {
  const nodes = [];
  let lines = [];
  let rows = [];
  const flushText = () => {
    if (lines.length) nodes.push(h("span", { class: "passage-text" }, lines.join("\n")));
    lines = [];
  };
  const flushRows = () => {
    if (rows.length > 1) {
      nodes.push(h("div", { class: "passage-table" },
        h("table", {}, h("tbody", {}, rows.map((cells) => h("tr", {},
          cells.map((cell) => h("td", {}, cell))))))));
    } else if (rows.length === 1) {
      lines.push(rows[0].join(CELL_SEPARATOR)); // a lone line with a bar is just text
      flushText();
    }
    rows = [];
  };
  for (const line of (text || "").split("\n")) {
    if (line.includes(CELL_SEPARATOR)) {
      if (!rows.length) flushText();
      rows.push(line.split(CELL_SEPARATOR));
    } else {
      if (rows.length) flushRows();
      lines.push(line);
    }
  }
  flushRows();
  flushText();
  return nodes;
}
