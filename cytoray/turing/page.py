"""The reading page: plain HTML, inline CSS and a little inline JS (no CDN, no build step).

One image at a time, scaled by a whole factor with nearest-neighbour pixels (a 64 px image is
shown as its pixels, never smoothed), on a neutral grey. Keys: R real, S synthetic, 1-9 the class,
Z/X/C confidence 1/2/3, Enter saves, +/- zoom. Nothing is answered for the reader: Enter does
nothing until all three are chosen.
"""

PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>cytoray reading</title>
<style>
body{font:15px system-ui,sans-serif;margin:0;background:#808080;color:#111}
header{background:#eee;padding:8px 16px;display:flex;gap:24px;align-items:center}
main{display:flex;gap:24px;padding:16px}
#view{flex:1;display:flex;justify-content:center;align-items:center;min-height:520px}
#img{image-rendering:pixelated;box-shadow:0 0 0 1px #555}
aside{width:330px;background:#eee;padding:12px 16px;border-radius:6px}
fieldset{border:1px solid #bbb;margin:0 0 12px;border-radius:4px}
button{font:inherit;margin:3px;padding:6px 10px;border:1px solid #888;border-radius:4px;background:#fff;cursor:pointer}
button.on{background:#2a5db0;color:#fff;border-color:#2a5db0}
#save{width:100%;margin:8px 0 0;padding:10px}
#save:disabled{opacity:.5;cursor:default}
kbd{font:12px monospace;background:#ddd;padding:0 4px;border-radius:3px}
#done{display:none;padding:40px;background:#eee;margin:40px;border-radius:6px}
#msg{color:#a00;min-height:1.2em}
</style></head><body>
<header><b>cytoray reading</b><span id=who></span><span id=progress></span>
<span>zoom <span id=zoom></span>&times; (<kbd>+</kbd>/<kbd>-</kbd>)</span></header>
<main id=reading><div id=view><img id=img alt="image to read"></div>
<aside>
<fieldset><legend>Source</legend><div id=sources></div></fieldset>
<fieldset><legend>Class</legend><div id=classes></div></fieldset>
<fieldset><legend>Confidence</legend><div id=conf></div></fieldset>
<button id=save disabled>Save and next <kbd>Enter</kbd></button>
<p id=msg></p>
<p>Answers are saved as you give them; close the page at any time and come back to continue.</p>
</aside></main>
<div id=done><h2>All images read. Thank you.</h2><p id=donetext></p></div>
<script>
"use strict";
const CONF_KEYS = ["z", "x", "c"], CONF_TEXT = ["1 guessing", "2 leaning", "3 sure"];
let st = null, pick = {}, shownAt = 0, zoom = 1;
const $ = (id) => document.getElementById(id);

function buttons(box, group, values, labels, keys) {
  box.innerHTML = "";
  values.forEach((v, i) => {
    const b = document.createElement("button");
    b.dataset.group = group; b.dataset.value = String(v);
    b.innerHTML = labels[i] + " <kbd>" + keys[i].toUpperCase() + "</kbd>";
    b.onclick = () => choose(group, v);
    box.appendChild(b);
  });
}
function choose(group, v) {
  pick[group] = v;
  document.querySelectorAll("button[data-group=" + group + "]").forEach(
    (b) => b.classList.toggle("on", b.dataset.value === String(v)));
  $("save").disabled = !("source" in pick && "class" in pick && "confidence" in pick);
}
function setZoom(z) { zoom = Math.max(1, Math.min(16, z)); $("zoom").textContent = zoom;
  if (st && st.size) { $("img").style.width = (st.size * zoom) + "px"; } }
function show(s) {
  st = s; pick = {}; $("msg").textContent = "";
  $("who").textContent = "reader: " + s.reader;
  if (!s.next) {
    $("reading").style.display = "none"; $("done").style.display = "block"; $("progress").textContent = "finished";
    $("donetext").textContent = s.answered + " of " + s.total + " images answered. You can close this page.";
    return;
  }
  $("progress").textContent = "image " + s.next.position + " of " + s.total;
  buttons($("sources"), "source", s.sources, ["Real", "Synthetic"], ["r", "s"]);
  buttons($("classes"), "class", s.classes, s.classes, s.classes.map((c, i) => String(i + 1)));
  buttons($("conf"), "confidence", s.confidence, CONF_TEXT, CONF_KEYS);
  $("save").disabled = true;
  $("img").src = "/image/" + s.next.image;
  setZoom(zoom === 1 && s.size ? Math.max(1, Math.floor(512 / s.size)) : zoom);
  shownAt = performance.now();
}
async function save() {
  if ($("save").disabled || !st || !st.next) return;
  $("save").disabled = true;
  const body = {image: st.next.image, source: pick.source, class: pick.class, confidence: pick.confidence,
                seconds: (performance.now() - shownAt) / 1000};
  const r = await fetch("/api/answer", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) { $("msg").textContent = j.error || "not saved"; $("save").disabled = false; return; }
  show(j);
}
document.addEventListener("keydown", (e) => {
  if (!st || !st.next || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === "r") choose("source", "real");
  else if (k === "s") choose("source", "synthetic");
  else if (/^[1-9]$/.test(k) && Number(k) <= st.classes.length) choose("class", st.classes[Number(k) - 1]);
  else if (CONF_KEYS.includes(k)) choose("confidence", st.confidence[CONF_KEYS.indexOf(k)]);
  else if (k === "enter") save();
  else if (k === "+" || k === "=") setZoom(zoom + 1);
  else if (k === "-") setZoom(zoom - 1);
  else return;
  e.preventDefault();
});
$("save").onclick = save;
fetch("/api/state").then((r) => r.json()).then(show);
</script></body></html>
"""
