"""The self-contained HTML page of `minigpt inspect` and /attn html: one file, no network at all.

Everything is inline: CSS, ~250 lines of plain JavaScript (no library) and the data, as one JSON block whose
weights are the lower triangles of every head, base64 of little-endian uint16 (weight * 65535; precision 1.5e-5;
4 layers x 4 heads over 128 tokens is 0.35 MB). The page has: layer and head pickers (a head or the mean of the
layer's heads); a thumbnail of every layer x head (bertviz's model view; a click selects it); the heatmap on a
canvas, hover showing the weight and focusing the query; the focus strips (what the focused token attends to,
its row; what attends to it, its column scaled to its strongest; the token itself outlined and coloured by its
weight on itself, often the largest); and the token-influence view (the seeds'
picture: the predicted token red, earlier tokens grey to blue by the attention of the query that predicted it)
with a slider, step buttons and play. The heatmap canvas carries data-layer, data-head and data-signature (a
checksum of what it drew) so tests in a real browser can see a redraw.
"""
from __future__ import annotations

import base64
import html as html_lib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..common import atomic_write_text

if TYPE_CHECKING:
    from .attention import AttentionRecord, Head


def page_data(rec: AttentionRecord, *, layer: int = -1, head: Head = "mean", title: str = "",
              info: str = "") -> dict[str, Any]:
    """What the page embeds: tokens, shape, and the lower triangles of every head as base64 uint16
    (weight * 65535, little-endian; per (layer, head) T(T+1)/2 values, row q holding keys 0..q)."""
    layer, head = rec.check(layer, head)
    T = len(rec)
    rows, cols = np.tril_indices(T)
    w = rec.weights.numpy()[:, :, rows, cols]  # (L, H, T(T+1)/2)
    packed = np.round(np.clip(w, 0, 1) * 65535).astype("<u2").tobytes()
    return {"title": title, "info": info, "tokens": rec.texts, "ids": rec.ids, "start": rec.start,
            "prompt_len": rec.prompt_len, "n_layer": rec.n_layer, "n_head": rec.n_head, "layer": layer,
            "head": head, "weights": base64.b64encode(packed).decode("ascii")}


def render_html(rec: AttentionRecord, **kwargs: Any) -> str:
    """One self-contained page (no external resource): layer/head pickers, thumbnails of every head, the
    heatmap with hover, the focus strips (what a token attends to, what attends to it) and the influence view."""
    data = json.dumps(page_data(rec, **kwargs), ensure_ascii=False).replace("</", "<\\/")
    title = html_lib.escape(kwargs.get("title") or "attention")
    return _PAGE.replace("$TITLE", title).replace("$DATA", data)


