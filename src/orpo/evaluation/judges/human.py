"""``human`` judge: a blinded side-by-side HTML page for raters, and the import of their choices.

``export`` writes one self-contained page (no network, no external files): per item the prompt and
the two answers as "Response 1" and "Response 2", the side of A's answer drawn at random per item
(seeded). The page carries no model names and no A/B mapping; the mapping stays with the organiser
in ``OUT/human_key.json``. Raters click or press 1 / 2 / 3 (or t) for "1 better", "2 better", "tie",
move with n / p (or the arrow keys), see their progress, and press Export (or e) to download their
choices as JSON. Choices live in the browser's localStorage, so closing the tab loses nothing.

``judge(items, choices.json)`` maps each choice back through the key to "A", "B" or "tie"; items
the rater skipped are left out (with a notice).
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime, timezone
from pathlib import Path

from orpo._log import notice
from orpo.evaluation.judges.base import Item, Verdict

KEY_FILE = "human_key.json"


class HumanJudge:
    kind = "human"

    def __init__(self, out_dir: str | Path, seed: int = 0):
        self.key_path = Path(out_dir) / KEY_FILE
        self.seed = seed
        self.page_id = ""
        self.choices_file = ""

    def export(self, items: list[Item], page: str | Path) -> Path:
        """Write the page and the key; return the page's path."""
        rng = random.Random(self.seed)
        digest = hashlib.sha256(json.dumps([[i.id, i.a, i.b] for i in items]).encode())
        digest.update(str(self.seed).encode())
        page_id = digest.hexdigest()[:12]
        order, shown = {}, []
        for item in items:
            left = rng.choice(("A", "B"))
            order[item.id] = left
            texts = (item.a, item.b) if left == "A" else (item.b, item.a)
            shown.append({"id": item.id, "prompt": item.prompt, "left": texts[0], "right": texts[1]})
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        self.key_path.write_text(
            json.dumps({"page_id": page_id, "seed": self.seed, "left_is": order}, indent=1) + "\n"
        )
        data = json.dumps({"page_id": page_id, "items": shown})
        # Inside <script>, "</" would end the element: escape it (JSON allows "<\/").
        page_text = PAGE.replace("__DATA__", data.replace("</", "<\\/"))
        path = Path(page)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page_text)
        return path

    def judge(self, items: list[Item], choices_path: str | Path) -> list[Verdict]:
        if not self.key_path.is_file():
            raise ValueError(
                f"{self.key_path} is missing: import into the --out folder the page was exported with"
            )
        key = json.loads(self.key_path.read_text())
        path = Path(choices_path)
        if not path.is_file():
            raise ValueError(f"--import {choices_path}: no such file")
        try:
            exported = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"--import {choices_path}: not JSON ({err.msg}); pass the page's export"
            ) from err
        if exported.get("page_id") != key["page_id"]:
            raise ValueError(
                f"--import {choices_path}: exported from page {exported.get('page_id')!r}, but {self.key_path} "
                f"belongs to page {key['page_id']!r}"
            )
        choices: dict[str, str] = exported.get("choices", {})
        unknown = sorted(set(choices) - set(key["left_is"]))
        if unknown:
            raise ValueError(f"--import {choices_path}: ids {unknown[:5]} are not on the page")
        verdicts = []
        for item in items:
            choice = choices.get(item.id)
            if choice is None:
                continue
            left = key["left_is"][item.id]
            right = "B" if left == "A" else "A"
            winner = {"left": left, "right": right, "tie": "tie"}.get(choice)
            if winner is None:
                raise ValueError(
                    f"--import {choices_path}: id {item.id}: choice {choice!r} is not left/right/tie"
                )
            verdicts.append(Verdict(item.id, winner, {"choice": choice, "shown_left": left}))
        if len(verdicts) < len(items):
            notice(
                f"{len(items) - len(verdicts)} of {len(items)} items were not judged; summarising {len(verdicts)}"
            )
        if not verdicts:
            raise ValueError(f"--import {choices_path}: no item was judged")
        self.page_id, self.choices_file = key["page_id"], str(path)
        return verdicts

    def settings(self) -> dict:
        return {
            "kind": "human",
            "page_id": self.page_id,
            "choices": self.choices_file,
            "order_seed": self.seed,
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Which response is better?</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}
header{background:#fff;border-bottom:1px solid #ddd;padding:10px 24px;display:flex;gap:24px;align-items:center}
header h1{font-size:18px;margin:0}
#bar{flex:1;height:8px;background:#e3e5e8;border-radius:4px;overflow:hidden}
#fill{height:100%;background:#3b7d4f;width:0}
main{max-width:1400px;margin:0 auto;padding:16px 24px}
.prompt,.resp{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px}
pre{white-space:pre-wrap;word-wrap:break-word;font-family:ui-monospace,monospace;font-size:13px;margin:6px 0 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-top:12px}
.resp.chosen{border:2px solid #3b7d4f;background:#f1f8f3}
.controls{margin-top:14px;display:flex;gap:10px;flex-wrap:wrap;align-items:center}
button{font-size:15px;padding:8px 14px;border-radius:6px;border:1px solid #999;background:#fff;cursor:pointer}
button.on{background:#3b7d4f;color:#fff;border-color:#3b7d4f}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 4px;font-size:12px;background:#fafafa}
#done{color:#3b7d4f;font-weight:600}
textarea{width:100%;height:90px;margin-top:10px;font-family:ui-monospace,monospace;font-size:12px}
.help{color:#555;font-size:13px}
</style></head><body>
<header><h1>Which response is better?</h1><span id="progress"></span><div id="bar"><div id="fill"></div></div>
<button id="export" title="e">Export choices</button></header>
<main>
<div class="prompt"><b>Prompt</b> <span class="help" id="position"></span><pre id="prompt"></pre></div>
<div class="pair">
 <div class="resp" id="left"><b>Response 1</b><pre id="left-text"></pre></div>
 <div class="resp" id="right"><b>Response 2</b><pre id="right-text"></pre></div>
</div>
<div class="controls">
 <button id="choose-left">Response 1 is better <kbd>1</kbd></button>
 <button id="choose-tie">About the same <kbd>3</kbd> <kbd>t</kbd></button>
 <button id="choose-right">Response 2 is better <kbd>2</kbd></button>
 <span style="flex:1"></span>
 <button id="prev">&larr; Previous <kbd>p</kbd></button>
 <button id="next">Next &rarr; <kbd>n</kbd></button>
</div>
<p class="help">The two responses come from two systems in a random order that changes from item to item.
Choosing moves on to the next unjudged item. Your choices are kept in this browser; <b>Export</b>
(<kbd>e</kbd>) downloads them as a JSON file for <code>orpo judge ... --judge human --import FILE</code>.</p>
<p id="done"></p>
<textarea id="export-json" readonly placeholder="exported choices appear here too"></textarea>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const STORE = "orpo-human-" + DATA.page_id;
let choices = {};
try { choices = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch (e) { choices = {}; }
let pos = 0;
const n = DATA.items.length;
const $ = (id) => document.getElementById(id);
function save() { try { localStorage.setItem(STORE, JSON.stringify(choices)); } catch (e) {} }
function judged() { return DATA.items.filter((it) => choices[it.id]).length; }
function show() {
  const it = DATA.items[pos];
  $("prompt").textContent = it.prompt;
  $("left-text").textContent = it.left;
  $("right-text").textContent = it.right;
  $("position").textContent = "(item " + (pos + 1) + " of " + n + ")";
  const c = choices[it.id];
  $("left").classList.toggle("chosen", c === "left");
  $("right").classList.toggle("chosen", c === "right");
  for (const k of ["left", "tie", "right"]) $("choose-" + k).classList.toggle("on", c === k);
  const done = judged();
  $("progress").textContent = done + " of " + n + " judged";
  $("fill").style.width = (100 * done / n) + "%";
  $("done").textContent = done === n ? "All " + n + " items judged. Press Export to save your choices." : "";
}
function choose(c) {
  choices[DATA.items[pos].id] = c;
  save();
  for (let k = 1; k <= n; k++) {
    const j = (pos + k) % n;
    if (!choices[DATA.items[j].id]) { pos = j; break; }
  }
  show();
}
function move(d) { pos = Math.min(n - 1, Math.max(0, pos + d)); show(); }
function exportChoices() {
  const out = {page_id: DATA.page_id, exported_at: new Date().toISOString(), n_items: n, choices: choices};
  const text = JSON.stringify(out, null, 1);
  $("export-json").value = text;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
  a.download = "choices-" + DATA.page_id + ".json";
  document.body.appendChild(a); a.click(); a.remove();
}
$("choose-left").onclick = () => choose("left");
$("choose-right").onclick = () => choose("right");
$("choose-tie").onclick = () => choose("tie");
$("prev").onclick = () => move(-1);
$("next").onclick = () => move(1);
$("export").onclick = exportChoices;
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {"1": () => choose("left"), "2": () => choose("right"), "3": () => choose("tie"),
    "t": () => choose("tie"), "n": () => move(1), "ArrowRight": () => move(1), "p": () => move(-1),
    "ArrowLeft": () => move(-1), "e": exportChoices};
  if (actions[ev.key]) { ev.preventDefault(); actions[ev.key](); }
});
show();
</script>
</body></html>
"""
