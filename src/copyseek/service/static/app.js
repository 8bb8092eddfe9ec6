// The review page of `copyseek serve`: plain script, no build step, talks to the same /v1 API as curl.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, file: null, answer: null, offset: 0, pageSize: 24 };

// ------------------------------------------------------------------ talking to the API
function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let text = `${response.status} ${response.statusText}`;
    try { text = (await response.json()).error || text; } catch (_) { /* not JSON */ }
    if (response.status === 401) text += " — enter an API key above";
    throw new Error(text);
  }
  return response;
}

// Images behind a key cannot be an <img src>: fetch them with the header, show them as blobs.
async function imageUrl(path) {
  const blob = await (await api(path)).blob();
  return URL.createObjectURL(blob);
}

function show(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

async function loadInfo() {
  try {
    state.info = await (await api("/v1/info")).json();
    $("index-info").textContent = `${state.info.references} references · pipeline ${state.info.pipeline}`;
    if ($("threshold").value === "") $("threshold").value = state.info.threshold;
    show("");
  } catch (error) {
    $("index-info").textContent = "index info unavailable";
    show(error.message);
  }
}

// ------------------------------------------------------------------ matching
function threshold() {
  const value = parseFloat($("threshold").value);
  return Number.isFinite(value) ? value : (state.info ? state.info.threshold : 0.5);
}

async function matchFile(file) {
  state.file = file;
  $("query-image").src = URL.createObjectURL(file);
  $("query-name").textContent = file.name;
  $("explain").hidden = true;
  const body = new FormData();
  body.append("image", file);
  show("matching…", true);
  try {
    const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 5));
    state.answer = await (await api(`/v1/match?k=${k}`, { method: "POST", body })).json();
    show("");
    renderAnswer();
  } catch (error) {
    show(error.message);
  }
}

function evidenceText(evidence) {
  return Object.entries(evidence || {}).map(([name, v]) => `${name} ${Number(v).toFixed(3)}`).join(" · ") || "—";
}

function renderAnswer() {
  const answer = state.answer;
  const cut = threshold();
  const above = answer.matches.filter((m) => m.score >= cut);
  const verdict = $("verdict");
  if (above.length) {
    verdict.className = "verdict copy";
    verdict.textContent = `copy of ${above[0].id} (score ${above[0].score.toFixed(4)} ≥ ${cut})` +
      (above.length > 1 ? `, and ${above.length - 1} more above the threshold` : "");
  } else {
    const miss = answer.matches[0];
    verdict.className = "verdict miss";
    verdict.textContent = miss ? `no match at ${cut} · nearest miss: ${miss.id} (score ${miss.score.toFixed(4)})` : "no match";
  }
  const rows = $("matches").querySelector("tbody");
  rows.replaceChildren();
  answer.matches.forEach((m, i) => {
    const row = document.createElement("tr");
    row.className = m.score >= cut ? "above" : "";
    row.dataset.id = m.id;
    const cells = [String(i + 1), m.id, m.score.toFixed(4), evidenceText(m.evidence)];
    cells.forEach((text, c) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (c === 3) cell.className = "evidence";
      row.appendChild(cell);
    });
    const action = document.createElement("td");
    const compare = document.createElement("button");
    compare.textContent = "compare";
    compare.onclick = () => showReference(m);
    const explain = document.createElement("button");
    explain.textContent = "explain";
    explain.className = "explain";
    explain.onclick = () => explainPair(m);
    action.append(compare, " ", explain);
    row.appendChild(action);
    rows.appendChild(row);
  });
  const t = answer.timings;
  $("timings").textContent = `${answer.references} references searched in ${(t.total_s * 1000).toFixed(0)} ms ` +
    `(describe + search ${(t.decode_describe_search_s * 1000).toFixed(0)} ms, scoring ${(t.score_s * 1000).toFixed(0)} ms)`;
  $("result").hidden = false;
  if (answer.matches.length) showReference(answer.matches[0]);
}

