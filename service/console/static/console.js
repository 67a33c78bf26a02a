// The vsearch console: plain JavaScript over the public API, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (selector) => document.querySelector(selector);
const KEY = "vsearch-api-key";
const state = { index: null, docsAfter: null, docsPages: [], store: null };

// --- the API ----------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.param = error.param;
    this.code = error.code;
  }
}

async function api(method, path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text && (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  if (!response.ok) {
    if (response.status === 401) askForKey();
    throw new ApiError(response.status, (data && data.error) || {});
  }
  return data;
}

function showError(error) {
  const box = $("#error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  const where = error.param ? ` (${error.param})` : "";
  box.textContent = `${error.message}${where}`;
  box.hidden = false;
}

async function attempt(work) {
  showError(null);
  try { return await work(); } catch (error) { showError(error); return undefined; }
}

function askForKey() {
  const dialog = $("#key-dialog");
  if (!dialog.open) dialog.showModal();
}

// --- rendering helpers ------------------------------------------------------------------------------------------

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function escapeRegExp(text) { return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

function highlighted(text, query) {
  // The query's words wrapped in <mark>, built as nodes (the text is never parsed as HTML).
  const words = (query.match(/\w+/g) || []).filter((w) => w.length > 1).map(escapeRegExp);
  const fragment = document.createDocumentFragment();
  if (!words.length) { fragment.append(text); return fragment; }
  const pattern = new RegExp(`\\b(${words.join("|")})\\b`, "gi");
  text.split(pattern).forEach((part, i) => fragment.append(i % 2 ? element("mark", { textContent: part }) : part));
  return fragment;
}

function bytes(n) {
  return n > 1e9 ? `${(n / 1e9).toFixed(1)} GB` : n > 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.round(n / 1e3)} kB`;
}

// --- indexes ----------------------------------------------------------------------------------------------------

async function loadIndexes() {
  const list = await api("GET", "/v1/indexes");
  const select = $("#index-select");
  const previous = state.index;
  select.replaceChildren(...list.data.map((index) => element("option", { value: index.name, textContent: index.name })));
  state.index = list.data.some((i) => i.name === previous) ? previous : (list.data[0] || {}).name || null;
  if (state.index) select.value = state.index;
  $("#indexes tbody").replaceChildren(...list.data.map((index) => element("tr", {},
    element("td", { textContent: index.name }), element("td", { textContent: index.model }),
    element("td", { textContent: index.query_model || "" }), element("td", { textContent: index.kind }),
    element("td", { textContent: index.document_count }), element("td", { textContent: index.vector_count }),
    element("td", { textContent: bytes(index.bytes) }))));
}

async function loadModels() {
  const models = (await api("GET", "/v1/models")).data.map((m) => m.id);
  $("#new-index-model").replaceChildren(...models.filter((m) => !m.startsWith("ft:"))
    .map((m) => element("option", { value: m, textContent: m })));
  for (const select of document.querySelectorAll("select.model")) {
    select.replaceChildren(element("option", { value: "", textContent: "the index's" }),
      ...models.map((m) => element("option", { value: m, textContent: m })));
  }
}

async function createIndex(event) {
  event.preventDefault();
  await attempt(async () => {
    const body = { name: $("#new-index-name").value, model: $("#new-index-model").value, kind: $("#new-index-kind").value };
    await api("POST", "/v1/indexes", body);
    state.index = body.name;
    await loadIndexes();
    $("#upload-status").textContent = `Index ${body.name} created.`;
  });
}

function parseRecords(name, text) {
  if (name.endsWith(".csv")) {
    const rows = parseCsv(text);
    const header = rows.shift() || [];
    return rows.filter((r) => r.length > 1 || r[0]).map((row) => {
      const record = { metadata: {} };
      header.forEach((column, i) => {
        if (column === "id" || column === "text") record[column] = row[i];
        else record.metadata[column] = row[i];
      });
      return record;
    });
  }
  return text.split("\n").filter((line) => line.trim()).map((line) => {
    const { id, text: body, metadata, ...rest } = JSON.parse(line);
    return { id: id === undefined ? undefined : String(id), text: body, metadata: metadata || rest };
  });
}

function parseCsv(text) {
  // RFC 4180: quoted fields may hold commas, quotes ("") and newlines.
  const rows = [[]];
  let field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { rows[rows.length - 1].push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      rows[rows.length - 1].push(field); field = ""; rows.push([]);
    } else field += c;
  }
  rows[rows.length - 1].push(field);
  return rows;
}

async function upload(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file || !state.index) return;
  await attempt(async () => {
    const records = parseRecords(file.name, await file.text());
    const progress = $("#upload-progress");
    progress.hidden = false;
    progress.max = records.length;
    progress.value = 0;
    let created = 0, updated = 0;
    for (let start = 0; start < records.length; start += 100) {
      const result = await api("POST", `/v1/indexes/${state.index}/documents`, { documents: records.slice(start, start + 100) });
      created += result.created; updated += result.updated;
      progress.value = Math.min(start + 100, records.length);
      $("#upload-status").textContent = `${progress.value} of ${records.length} sent`;
    }
    $("#upload-status").textContent = `Done: ${created} created, ${updated} updated, into ${state.index}.`;
    await loadIndexes();
  });
}

// --- search -----------------------------------------------------------------------------------------------------

function side(letter) {
  return { mode: $(`#mode-${letter}`).value, model: $(`#model-${letter}`).value, alpha: Number($(`#alpha-${letter}`).value) };
}

async function runQuery(settings, query, common) {
  const body = { ...common, mode: settings.mode, include: ["text", "metadata"] };
  if (settings.mode === "hybrid") body.alpha = settings.alpha;
  if (settings.model) {
    // Another query model: embed the query with it, then search by that vector (dense only).
    const embedded = await api("POST", "/v1/embeddings", { model: settings.model, input: [query], encoding_format: "float" });
    body.vector = embedded.data[0].embedding;
    body.mode = "dense";
    delete body.alpha;
  } else {
    body.query = query;
  }
  return (await api("POST", `/v1/indexes/${state.index}/query`, body)).data;
}

function renderHits(list, hits, query) {
  list.replaceChildren(...hits.map((hit) => {
    const ranks = Object.entries(hit.ranks || {}).map(([name, rank]) => `${name} #${rank}`).join(", ");
    return element("li", { className: "hit" },
      element("div", { className: "hit-head" },
        element("strong", { className: "hit-id", textContent: hit.id }),
        element("span", { className: "score", textContent: `score ${hit.score.toFixed(4)}` }),
        element("span", { className: "ranks", textContent: ranks }),
        hit.parent_id ? element("span", { className: "parent", textContent: `in ${hit.parent_id}` }) : ""),
      element("p", { className: "hit-text" }, highlighted(hit.text || "", query)),
      Object.keys(hit.metadata || {}).length ? element("code", { className: "metadata", textContent: JSON.stringify(hit.metadata) }) : "");
  }));
  if (!hits.length) list.replaceChildren(element("li", { className: "empty", textContent: "No hits." }));
}

async function search(event) {
  event.preventDefault();
  if (!state.index) { showError({ message: "Create an index first (Indexes)." }); return; }
  const query = $("#query-input").value;
  const common = { top_k: Number($("#topk-input").value) || 10 };
  const filterText = $("#filter-input").value.trim();
  if (filterText) {
    try { common.filter = JSON.parse(filterText); } catch (error) { showError({ message: `The filter is not JSON: ${error.message}`, param: "filter" }); return; }
  }
  if ($("#group-input").checked) common.group_by = "document";
  const comparing = $("#compare-toggle").checked;
  for (const list of [$("#results-a"), $("#results-b")]) {
    list.replaceChildren(element("li", { className: "empty", textContent: "Searching…" }));
  }
  await attempt(async () => {
    const [a, b] = await Promise.all([runQuery(side("a"), query, common), comparing ? runQuery(side("b"), query, common) : null]);
    renderHits($("#results-a"), a, query);
    $("#results-b-column").hidden = !comparing;
    if (comparing) renderHits($("#results-b"), b, query);
  });
}

// --- documents --------------------------------------------------------------------------------------------------

async function loadDocuments(after) {
  if (!state.index) return;
  await attempt(async () => {
    const params = new URLSearchParams({ limit: "20", ...(after ? { after } : {}) });
    const page = await api("GET", `/v1/indexes/${state.index}/documents?${params}`);
    $("#documents tbody").replaceChildren(...page.data.map((doc) => element("tr", {},
      element("td", { textContent: doc.id }), element("td", { textContent: doc.text.slice(0, 200) }),
      element("td", {}, element("code", { textContent: JSON.stringify(doc.metadata) })), element("td", { textContent: doc.chunks }))));
    state.docsAfter = page.has_more ? page.last_id : null;
    $("#docs-next").disabled = !page.has_more;
    $("#docs-status").textContent = page.data.length ? `${page.first_id} to ${page.last_id}` : "No documents.";
  });
}

// --- fine-tuning ------------------------------------------------------------------------------------------------

async function loadJobs() {
  await attempt(async () => {
    const jobs = (await api("GET", "/v1/fine_tuning/jobs?limit=50")).data;
    $("#jobs tbody").replaceChildren(...jobs.map((job) => {
      const open = element("button", { type: "button", className: "link", textContent: job.id });
      open.addEventListener("click", () => showJob(job));
      return element("tr", {}, element("td", {}, open), element("td", { textContent: job.status, className: `status ${job.status}` }),
        element("td", { textContent: job.model }), element("td", { textContent: job.fine_tuned_model || "" }),
        element("td", { textContent: new Date(job.created_at * 1000).toLocaleString() }));
    }));
  });
}

async function showJob(job) {
  $("#job-detail").hidden = false;
  $("#job-title").textContent = `${job.id}: ${job.status}`;
  await attempt(async () => {
    const events = (await api("GET", `/v1/fine_tuning/jobs/${job.id}/events?limit=100`)).data;
    $("#job-events").replaceChildren(...events.map((e) => element("li", { textContent: `${new Date(e.created_at * 1000).toLocaleTimeString()} ${e.message}` })));
    const chart = $("#job-chart");
    chart.replaceChildren();
    if (job.result_files && job.result_files.length) drawLoss(chart, await api("GET", `/v1/files/${job.result_files[0]}/content`));
  });
}

function drawLoss(svg, csv) {
  const rows = parseCsv(String(csv).trim());
  const header = rows.shift();
  const step = header.indexOf("step"), loss = header.indexOf("train_loss");
  const points = rows.map((r) => [Number(r[step]), Number(r[loss])]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (!points.length) return;
  const ns = "http://www.w3.org/2000/svg";
  const [w, h, pad] = [480, 200, 28];
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs) || 1, Math.min(...ys), Math.max(...ys)];
  const x = (v) => pad + ((v - x0) / ((x1 - x0) || 1)) * (w - 2 * pad);
  const y = (v) => h - pad - ((v - y0) / ((y1 - y0) || 1)) * (h - 2 * pad);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map(([a, b]) => `${x(a)},${y(b)}`).join(" "));
  line.setAttribute("class", "loss-line");
  const label = (text, lx, ly) => { const t = document.createElementNS(ns, "text"); t.textContent = text; t.setAttribute("x", lx); t.setAttribute("y", ly); return t; };
  svg.append(line, label(y1.toFixed(3), 2, pad - 6), label(y0.toFixed(3), 2, h - 6), label(`step ${x1}`, w - 70, h - 6));
}