def save_html(rec: AttentionRecord, path: str | Path, **kwargs: Any) -> Path:
    path = Path(path)
    atomic_write_text(path, render_html(rec, **kwargs))
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$TITLE</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:18px 24px;color:#222;background:#fff}
h1{font-size:19px;margin:0 0 2px} h2{font-size:15px;margin:20px 0 6px} .dim{color:#777}
.bar{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin:8px 0}
select,button{font:inherit;padding:2px 6px}
#grid{display:grid;gap:4px;align-items:center;justify-content:start}
#grid canvas{border:1px solid #bbb;cursor:pointer;image-rendering:pixelated}
#grid canvas.on{outline:3px solid #d32f2f;border-color:#d32f2f}
#grid .lab{font-size:11px;color:#555;text-align:center}
.row{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
#map{border:1px solid #ccc;cursor:crosshair}
.strip{white-space:pre-wrap;word-break:break-all;font:15px/1.9 ui-monospace,Menlo,Consolas,monospace;
 max-width:760px;border:1px solid #eee;padding:6px;border-radius:4px}
.strip span{padding:1px 0;border-radius:2px;cursor:default}
.strip span.sp{font-size:11px;color:#7a1fa2}
.strip span.gen{text-decoration:underline dotted #d32f2f}
.strip span.focus{outline:2px solid #d32f2f;outline-offset:-1px}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:3px 7px;border-radius:3px;
 font-size:12px;display:none;z-index:9}
.legend span{display:inline-block;padding:0 6px;margin-right:2px;border-radius:2px;font-size:12px}
</style></head><body>
<h1>$TITLE</h1><div class="dim" id="info"></div>
<div class="bar"><label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<span class="dim">click a thumbnail to choose; hover tokens or cells to focus</span></div>
<h2>Every layer and head</h2><div id="grid"></div>
<h2>Heatmap <span class="dim" id="maptitle"></span></h2>
<div class="row"><canvas id="map"></canvas><div>
<div class="legend" id="heatlegend"></div>
<p class="dim" style="max-width:380px">Rows are queries (the token attending), columns keys (the token
attended to). Each row sums to 1. Colour is Blues over the square root of the weight.</p>
<h2>Focus <span class="dim" id="focusname"></span></h2>
<div class="dim">what it attends to (its row)</div><div class="strip" id="attends"></div>
<div class="dim">what attends to it (its column, scaled to the strongest)</div><div class="strip" id="attended"></div>
</div></div>
<h2>Token influence <span class="dim" id="stepname"></span></h2>
<div class="bar"><button id="prev">&#9664;</button><input type="range" id="step" style="width:320px">
<button id="next">&#9654;</button><button id="play">play</button></div>
<div class="legend" id="inflegend"></div>
<div class="strip" id="influence"></div>
<p class="dim" id="topkeys"></p>
<div id="tip"></div>
<script id="data" type="application/json">$DATA</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.tokens.length, L = D.n_layer, H = D.n_head, TRI = T * (T + 1) / 2;
const bin = atob(D.weights), view = new DataView(new ArrayBuffer(bin.length));
for (let i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
const W = new Float32Array(L * H * TRI);
for (let i = 0; i < W.length; i++) W[i] = view.getUint16(2 * i, true) / 65535;
const M = new Float32Array(L * TRI);  // mean over heads, per layer
for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) for (let i = 0; i < TRI; i++)
  M[l * TRI + i] += W[(l * H + h) * TRI + i] / H;
const S = {layer: D.layer, head: D.head, focus: T - 1, step: 1};
const $ = id => document.getElementById(id);
function att(l, h, q, k) {
  if (k > q) return 0;
  const i = q * (q + 1) / 2 + k;
  return h === "mean" ? M[l * TRI + i] : W[(l * H + h) * TRI + i];
}
function rgb(stops, x) {
  x = Math.min(1, Math.max(0, x)) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  return [0, 1, 2].map(c => Math.round(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * f));
}
const mix = (stops, x) => "rgb(" + rgb(stops, x) + ")";
const BLUES = [[247, 251, 255], [107, 174, 214], [8, 48, 107]], INF = [[200, 200, 200], [21, 80, 200]];
const heat = v => mix(BLUES, Math.sqrt(v)), infl = v => mix(INF, Math.sqrt(v));
const shown = t => t.replace(/\\n/g, "\\u21b5\\n").replace(/\\t/g, "\\u2192");
const label = t => t.replace(/ /g, "\\u2423").replace(/\\n/g, "\\u21b5").replace(/\\t/g, "\\u2192") || "\\u2205";
const special = i => /^<\\|.*\\|>$/.test(D.tokens[i]);
const headName = h => h === "mean" ? "mean of heads" : "head " + h;
$("info").textContent = (D.info ? D.info + " \\u00b7 " : "") + T + " tokens" +
  (D.start ? " (the last " + T + "; the text began " + D.start + " tokens earlier)" : "") +
  (D.prompt_len < T ? " \\u00b7 prompt " + D.prompt_len + ", generated " + (T - D.prompt_len) +
   " (dotted underline)" : "");
for (let l = 0; l < L; l++) $("layer").add(new Option(String(l), String(l)));
for (let h = 0; h < H; h++) $("head").add(new Option(String(h), String(h)));
$("head").add(new Option("mean", "mean"));
// thumbnails: one per (layer, head) and each layer's mean
const grid = $("grid"), thumbs = [], TS = 64;
grid.style.gridTemplateColumns = "52px repeat(" + (H + 1) + ", " + TS + "px)";
grid.appendChild(document.createElement("div"));
for (let h = 0; h <= H; h++) { const d = document.createElement("div"); d.className = "lab";
  d.textContent = h === H ? "mean" : "head " + h; grid.appendChild(d); }
for (let l = 0; l < L; l++) {
  const d = document.createElement("div"); d.className = "lab"; d.textContent = "layer " + l; grid.appendChild(d);
  for (let h = 0; h <= H; h++) {
    const c = document.createElement("canvas"), hh = h === H ? "mean" : h;
    c.width = c.height = T; c.style.width = c.style.height = TS + "px";
    c.dataset.layer = l; c.dataset.head = hh; c.title = "layer " + l + ", " + headName(hh);
    const g = c.getContext("2d"), img = g.createImageData(T, T);
    for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {
      const o = 4 * (q * T + k);
      if (k > q) { img.data.set([240, 240, 240, 255], o); continue; }
      img.data.set(rgb(BLUES, Math.sqrt(att(l, hh, q, k))).concat(255), o);
    }
    g.putImageData(img, 0, 0);
    c.onclick = () => { S.layer = l; S.head = hh; update(); };
    grid.appendChild(c); thumbs.push(c);
  }
}
// the heatmap
const map = $("map"), g = map.getContext("2d");
const CELL = Math.max(3, Math.min(24, Math.floor(640 / T))), LAB = CELL >= 9 ? 84 : 8;
map.width = LAB + CELL * T + 2; map.height = LAB + CELL * T + 2;
function drawMap() {
  g.fillStyle = "#fff"; g.fillRect(0, 0, map.width, map.height);
  let sig = 0;
  for (let q = 0; q < T; q++) for (let k = 0; k <= q; k++) {
    const v = att(S.layer, S.head, q, k);
    sig += v * (1 + ((q * 31 + k * 7) % 97));
    g.fillStyle = heat(v); g.fillRect(LAB + k * CELL, LAB + q * CELL, CELL, CELL);
  }
  g.strokeStyle = "#d32f2f"; g.lineWidth = 1;
  g.strokeRect(LAB + 0.5, LAB + S.focus * CELL + 0.5, CELL * T, CELL - 1);
  g.strokeStyle = "#ff9800";
  g.strokeRect(LAB + S.focus * CELL + 0.5, LAB + 0.5, CELL - 1, CELL * T);
  if (LAB > 8) {
    g.fillStyle = "#333"; g.font = Math.min(12, CELL) + "px sans-serif"; g.textBaseline = "middle";
    for (let i = 0; i < T; i++) {
      g.textAlign = "right"; g.fillText(label(D.tokens[i]).slice(0, 10), LAB - 4, LAB + (i + 0.5) * CELL);
      g.save(); g.translate(LAB + (i + 0.5) * CELL, LAB - 4); g.rotate(-Math.PI / 2); g.textAlign = "left";
      g.fillText(label(D.tokens[i]).slice(0, 10), 0, 0); g.restore();
    }
  }
  map.dataset.layer = S.layer; map.dataset.head = S.head; map.dataset.signature = sig.toFixed(6);
  $("maptitle").textContent = "layer " + S.layer + ", " + headName(S.head);
}
map.onmousemove = e => {
  const r = map.getBoundingClientRect(), k = Math.floor((e.clientX - r.left - LAB) / CELL),
        q = Math.floor((e.clientY - r.top - LAB) / CELL);
  if (q < 0 || q >= T || k < 0 || k >= T) { $("tip").style.display = "none"; return; }
  const tip = $("tip"); tip.style.display = "block"; tip.style.left = e.clientX + 12 + "px";
  tip.style.top = e.clientY + 12 + "px";
  tip.textContent = JSON.stringify(D.tokens[q]) + " \\u2192 " + JSON.stringify(D.tokens[k]) + ": " +
    (100 * att(S.layer, S.head, q, k)).toFixed(1) + "%";
  if (S.focus !== q) { S.focus = q; drawMap(); drawFocus(); }
};
map.onmouseleave = () => { $("tip").style.display = "none"; };
// token strips
function strip(el, onhover) {
  const spans = D.tokens.map((t, i) => {
    const s = document.createElement("span"); s.textContent = special(i) ? t : shown(t);
    if (special(i)) s.classList.add("sp");
    if (i >= D.prompt_len) s.classList.add("gen");
    s.dataset.i = i; s.onmouseenter = () => onhover(i); el.appendChild(s); return s;
  });
  return spans;
}
const focusHover = i => { S.focus = i; drawMap(); drawFocus(); };
const A = strip($("attends"), focusHover), B = strip($("attended"), focusHover);
function paint(span, bg) { span.style.background = bg; const m = bg.match(/\\d+/g).map(Number);
  span.style.color = (0.3 * m[0] + 0.59 * m[1] + 0.11 * m[2]) < 140 ? "#fff" : "#111"; }
function drawFocus() {
  const f = S.focus;
  let mx = 0; for (let q = f; q < T; q++) mx = Math.max(mx, att(S.layer, S.head, q, f));
  for (let i = 0; i < T; i++) {  // the focused token outlined, coloured by its weight on itself like the rest
    A[i].classList.toggle("focus", i === f); B[i].classList.toggle("focus", i === f);
    paint(A[i], i <= f ? heat(att(S.layer, S.head, f, i)) : "rgb(255,255,255)");
    paint(B[i], i >= f && mx > 0 ? heat(att(S.layer, S.head, i, f) / mx) : "rgb(255,255,255)");
  }
  $("focusname").textContent = "token " + (D.start + f) + " " + JSON.stringify(D.tokens[f]);
}
// influence view: token t (red) and the earlier tokens by the attention of its query, token t-1
const first = D.prompt_len < T ? Math.max(1, D.prompt_len) : 1, step = $("step");
step.min = first; step.max = T - 1; step.value = S.step = D.prompt_len < T ? first : T - 1;
const I = strip($("influence"), i => { if (i >= 1) { S.step = i; step.value = i; drawInfluence(); } });
function drawInfluence() {
  const t = S.step, row = [];
  for (let i = 0; i < T; i++) {
    I[i].style.display = i > t ? "none" : "";
    if (i === t) paint(I[i], "rgb(211,47,47)");
    else if (i < t) { const v = att(S.layer, S.head, t - 1, i); row.push([v, i]); paint(I[i], infl(v)); }
  }
  row.sort((a, b) => b[0] - a[0]);
  $("topkeys").textContent = "strongest: " + row.slice(0, 5).map(([v, i]) =>
    JSON.stringify(D.tokens[i]) + " " + (100 * v).toFixed(0) + "%").join(" \\u00b7 ");
  $("stepname").textContent = "predicting token " + (D.start + t) + " " + JSON.stringify(D.tokens[t]) +
    " \\u00b7 layer " + S.layer + ", " + headName(S.head);
  $("influence").dataset.step = t;
}
step.oninput = () => { S.step = Number(step.value); drawInfluence(); };
$("prev").onclick = () => { if (S.step > first) { S.step--; step.value = S.step; drawInfluence(); } };
$("next").onclick = () => { if (S.step < T - 1) { S.step++; step.value = S.step; drawInfluence(); } };
let timer = null;
$("play").onclick = () => {
  if (timer) { clearInterval(timer); timer = null; $("play").textContent = "play"; return; }
  $("play").textContent = "pause";
  timer = setInterval(() => {
    S.step = S.step >= T - 1 ? first : S.step + 1; step.value = S.step; drawInfluence();
  }, 350);
};
function legend(el, f, title) {
  el.innerHTML = ""; const t = document.createElement("span"); t.textContent = title; t.className = "dim";
  el.appendChild(t);
  for (const v of [0, 0.01, 0.05, 0.1, 0.25, 0.5, 1]) { const s = document.createElement("span");
    s.textContent = (100 * v) + "%"; paint(s, f(v)); el.appendChild(s); }
}
legend($("heatlegend"), heat, "weight ");
legend($("inflegend"), infl, "influence ");
const cur = document.createElement("span"); cur.textContent = "predicted token"; paint(cur, "rgb(211,47,47)");
$("inflegend").appendChild(cur);
function update() {
  $("layer").value = String(S.layer); $("head").value = String(S.head);
  thumbs.forEach(c => c.classList.toggle("on",
    Number(c.dataset.layer) === S.layer && c.dataset.head === String(S.head)));
  drawMap(); drawFocus(); drawInfluence();
}
$("layer").onchange = () => { S.layer = Number($("layer").value); update(); };
$("head").onchange = () => { const v = $("head").value; S.head = v === "mean" ? "mean" : Number(v); update(); };
update();
</script></body></html>
"""
