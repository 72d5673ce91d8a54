// The torchinfer serve page: pick a model, drop an image, see the answer drawn over it.
// Plain JS, no dependencies: everything comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: {}, auth: false, file: null, image: null, result: null, overlay: null, busy: false };
const COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#9a6324", "#800000", "#808000", "#000075"];

async function loadModels() {
  try {
    const response = await fetch("v1/models");
    const info = await response.json();
    state.auth = info.auth;
    const select = $("model");
    select.innerHTML = "";
    for (const m of info.models) {
      state.models[m.name] = m;
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.task || "?"})${m.ready ? "" : " - " + m.state}`;
      select.appendChild(option);
    }
    $("status").textContent = info.ready ? "ready" : "loading models…";
    $("status").className = "status " + (info.ready ? "ready" : "");
    if (!info.ready) setTimeout(loadModels, 1000);
    showModel();
  } catch (err) {
    $("status").textContent = "server unreachable";
    $("status").className = "status down";
    setTimeout(loadModels, 2000);
  }
}

function currentModel() { return state.models[$("model").value]; }

// The tasks whose answers this page draws itself (boxes, a table of classes); the others are
// shown as the picture the server draws (visualize=1), laid over the image.
const DRAWN_HERE = ["detect", "classify"];

function showModel() {
  const m = currentModel();
  if (!m) return;
  buildOptions(m);
  $("overlay-options").hidden = DRAWN_HERE.includes(m.task);
  const backend = m.backend ? `${m.backend.backend || ""} ${m.backend.precision || ""}` : "";
  $("model-info").textContent = m.ready
    ? `${m.task} · ${(m.labels || []).length} classes · ${backend} on ${m.device} · batch ≤ ${m.max_batch_size}`
    : `${m.state}${m.error ? ": " + m.error : ""}`;
  updateCurl();
}

// One control per request option the model's task declares (its type, range and choices come
// from the server's option_specs), set to the model's own value.
function buildOptions(m) {
  const box = $("task-options");
  box.innerHTML = "";
  for (const o of (m.option_specs || [])) {
    const own = m.options ? m.options[o.name] : undefined;
    const value = own !== undefined && own !== null ? own : o.default;
    const label = document.createElement("label");
    label.title = o.help;
    label.append(o.name.replace(/_/g, " ") + " ");
    let input;
    if (o.choices) {
      input = document.createElement("select");
      for (const choice of o.choices) {
        const option = document.createElement("option");
        option.value = option.textContent = choice;
        input.appendChild(option);
      }
      input.value = value;
    } else if (o.type === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = Boolean(value);
    } else if (o.type === "float" && o.minimum !== undefined && o.maximum !== undefined) {
      input = document.createElement("input");
      Object.assign(input, { type: "range", min: o.minimum, max: o.maximum,
                             step: (o.maximum - o.minimum) / 100, value: value });
      const shown = document.createElement("output");
      shown.textContent = Number(value).toFixed(2);
      input.addEventListener("input", () => { shown.textContent = Number(input.value).toFixed(2); });
      label.appendChild(shown);
    } else {
      input = document.createElement("input");
      input.type = o.type === "int" || o.type === "float" ? "number" : "text";
      if (o.minimum !== undefined) input.min = o.minimum;
      if (o.maximum !== undefined) input.max = o.maximum;
      if (o.type === "ids") input.placeholder = "all (or e.g. 0,2)";
      input.value = Array.isArray(value) ? value.join(",") : (value === null ? "" : value);
    }
    input.id = "option-" + o.name;
    input.dataset.option = o.name;
    input.addEventListener("input", later);
    label.appendChild(input);
    box.appendChild(label);
  }
  box.hidden = !box.children.length;
}

function options() {
  const m = currentModel();
  const params = new URLSearchParams();
  if (!m) return params;
  for (const input of $("task-options").querySelectorAll("[data-option]")) {
    const value = input.type === "checkbox" ? String(input.checked) : input.value;
    if (value !== "") params.set(input.dataset.option, value);
  }
  if (!DRAWN_HERE.includes(m.task)) params.set("visualize", "1");
  return params;
}

function updateCurl() {
  const m = currentModel();
  if (!m) return;
  const query = options().toString();
  const url = `${location.origin}/v1/models/${encodeURIComponent(m.name)}/predict${query ? "?" + query : ""}`;
  const name = state.file ? state.file.name.replace(/'/g, "") : "image.jpg";
  const key = state.auth ? ` -H "Authorization: Bearer $TORCHINFER_API_KEY"` : "";
  $("curl").textContent = `curl${key} -F 'file=@${name}' '${url}'`;
}

async function predict() {
  const m = currentModel();
  if (!state.file || !m) return;
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  updateCurl();
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  const started = performance.now();
  try {
    const response = await fetch(`v1/models/${encodeURIComponent(m.name)}/predict?${options()}`,
                                 { method: "POST", body: form });
    const roundTrip = performance.now() - started;
    const body = await response.json();
    if (!response.ok) throw new Error(`${response.status}: ${body.error || JSON.stringify(body)}`);
    $("error").hidden = true;
    state.result = body;
    state.overlay = null;
    if (body.visualization) state.overlay = await loadImage(body.visualization);
    showTiming(response.headers.get("Server-Timing"), roundTrip, response.headers.get("X-Batch-Size"));
    const shown = Object.assign({}, body);
    if (shown.visualization) shown.visualization = shown.visualization.slice(0, 40) + "…";
    $("json").textContent = JSON.stringify(shown, null, 2);
    draw();
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; predict(); }
  }
}

function showTiming(header, roundTrip, batch) {
  const parts = {};
  for (const item of (header || "").split(",")) {
    const match = item.trim().match(/^(\w+);dur=([\d.]+)/);
    if (match) parts[match[1]] = Number(match[2]);
  }
  const server = parts.total !== undefined ? `server ${parts.total.toFixed(1)} ms` : "";
  $("timing").textContent = `${server} (queue ${(parts.queue || 0).toFixed(1)} ms, model ` +
    `${(parts.compute || 0).toFixed(1)} ms, batch of ${batch || "?"}) · round trip ${roundTrip.toFixed(1)} ms`;
  $("timing").dataset.serverMs = parts.total !== undefined ? parts.total : "";
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = src;
  });
}

function draw() {
  const canvas = $("canvas"), ctx = canvas.getContext("2d"), img = state.image;
  if (!img) return;
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  ctx.globalAlpha = 1;
  ctx.drawImage(img, 0, 0);
  const r = state.result;
  const table = $("topk");
  table.hidden = true;
  canvas.dataset.drawn = "";
  if (!r) return;
  if (state.overlay) {  // the server's overlay of the mask, blended in at the chosen opacity
    ctx.globalAlpha = Number($("opacity").value);
    ctx.drawImage(state.overlay, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
    canvas.dataset.drawn = "overlay";
  }
  if (r.detections) {
    const width = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 200));
    ctx.lineWidth = width;
    ctx.font = `${Math.max(12, width * 6)}px sans-serif`;
    ctx.textBaseline = "top";
    for (const d of r.detections) {
      const [x0, y0, x1, y1] = d.box;
      const colour = COLOURS[d.class_id % COLOURS.length];
      ctx.strokeStyle = colour;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      const text = `${d.label} ${d.score.toFixed(2)}`;
      const tw = ctx.measureText(text).width + 6, th = Math.max(12, width * 6) + 4;
      const ty = y0 - th >= 0 ? y0 - th : y0;
      ctx.fillStyle = colour;
      ctx.fillRect(x0, ty, tw, th);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, x0 + 3, ty + 2);
    }
    canvas.dataset.drawn = `${r.detections.length} boxes`;
  }
  if (r.topk) {
    const body = table.querySelector("tbody");
    body.innerHTML = "";
    r.topk.forEach((c, i) => {
      const row = document.createElement("tr");
      const bar = `<div class="bar" style="width:${Math.round(c.score * 120)}px"></div>`;
      row.innerHTML = `<td>${i + 1}</td><td></td><td>${c.score.toFixed(4)}</td><td>${bar}</td>`;
      row.children[1].textContent = c.label;  // labels are text, never markup
      body.appendChild(row);
    });
    table.hidden = false;
    canvas.dataset.drawn = `${r.topk.length} classes`;
  }
}

async function useFile(file) {
  if (!file) return;
  state.file = file;
  state.result = null;
  try {
    state.image = await loadImage(URL.createObjectURL(file));
  } catch (err) {
    state.image = null;  // the server still answers: maybe a format the browser cannot show
  }
  draw();
  predict();
}

let timer = null;
function later() { clearTimeout(timer); timer = setTimeout(predict, 250); updateCurl(); }

$("file").addEventListener("change", (e) => useFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  useFile(e.dataTransfer.files[0]);
});
$("model").addEventListener("change", () => { showModel(); state.result = null; draw(); predict(); });
$("opacity").addEventListener("input", () => { $("opacity-value").textContent = Number($("opacity").value).toFixed(2); draw(); });
$("copy").addEventListener("click", async () => {
  const text = $("curl").textContent;
  try { await navigator.clipboard.writeText(text); $("copy").textContent = "Copied"; }
  catch (err) {  // no clipboard outside a secure context: select it for Ctrl-C
    const range = document.createRange(); range.selectNodeContents($("curl"));
    const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
    $("copy").textContent = "Selected";
  }
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
});
loadModels();