// --- vector stores ----------------------------------------------------------------------------------------------

async function loadStores() {
  await attempt(async () => {
    const stores = (await api("GET", "/v1/vector_stores?limit=100")).data;
    $("#stores tbody").replaceChildren(...stores.map((store) => {
      const open = element("button", { type: "button", className: "link", textContent: store.id });
      open.addEventListener("click", () => showStore(store));
      const counts = store.file_counts;
      return element("tr", {}, element("td", {}, open), element("td", { textContent: store.name }),
        element("td", { textContent: store.status, className: `status ${store.status}` }),
        element("td", { textContent: `${counts.completed} of ${counts.total}` + (counts.failed ? `, ${counts.failed} failed` : "") }),
        element("td", { textContent: bytes(store.usage_bytes) }),
        element("td", { textContent: store.expires_at ? new Date(store.expires_at * 1000).toLocaleString() : "never" }));
    }));
  });
}

async function showStore(store) {
  state.store = store.id;
  $("#store-detail").hidden = false;
  $("#store-title").textContent = `${store.name || store.id} (${store.model})`;
  $("#store-results").replaceChildren();
  await attempt(async () => {
    const files = (await api("GET", `/v1/vector_stores/${store.id}/files?limit=100`)).data;
    $("#store-files tbody").replaceChildren(...files.map((file) => element("tr", {},
      element("td", { textContent: file.id }), element("td", { textContent: file.filename }),
      element("td", { textContent: file.status, className: `status ${file.status}` }),
      element("td", { textContent: file.last_error ? `${file.last_error.code}: ${file.last_error.message}` : "" }),
      element("td", {}, element("code", { textContent: JSON.stringify(file.attributes) })))));
  });
}