async function showReference(m) {
  document.querySelectorAll("#matches tr").forEach((r) => r.classList.toggle("selected", r.dataset.id === m.id));
  $("match-caption").textContent = `${m.id} · score ${m.score.toFixed(4)}${m.score >= threshold() ? " · copy" : " · below the threshold"}`;
  try {
    $("match-image").src = await imageUrl(`/v1/references/${encodeURIComponent(m.id)}/image`);
  } catch (error) {
    show(error.message);
  }
}

async function explainPair(m) {
  const body = new FormData();
  body.append("image", state.file);
  show(`drawing ${m.id}…`, true);
  try {
    const response = await api(`/v1/explain?reference=${encodeURIComponent(m.id)}`, { method: "POST", body });
    $("explain-image").src = URL.createObjectURL(await response.blob());
    $("explain-caption").textContent = `why ${state.file.name} matches ${m.id}: inliers, copied region, each branch's score`;
    $("explain").hidden = false;
    show("");
  } catch (error) {
    show(error.message);
  }
}

// ------------------------------------------------------------------ references
async function loadReferences() {
  const prefix = encodeURIComponent($("prefix").value.trim());
  try {
    const page = await (await api(`/v1/references?offset=${state.offset}&limit=${state.pageSize}&prefix=${prefix}`)).json();
    const last = Math.min(page.total, state.offset + page.references.length);
    $("page-info").textContent = page.total ? `${state.offset + 1}–${last} of ${page.total}` : "none";
    $("previous-page").disabled = state.offset === 0;
    $("next-page").disabled = last >= page.total;
    const list = $("reference-list");
    list.replaceChildren();
    for (const ref of page.references) {
      const item = document.createElement("li");
      item.dataset.id = ref.id;
      const image = document.createElement("img");
      image.alt = ref.id;
      const name = document.createElement("div");
      name.textContent = ref.id;
      const remove = document.createElement("button");
      remove.textContent = "remove";
      remove.className = "remove";
      remove.onclick = () => removeReference(ref.id);
      item.append(image, name, remove);
      list.appendChild(item);
      imageUrl(`/v1/references/${encodeURIComponent(ref.id)}/image`).then((url) => { image.src = url; }, () => {});
    }
    show("");
  } catch (error) {
    show(error.message);
  }
}

async function removeReference(id) {
  if (!window.confirm(`Remove ${id} from the index? It will no longer be matched.`)) return;
  try {
    await api(`/v1/references/${encodeURIComponent(id)}`, { method: "DELETE" });
    show(`removed ${id}`, true);
    await Promise.all([loadReferences(), loadInfo()]);
    show(`removed ${id}`, true);
  } catch (error) {
    show(error.message);
  }
}

async function addReferences(files) {
  const body = new FormData();
  for (const file of files) body.append("images", file);
  try {
    const answer = await (await api("/v1/references", { method: "POST", body })).json();
    await Promise.all([loadReferences(), loadInfo()]);
    const skipped = Object.entries(answer.skipped || {}).map(([id, why]) => `${id}: ${why}`);
    show(`added ${answer.added.join(", ") || "nothing"}${skipped.length ? "; skipped " + skipped.join("; ") : ""}`, true);
  } catch (error) {
    show(error.message);
  }
}

// ------------------------------------------------------------------ wiring
function switchTo(viewId) {
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== viewId; });
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === viewId));
  if (viewId === "references-view") loadReferences();
}

function wire() {
  $("api-key").value = localStorage.getItem("copyseek-key") || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("copyseek-key", $("api-key").value.trim());
    loadInfo();
  });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => switchTo(t.dataset.view)));
  $("query-file").addEventListener("change", (e) => { if (e.target.files.length) matchFile(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) matchFile(e.dataTransfer.files[0]);
  });
  $("threshold").addEventListener("input", () => { if (state.answer) renderAnswer(); });
  $("match-form").addEventListener("submit", (e) => e.preventDefault());
  $("reference-filter").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; loadReferences(); });
  $("prefix").addEventListener("input", () => { state.offset = 0; loadReferences(); });
  $("previous-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.pageSize); loadReferences(); });
  $("next-page").addEventListener("click", () => { state.offset += state.pageSize; loadReferences(); });
  $("add-files").addEventListener("change", (e) => { if (e.target.files.length) addReferences(e.target.files); });
  loadInfo();
}

wire();
