// The page: POST /v1/completions with "stream": true and show the text as the events arrive.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

async function loadInfo() {
  try {
    const r = await fetch("/health");
    const info = await r.json();
    $("model").textContent = info.model;
    $("key_label").hidden = !info.auth_required;
    if (info.max_tokens_cap) $("max_tokens").max = info.max_tokens_cap;
  } catch (e) {
    $("model").textContent = "server unreachable";
  }
}

function numberField(body, name, integer) {
  const raw = $(name).value.trim();
  if (raw === "") return;
  const v = integer ? parseInt(raw, 10) : parseFloat(raw);
  if (!Number.isNaN(v)) body[name] = v;
}

function requestBody() {
  const body = { prompt: $("prompt").value, stream: true };
  numberField(body, "max_tokens", true);
  numberField(body, "temperature", false);
  numberField(body, "top_p", false);
  numberField(body, "top_k", true);
  numberField(body, "repeat_penalty", false);
  numberField(body, "seed", true);
  const stop = $("stop").value;
  if (stop) body.stop = stop.replace(/\\n/g, "\n").replace(/\\t/g, "\t");
  return body;
}

// Server-sent events from a fetch body: "data: ..." lines, events separated by a blank line.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) {
          if (onData(line.slice(6)) === false) return;
        }
      }
    }
  }
}

async function generate(ev) {
  ev.preventDefault();
  if (controller) return;
  const body = requestBody();
  $("out_prompt").textContent = body.prompt;
  $("out_text").textContent = "";
  setStatus("generating…");
  $("generate").disabled = true;
  $("stop_button").disabled = false;
  controller = new AbortController();
  const headers = { "Content-Type": "application/json" };
  const key = $("api_key").value;
  if (key) headers.Authorization = "Bearer " + key;
  const t0 = performance.now();
  try {
    const r = await fetch("/v1/completions", {
      method: "POST", headers, body: JSON.stringify(body), signal: controller.signal,
    });
    if (!r.ok) {
      let message = r.status + " " + r.statusText;
      try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
      setStatus("error: " + message, true);
      return;
    }
    let reason = null;
    await readEvents(r, (data) => {
      if (data === "[DONE]") return false;
      const chunk = JSON.parse(data);
      for (const choice of chunk.choices) {
        $("out_text").textContent += choice.text;
        if (choice.finish_reason) reason = choice.finish_reason;
      }
      return true;
    });
    const s = (performance.now() - t0) / 1000;
    setStatus(`done (${reason || "?"}) in ${s.toFixed(2)} s`);
  } catch (e) {
    setStatus(e.name === "AbortError" ? "stopped" : "error: " + e.message, e.name !== "AbortError");
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("stop_button").disabled = true;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  $("form").addEventListener("submit", generate);
  $("stop_button").addEventListener("click", () => controller && controller.abort());
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
  });
});
