// The page: POST /v1/completions (completion mode) or /v1/chat/completions (chat mode, offered when the model
// has a chat template: /health's "chat") with "stream": true, showing the text as the events arrive.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;
let history = []; // chat mode: the conversation so far, [{role: "user"|"assistant", content}] (no system message)
let conversation = 0; // counts resets: a reply that ends after one does not join the new conversation

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

function chatMode() {
  return $("mode_chat").checked;
}

function showMode() {
  const chat = chatMode();
  $("chat_panel").hidden = !chat;
  $("reset").hidden = !chat;
  $("completion_panel").hidden = chat;
  $("output_section").hidden = chat;
  $("generate").textContent = chat ? "Send" : "Generate";
  setStatus("");
  (chat ? $("chat_input") : $("prompt")).focus();
}

async function loadInfo() {
  try {
    const r = await fetch("/health");
    const info = await r.json();
    $("model").textContent = info.model;
    $("key_label").hidden = !info.auth_required;
    $("modes").hidden = !info.chat;
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

// the sampling fields both APIs take
function samplingFields(body) {
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

// POST `body` to `path` and stream its events: onText(piece) for each piece of text (pickText takes it from a
// chunk's choice); resolves to the finish reason. A JSON error answer throws an Error with the server's message.
async function streamRequest(path, body, pickText, onText) {
  const headers = { "Content-Type": "application/json" };
  const key = $("api_key").value;
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  let reason = null;
  await readEvents(r, (data) => {
    if (data === "[DONE]") return false;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    for (const choice of chunk.choices) {
      const text = pickText(choice);
      if (text) onText(text);
      if (choice.finish_reason) reason = choice.finish_reason;
    }
    return true;
  });
  return reason;
}

function startRun() {
  controller = new AbortController();
  setStatus("generating…");
  $("generate").disabled = true;
  $("stop_button").disabled = false;
  return performance.now();
}

function endRun() {
  controller = null;
  $("generate").disabled = false;
  $("stop_button").disabled = true;
}

function showFailure(e) {
  setStatus(e.name === "AbortError" ? "stopped" : "error: " + e.message, e.name !== "AbortError");
}

async function generate() {
  const body = samplingFields({ prompt: $("prompt").value, stream: true });
  $("out_prompt").textContent = body.prompt;
  $("out_text").textContent = "";
  const t0 = startRun();
  try {
    const reason = await streamRequest("/v1/completions", body, (c) => c.text,
      (text) => { $("out_text").textContent += text; });
    setStatus(`done (${reason || "?"}) in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (e) {
    showFailure(e);
  } finally {
    endRun();
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function sendChat() {
  const text = $("chat_input").value;
  if (!text.trim()) {
    setStatus("type a message first", true);
    return;
  }
  const system = $("system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...history,
    { role: "user", content: text }];
  const body = samplingFields({ messages, stream: true });
  const userDiv = addMessage("user", text);
  const replyDiv = addMessage("assistant", "");
  $("chat_input").value = "";
  const t0 = startRun();
  const turn = conversation;
  let reply = "";
  try {
    const reason = await streamRequest("/v1/chat/completions", body, (c) => c.delta && c.delta.content,
      (piece) => { reply += piece; replyDiv.textContent = reply; replyDiv.scrollIntoView({ block: "end" }); });
    if (turn !== conversation) return; // reset while it ran: the conversation it belonged to is gone
    history.push({ role: "user", content: text }, { role: "assistant", content: reply });
    setStatus(`done (${reason || "?"}) in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (e) {
    if (turn !== conversation) return; // reset while it ran: the conversation it belonged to is gone
    if (e.name === "AbortError" && reply) {
      history.push({ role: "user", content: text }, { role: "assistant", content: reply }); // keep what was shown
    } else {
      // nothing came back: the message goes back into the box, to edit or send again
      userDiv.remove();
      replyDiv.remove();
      $("chat_input").value = text;
    }
    showFailure(e);
  } finally {
    endRun();
  }
}

function resetChat() {
  conversation += 1;
  if (controller) controller.abort();
  history = [];
  $("messages").textContent = "";
  setStatus("conversation cleared");
  $("chat_input").focus();
}

function submit(ev) {
  ev.preventDefault();
  if (controller) return;
  if (chatMode()) sendChat(); else generate();
}

document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  $("form").addEventListener("submit", submit);
  $("stop_button").addEventListener("click", () => controller && controller.abort());
  $("reset").addEventListener("click", resetChat);
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", showMode);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
  });
  $("chat_input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("form").requestSubmit();
    }
  });
});