async function searchStore(event) {
  event.preventDefault();
  const query = $("#store-query").value;
  await attempt(async () => {
    const page = await api("POST", `/v1/vector_stores/${state.store}/search`, { query, max_num_results: 10 });
    $("#store-results").replaceChildren(...page.data.map((result) => {
      const where = result.metadata.page ? `page ${result.metadata.page}` : result.metadata.heading || "";
      return element("li", {}, element("div", { className: "hit-head",
        textContent: `${result.filename} ${where ? `(${where})` : ""} score ${result.score.toFixed(3)}` }),
      element("p", {}, highlighted(result.content.map((c) => c.text).join(" "), query)));
    }));
    if (!page.data.length) $("#store-results").replaceChildren(element("li", { textContent: "No results." }));
  });
}

// --- wiring -----------------------------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `tab-${name}`;
  if (name === "documents") loadDocuments(null);
  if (name === "jobs") loadJobs();
  if (name === "stores") loadStores();
  if (name === "indexes") attempt(loadIndexes);
}

async function start() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  $("#index-select").addEventListener("change", (e) => { state.index = e.target.value; loadDocuments(null); });
  $("#search-form").addEventListener("submit", search);
  $("#create-form").addEventListener("submit", createIndex);
  $("#upload-form").addEventListener("submit", upload);
  $("#store-search-form").addEventListener("submit", searchStore);
  $("#compare-toggle").addEventListener("change", (e) => { $("#side-b").disabled = !e.target.checked; });
  $("#docs-first").addEventListener("click", () => loadDocuments(null));
  $("#docs-next").addEventListener("click", () => loadDocuments(state.docsAfter));
  $("#key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, $("#key-input").value);
    attempt(async () => { await loadModels(); await loadIndexes(); });
  });
  await attempt(async () => { await loadModels(); await loadIndexes(); });
}

document.addEventListener("DOMContentLoaded", start);
