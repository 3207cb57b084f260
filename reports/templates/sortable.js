// Sorting: a click on a header sorts its table by that column, ascending, then descending. Numbers sort by
// value (data-sort), text alphabetically; empty cells ("—") always go last.
function sortKey(cell) {
  if (cell.dataset.sort !== undefined) return parseFloat(cell.dataset.sort);
  return cell.textContent === "—" ? null : cell.textContent;
}
function compareKeys(a, b) {
  if (a === null || b === null) return (a === null) - (b === null);
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, {numeric: true});
}
document.querySelectorAll("table.sortable th").forEach(function (header) {
  header.addEventListener("click", function () {
    const table = header.closest("table");
    const column = Array.prototype.indexOf.call(header.parentNode.children, header);
    const direction = header.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction);
    const sign = direction === "ascending" ? 1 : -1;
    const rows = Array.from(table.tBodies[0].rows);
    rows.sort(function (x, y) {
      const a = sortKey(x.cells[column]), b = sortKey(y.cells[column]);
      if (a === null || b === null) return compareKeys(a, b);  // empty last either way
      return sign * compareKeys(a, b);
    });
    rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
  });
});
