// insieme playground: plain JavaScript, no framework, no build step.
// Streams /v1/chat/completions over fetch() + a ReadableStream reader; Stop aborts the request,
// and closing the connection is what makes the server cancel the sequence.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    model: $("model"), system: $("system"), temperature: $("temperature"),
    temperatureValue: $("temperature-value"), topP: $("top-p"), topPValue: $("top-p-value"),
    maxTokens: $("max-tokens"), apiKey: $("api-key"), newChat: $("new-chat"),
    status: $("server-status"), messages: $("messages"), empty: $("empty"),
    composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
    settings: $("settings"), settingsToggle: $("settings-toggle"),
  };
  const STORE = "insieme.playground.";
  // Settings kept in localStorage, by element.
  const saved = {
    apiKey: els.apiKey, system: els.system, temperature: els.temperature,
    topP: els.topP, maxTokens: els.maxTokens,
  };
  const state = { history: [], controller: null, notice: null, reloadTimer: null };

  // ---- settings ----

  function restoreSettings() {
    for (const [name, el] of Object.entries(saved)) {
      const value = localStorage.getItem(STORE + name);
      if (value !== null) el.value = value;
      el.addEventListener("input", () => localStorage.setItem(STORE + name, el.value));
    }
    const showRanges = () => {
      els.temperatureValue.textContent = Number(els.temperature.value).toFixed(2);
      els.topPValue.textContent = Number(els.topP.value).toFixed(2);
    };
    els.temperature.addEventListener("input", showRanges);
    els.topP.addEventListener("input", showRanges);
    showRanges();
  }

  function openSettings(open) {
    els.settings.classList.toggle("open", open);
    els.settingsToggle.setAttribute("aria-expanded", String(open));
  }

  function authHeaders(json) {
    const headers = json ? { "Content-Type": "application/json" } : {};
    const key = els.apiKey.value.trim();
    if (key) headers.Authorization = "Bearer " + key;
    return headers;
  }

  // ---- errors, said plainly ----

  function networkFailure() {
    return {
      title: "Cannot reach the server",
      detail: `No answer from ${location.origin}.`,
      hint: "Is insieme still running? Start it with: insieme serve",
    };
  }

  async function httpFailure(res) {
    let message = res.statusText || "no details";
    try {
      const body = await res.json();
      message = (body && body.error && body.error.message) || JSON.stringify(body);
    } catch { /* not JSON: keep the status text */ }
    const retry = res.headers.get("Retry-After");
    const titles = {
      400: "The server refused the request",
      401: "The server rejected the API key",
      404: "Not found",
      429: "The server's queue is full",
      503: "The server is not ready yet",
    };
    let title = titles[res.status] || (res.status >= 500 ? "The server failed" : "Request failed");
    const hints = {
      401: "Enter the server's key under Settings → API key.",
      429: retry ? `Try again in ${retry} s.` : "Try again shortly.",
      503: "The model may still be loading: try again in a moment.",
    };
    return { title: `${title} (${res.status})`, detail: message, hint: hints[res.status] };
  }

  function errorCard({ title, detail, hint }) {
    const card = document.createElement("div");
    card.className = "error";
    card.setAttribute("role", "alert");
    const strong = document.createElement("strong");
    strong.textContent = title;
    card.append(strong, detail);
    if (hint) {
      const small = document.createElement("small");
      small.textContent = hint;
      card.append(small);
    }
    return card;
  }

  function showNotice(failure) {
    if (state.notice) state.notice.remove();
    state.notice = failure ? errorCard(failure) : null;
    if (state.notice) els.messages.append(state.notice);
  }

  function setStatus(kind, text) {
    els.status.className = "server-status " + kind;
    els.status.textContent = text;
  }

  // ---- models ----

  async function loadModels() {
    let res;
    try {
      res = await fetch("v1/models", { headers: authHeaders(false) });
    } catch {
      fillModels([], "Server unreachable");
      setStatus("down", "Server unreachable");
      showNotice(networkFailure());
      return;
    }
    if (!res.ok) {
      const failure = await httpFailure(res);
      fillModels([], res.status === 401 ? "API key needed" : "No models");
      setStatus("down", failure.title);
      showNotice(failure);
      return;
    }
    const body = await res.json();
    const models = (Array.isArray(body) ? body : body.data || []).map((m) => m.id);
    fillModels(models, "No models served");
    setStatus("ok", `Connected · ${models.length} model${models.length === 1 ? "" : "s"}`);
    showNotice(null);
  }

  function fillModels(ids, emptyLabel) {
    const wanted = localStorage.getItem(STORE + "model");
    els.model.replaceChildren(...(ids.length ? ids : [""]).map((id) => new Option(id || emptyLabel, id)));
    if (wanted && ids.includes(wanted)) els.model.value = wanted;
  }

  // ---- conversation ----

  function atBottom() {
    const m = els.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || atBottom()) els.messages.scrollTop = els.messages.scrollHeight;
  }

  function addMessage(role, text) {
    els.empty.hidden = true;
    const root = document.createElement("div");
    root.className = "msg " + role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = role === "user" ? "You" : els.model.value || "Assistant";
    const content = document.createElement("div");
    content.className = "content";
    content.textContent = text;
    const meta = document.createElement("div");
    meta.className = "meta";
    root.append(who, content, meta);
    els.messages.insertBefore(root, state.notice);
    scrollDown(true);
    return { root, content, meta };
  }

  function showStats(meta, run) {
    const pills = [];
    if (run.firstAt !== null) {
      const ttft = run.firstAt - run.startedAt;
      pills.push(["TTFT " + (ttft < 1000 ? `${Math.round(ttft)} ms` : `${(ttft / 1000).toFixed(2)} s`)]);
      const tokens = run.completionTokens ?? run.chunks;
      const seconds = (run.endedAt - run.firstAt) / 1000;
      // Decode speed: the tokens after the first, over the time since the first arrived.
      if (tokens > 1 && seconds > 0) pills.push([`${((tokens - 1) / seconds).toFixed(1)} tok/s`]);
      pills.push([`${tokens} token${tokens === 1 ? "" : "s"}`]);
    }
    if (run.finish === "length") pills.push(["max tokens reached"]);
    if (run.stopped) pills.push(["stopped", "stopped"]);
    meta.replaceChildren(...pills.map(([text, cls]) => {
      const span = document.createElement("span");
      span.textContent = text;
      if (cls) span.className = cls;
      return span;
    }));
  }

  function setBusy(busy) {
    els.send.hidden = busy;
    els.stop.hidden = !busy;
    if (!busy) els.prompt.focus();
  }

  async function readStream(res, reply, run) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return { title: "The connection closed early",
                           detail: "The server ended the stream before the reply finished." };
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (!line.startsWith("data:")) continue;  // blank separators and ": ping" comments
          const data = line.slice(5).trim();
          if (data === "[DONE]") return null;
          let chunk;
          try { chunk = JSON.parse(data); } catch { continue; }
          if (chunk.error) {
            return { title: "The server reported an error mid-reply",
                     detail: chunk.error.message || JSON.stringify(chunk.error) };
          }
          const choice = chunk.choices && chunk.choices[0];
          const piece = choice && choice.delta && choice.delta.content;
          if (piece) {
            const stick = atBottom();
            if (run.firstAt === null) run.firstAt = performance.now();
            run.chunks += 1;
            run.text += piece;
            reply.content.append(piece);
            scrollDown(stick);
          }
          if (choice && choice.finish_reason) run.finish = choice.finish_reason;
          if (chunk.usage) run.completionTokens = chunk.usage.completion_tokens;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  async function send() {
    const text = els.prompt.value;
    if (!text.trim() || state.controller) return;
    const controller = new AbortController();
    state.controller = controller;
    // Without a model list (bad key, server down) send anyway: the reply's error says why.
    if (!els.model.value) await loadModels();
    showNotice(null);
    for (const card of els.messages.querySelectorAll(".error")) card.remove();
    els.prompt.value = "";
    autosize();
    openSettings(false);
    // "New chat" mid-reply swaps state.history: this turn must not leak into the new one.
    const history = state.history;
    const turn = { role: "user", content: text };
    history.push(turn);
    const userEl = addMessage("user", text);
    const reply = addMessage("assistant", "");
    reply.root.classList.add("streaming");
    setBusy(true);

    const system = els.system.value.trim();
    const maxTokens = parseInt(els.maxTokens.value, 10);
    const body = {
      model: els.model.value,
      messages: (system ? [{ role: "system", content: system }] : []).concat(history),
      stream: true,
      temperature: Number(els.temperature.value),
      top_p: Number(els.topP.value),
    };
    if (maxTokens > 0) body.max_tokens = maxTokens;

    const run = { startedAt: performance.now(), firstAt: null, endedAt: null, chunks: 0,
                  completionTokens: null, text: "", finish: null, stopped: false };
    let failure = null;
    try {
      const res = await fetch("v1/chat/completions", {
        method: "POST", headers: authHeaders(true), body: JSON.stringify(body),
        signal: controller.signal,
      });
      failure = res.ok ? await readStream(res, reply, run) : await httpFailure(res);
    } catch (err) {
      if (err && err.name === "AbortError") run.stopped = true;
      else failure = networkFailure();
    }
    run.endedAt = performance.now();
    state.controller = null;
    reply.root.classList.remove("streaming");
    setBusy(false);

    if (run.text) {
      // A stopped or broken reply keeps what arrived, so the conversation stays consistent.
      history.push({ role: "assistant", content: run.text });
      showStats(reply.meta, run);
    } else {
      // Nothing came back: take the turn out and give the text back to edit or resend.
      history.splice(history.indexOf(turn), 1);
      reply.root.remove();
      userEl.root.remove();
      if (!els.prompt.value) { els.prompt.value = text; autosize(); }
    }
    if (failure) els.messages.insertBefore(errorCard(failure), state.notice);
    if (!els.messages.querySelector(".msg")) els.empty.hidden = false;
    scrollDown(true);
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function newChat() {
    stop();
    state.history = [];
    for (const node of els.messages.querySelectorAll(".msg, .error")) {
      if (node !== state.notice) node.remove();
    }
    els.empty.hidden = false;
    els.prompt.focus();
  }

  function autosize() {
    els.prompt.style.height = "auto";
    els.prompt.style.height = Math.min(els.prompt.scrollHeight + 2, window.innerHeight * 0.4) + "px";
  }

  // ---- wiring ----

  restoreSettings();
  els.composer.addEventListener("submit", (e) => { e.preventDefault(); send(); });
  els.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    if (e.key === "Escape") stop();
  });
  els.prompt.addEventListener("input", autosize);
  els.stop.addEventListener("click", stop);
  els.newChat.addEventListener("click", newChat);
  els.model.addEventListener("change", () => localStorage.setItem(STORE + "model", els.model.value));
  els.apiKey.addEventListener("input", () => {
    clearTimeout(state.reloadTimer);
    state.reloadTimer = setTimeout(loadModels, 300);
  });
  els.settingsToggle.addEventListener("click", () => {
    openSettings(!els.settings.classList.contains("open"));
  });
  // On a phone the settings slide over the chat: a tap on the chat puts them away.
  document.querySelector(".chat").addEventListener("click", () => openSettings(false));
  loadModels();
  els.prompt.focus();
})();
