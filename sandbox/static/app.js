// The sandbox chat page: plays a Telegram user against the bot through the sandbox's test API.
//
// It only talks to /_sandbox/ (the API the tests use): history from GET chats/{id}/messages,
// live updates from the Server-Sent Events stream GET stream?chat_id=&since=, messages with
// POST send and button taps with POST press. Plain JavaScript, no build step, nothing fetched
// from anywhere else.
"use strict";

(() => {
  const TYPING_MS = 5500; // Telegram shows a chat action for about 5 s
  const RETRY_MS = 3000;
  const NEAR_BOTTOM_PX = 120;
  const PHOTO_BOX = { width: 420, height: 460 }; // the largest a photo is shown, in CSS px
  const PHOTO_WIDTHS = "(max-width: 500px) 80vw, 420px";
  const ACTIONS = {
    typing: "typing…",
    upload_photo: "sending a photo…",
    upload_document: "sending a file…",
    choose_sticker: "choosing a sticker…",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    messages: $("messages"),
    empty: $("empty"),
    status: $("status"),
    botName: $("bot-name"),
    asAdmin: $("as-admin"),
    adminSwitch: $("admin-switch"),
    adminHint: $("admin-hint"),
    asFile: $("as-file"),
    identity: $("identity"),
    replyKeyboard: $("reply-keyboard"),
    composer: $("composer"),
    text: $("text"),
    attach: $("attach"),
    pick: $("pick"),
    cameraButton: $("camera-button"),
    camera: $("camera"),
    drop: $("drop"),
    toast: $("toast"),
  };

  const app = {
    botName: "Verdict",
    userId: 1001,
    adminId: null,
    maxUpload: 60 * 1024 * 1024,
    chatId: null,
    generation: 0, // bumped by openChat: late answers for another chat are ignored
    source: null,
    connected: false,
    typing: null,
    typingTimer: 0,
    nodes: new Map(), // message_id -> row element
    queue: Promise.resolve(), // sends go one after the other, in the order they were made
    inflight: null, // the "sending" row whose POST is under way
    pressed: new Map(), // callback_query_id -> button waiting for its answer
    answered: new Set(),
    toastTimer: 0,
  };

  // ------------------------------------------------------------------ helpers

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const fileUrl = (fileId) => `/_sandbox/files/${encodeURIComponent(fileId)}`;

  function humanSize(bytes) {
    if (!Number.isFinite(bytes)) return "";
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function clock(unixSeconds) {
    const date = new Date(unixSeconds * 1000);
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  async function getJson(path) {
    try {
      const response = await fetch(path, { cache: "no-store" });
      const body = await response.json().catch(() => ({}));
      return { ok: response.ok && body.ok === true, status: response.status, body };
    } catch (error) {
      return { ok: false, status: 0, body: { description: "the sandbox is not reachable" } };
    }
  }

  async function postForm(path, fields) {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) {
      if (value instanceof File) form.append(key, value, value.name || "file");
      else form.append(key, String(value));
    }
    try {
      const response = await fetch(path, { method: "POST", body: form });
      const body = await response.json().catch(() => ({}));
      if (!body.description && !response.ok) {
        body.description = response.status === 413 ? "the file is too large" : response.statusText;
      }
      return { ok: response.ok && body.ok === true, status: response.status, body };
    } catch (error) {
      return {
        ok: false,
        status: 0,
        body: { description: "the sandbox is not reachable (is the bot still running?)" },
      };
    }
  }

  function currentIdentity() {
    const admin = ui.asAdmin.checked && app.adminId !== null;
    return admin
      ? { id: app.adminId, name: "Admin", label: "Admin" }
      : { id: app.userId, name: "You", label: "You" };
  }

  function showToast(text, ms = 3500) {
    ui.toast.textContent = text;
    ui.toast.hidden = false;
    clearTimeout(app.toastTimer);
    app.toastTimer = setTimeout(() => {
      ui.toast.hidden = true;
    }, ms);
  }

  // ----------------------------------------------------------------- status

  function renderStatus() {
    let text = "bot";
    let typing = false;
    if (!app.connected) text = "connecting…";
    else if (app.typing) {
      text = ACTIONS[app.typing] || "typing…";
      typing = true;
    }
    ui.status.textContent = text;
    ui.status.classList.toggle("typing", typing);
    let row = ui.messages.querySelector(".typing-row");
    if (typing && app.typing === "typing" && !row) {
      row = h(
        "div",
        { class: "msg in typing-row", "aria-hidden": "true" },
        h("div", { class: "bubble" }, h("span", { class: "dot" }), h("span", { class: "dot" }),
          h("span", { class: "dot" })),
      );
      const nearBottom = isNearBottom();
      ui.messages.append(row);
      if (nearBottom) scrollToBottom();
    } else if (!typing && row) {
      row.remove();
    }
  }

  function startTyping(action) {
    app.typing = action;
    clearTimeout(app.typingTimer);
    app.typingTimer = setTimeout(stopTyping, TYPING_MS);
    renderStatus();
  }

  function stopTyping() {
    clearTimeout(app.typingTimer);
    app.typing = null;
    renderStatus();
  }

  function setConnected(connected) {
    if (app.connected === connected) return;
    app.connected = connected;
    renderStatus();
  }

  // --------------------------------------------------------------- rendering

  function isNearBottom() {
    const list = ui.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function updateEmpty() {
    ui.empty.hidden = ui.messages.querySelector(".msg:not(.typing-row)") !== null;
  }

  /** Plain text with links and /commands made clickable, as Telegram shows them. */
  function linkify(text) {
    const fragment = document.createDocumentFragment();
    const pattern = /(https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'])|(^|[\s(])(\/[A-Za-z0-9_]{1,32})(?![\w/@])/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      let start = match.index;
      if (match[1]) {
        fragment.append(text.slice(last, start));
        fragment.append(
          h("a", { href: match[1], target: "_blank", rel: "noopener noreferrer" }, match[1]),
        );
      } else {
        start += match[2].length;
        fragment.append(text.slice(last, start));
        const command = match[3];
        const link = h("a", { href: "#", class: "command" }, command);
        link.addEventListener("click", (event) => {
          event.preventDefault();
          sendText(command);
        });
        fragment.append(link);
      }
      last = match.index + match[0].length;
    }
    fragment.append(text.slice(last));
    return fragment;
  }

  /** The subset of Telegram's HTML formatting, rebuilt from parsed nodes (never innerHTML). */
  function sanitizedHtml(html) {
    const allowed = {
      B: "b", STRONG: "b", I: "i", EM: "i", U: "u", INS: "u", S: "s", STRIKE: "s", DEL: "s",
      CODE: "code", PRE: "pre", BLOCKQUOTE: "blockquote", SPAN: "span", "TG-SPOILER": "span",
    };
    const parsed = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html");
    const copy = (from, to) => {
      for (const child of from.childNodes) {
        if (child.nodeType === Node.TEXT_NODE) {
          to.append(child.textContent);
        } else if (child.nodeType === Node.ELEMENT_NODE) {
          let target = to;
          if (child.tagName === "A") {
            const href = child.getAttribute("href") || "";
            target = /^(https?:|mailto:)/i.test(href)
              ? h("a", { href, target: "_blank", rel: "noopener noreferrer" })
              : h("span");
            to.append(target);
          } else if (allowed[child.tagName]) {
            target = h(allowed[child.tagName]);
            to.append(target);
          }
          copy(child, target);
        }
      }
    };
    const fragment = document.createDocumentFragment();
    copy(parsed.body, fragment);
    return fragment;
  }

  function buildText(text, parseMode) {
    const node = h("div", { class: "text" });
    if ((parseMode || "").toUpperCase() === "HTML") node.append(sanitizedHtml(text));
    else node.append(linkify(text));
    return node;
  }

  function senderName(message) {
    if (message.from_bot || (message.from && message.from.is_bot)) return app.botName;
    return (message.from && message.from.first_name) || "User";
  }

  function describe(message) {
    const text = message.text || message.caption;
    if (text) return text.split("\n")[0];
    if (message.photo) return "Photo";
    if (message.sticker) return `${message.sticker.emoji || ""} Sticker`.trim();
    if (message.video) return "Video";
    if (message.voice) return "Voice message";
    if (message.animation) return "GIF";
    if (message.document) return message.document.file_name || "File";
    return "Message";
  }

  function buildQuote(quoted) {
    const quote = h("button", { type: "button", class: "quote" });
    quote.setAttribute("aria-label", `In reply to ${senderName(quoted)}: ${describe(quoted)}`);
    if (quoted.photo && quoted.photo.length) {
      quote.append(h("img", { src: fileUrl(quoted.photo[0].file_id), alt: "", loading: "lazy" }));
    }
    quote.append(
      h("span", {}, h("span", { class: "who" }, senderName(quoted)),
        h("span", { class: "what" }, describe(quoted))),
    );
    quote.addEventListener("click", () => {
      const target = app.nodes.get(quoted.message_id);
      if (!target) return;
      target.scrollIntoView({ block: "center" });
      target.classList.remove("highlight");
      void target.offsetWidth; // restart the animation
      target.classList.add("highlight");
      target.querySelector(".bubble").focus({ preventScroll: true });
    });
    return quote;
  }

  /** A photo from its PhotoSizes: downscaled to fit, never shown larger than it is. */
  function buildPhoto(sizes) {
    const largest = sizes[sizes.length - 1];
    const scale = Math.min(1, PHOTO_BOX.width / largest.width, PHOTO_BOX.height / largest.height);
    const width = Math.max(1, Math.round(largest.width * scale));
    const height = Math.max(1, Math.round(largest.height * scale));
    const fitting = sizes.find((size) => size.width >= width * 2) || largest;
    return h("img", {
      class: "photo",
      src: fileUrl(fitting.file_id),
      srcset: sizes.map((size) => `${fileUrl(size.file_id)} ${size.width}w`).join(", "),
      sizes: PHOTO_WIDTHS,
      width,
      height,
      alt: "Photo",
      loading: "lazy",
      decoding: "async",
    });
  }

  function buildDocument(document_) {
    const name = document_.file_name || "file";
    const mime = document_.mime_type || "";
    const extension = (name.includes(".") ? name.split(".").pop() : "file").slice(0, 4);
    const icon = h("span", { class: "icon", "aria-hidden": "true" });
    if (/^image\/(jpeg|png|gif|webp|bmp|svg\+xml)$/.test(mime)) {
      const thumb = h("img", { src: fileUrl(document_.file_id), alt: "", loading: "lazy" });
      thumb.addEventListener("error", () => thumb.replaceWith(extension.toUpperCase()));
      icon.append(thumb);
    } else {
      icon.append(extension.toUpperCase());
    }
    return h(
      "a",
      { class: "file", href: fileUrl(document_.file_id), download: name },
      icon,
      h("span", {}, h("span", { class: "name" }, name),
        h("span", { class: "size" }, humanSize(document_.file_size))),
    );
  }

  function buildMedia(message) {
    if (message.photo && message.photo.length) return buildPhoto(message.photo);
    if (message.document) return buildDocument(message.document);
    for (const kind of ["sticker", "video", "voice", "animation", "audio"]) {
      if (message[kind]) return h("div", { class: "other" }, describe(message));
    }
    return null;
  }

  function buildMeta(message) {
    const meta = h("span", { class: "meta" });
    if (message.edit_date) meta.append(h("span", { class: "edited" }, "edited"));
    meta.append(h("time", { datetime: new Date(message.date * 1000).toISOString() },
      clock(message.date)));
    return meta;
  }

  function buildKeyboard(message, rows) {
    const keyboard = h("div", { class: "keyboard", role: "group", "aria-label": "Message buttons" });
    for (const row of rows) {
      const line = h("div", { class: "row" });
      for (const button of row) {
        if (typeof button.url === "string" && /^https?:/i.test(button.url)) {
          line.append(
            h("a", { href: button.url, target: "_blank", rel: "noopener noreferrer" },
              `${button.text} ↗`),
          );
        } else if (typeof button.callback_data === "string") {
          const node = h("button", { type: "button" }, button.text);
          node.dataset.callbackData = button.callback_data;
          node.addEventListener("click", () => press(message, button.callback_data, node));
          line.append(node);
        } else if (button.copy_text && typeof button.copy_text.text === "string") {
          const node = h("button", { type: "button" }, button.text);
          node.addEventListener("click", () => {
            navigator.clipboard?.writeText(button.copy_text.text).then(
              () => showToast("Copied to the clipboard"),
              () => showToast(button.copy_text.text),
            );
          });
          line.append(node);
        } else {
          line.append(
            h("button", { type: "button", disabled: true, title: "Not available in the sandbox" },
              button.text),
          );
        }
      }
      keyboard.append(line);
    }
    return keyboard;
  }

  function buildMessage(message) {
    const outgoing = !message.from_bot;
    const row = h("div", { class: `msg ${outgoing ? "out" : "in"}` });
    row.dataset.messageId = String(message.message_id);
    const bubble = h("div", { class: "bubble", tabindex: "-1" });
    bubble.append(h("span", { class: "visually-hidden" }, `${senderName(message)}: `));
    if (message.reply_to_message) bubble.append(buildQuote(message.reply_to_message));
    const media = buildMedia(message);
    const text = message.text ?? message.caption;
    if (media) {
      bubble.classList.add("media");
      if (!text && media instanceof HTMLImageElement) bubble.classList.add("bare");
      bubble.append(media);
    }
    // The time floats at the end of the text's last line when it fits there, as in Telegram.
    const meta = buildMeta(message);
    if (text) {
      const body = buildText(text, message.parse_mode);
      body.append(meta);
      bubble.append(body);
    } else {
      bubble.append(meta);
    }
    bubble.append(h("div", { class: "clear" }));
    row.append(bubble);
    const rows = message.reply_markup && message.reply_markup.inline_keyboard;
    if (Array.isArray(rows) && rows.some((line) => line.length)) {
      row.append(buildKeyboard(message, rows));
    }
    return row;
  }

  /** Where a new row goes: before a later message, else before the rows still being sent. */
  function insertionPoint(messageId) {
    for (const child of ui.messages.children) {
      const id = Number(child.dataset.messageId);
      if (id > messageId) return child;
      if (child.classList.contains("pending") || child.classList.contains("typing-row")) {
        return child;
      }
    }
    return null;
  }

  /** Show a message, or replace its bubble in place when it is already shown (an edit). */
  function upsert(message) {
    if (!message || !message.chat || message.chat.id !== app.chatId) return;
    const nearBottom = isNearBottom();
    const node = buildMessage(message);
    const old = app.nodes.get(message.message_id);
    if (old) {
      const focused = old.contains(document.activeElement) ? document.activeElement : null;
      old.replaceWith(node);
      if (focused) restoreFocus(focused, node);
    } else {
      // Our own message, seen on the stream before its POST returned: it replaces the
      // "sending" row at once rather than showing twice for a moment.
      if (!message.from_bot && app.inflight) {
        app.inflight.remove();
        app.inflight = null;
      }
      ui.messages.insertBefore(node, insertionPoint(message.message_id));
    }
    app.nodes.set(message.message_id, node);
    if (message.from_bot) updateReplyKeyboard(message);
    updateEmpty();
    if (nearBottom || (!old && !message.from_bot)) scrollToBottom();
  }

  function restoreFocus(focused, node) {
    const data = focused.dataset && focused.dataset.callbackData;
    const same = data !== undefined
      ? [...node.querySelectorAll("button")].find((b) => b.dataset.callbackData === data)
      : null;
    (same || node.querySelector(".bubble")).focus({ preventScroll: true });
  }

  function removeMessage(messageId) {
    const node = app.nodes.get(messageId);
    if (!node) return;
    if (node.contains(document.activeElement)) ui.text.focus();
    node.remove();
    app.nodes.delete(messageId);
    updateEmpty();
  }

  function updateReplyKeyboard(message) {
    const markup = message.reply_keyboard;
    if (!markup) return;
    ui.replyKeyboard.replaceChildren();
    if (!Array.isArray(markup.keyboard)) {
      ui.replyKeyboard.hidden = true;
      return;
    }
    for (const row of markup.keyboard) {
      const line = h("div", { class: "row" });
      for (const button of row) {
        const text = typeof button === "string" ? button : button.text;
        const node = h("button", { type: "button" }, text);
        node.addEventListener("click", () => {
          if (markup.one_time_keyboard) ui.replyKeyboard.hidden = true;
          sendText(text);
        });
        line.append(node);
      }
      ui.replyKeyboard.append(line);
    }
    ui.replyKeyboard.hidden = false;
  }

  /** A local row for something being sent, replaced by the real message once it exists. */
  function pendingRow(content) {
    const row = h("div", { class: "msg out pending" });
    const bubble = h("div", { class: "bubble" }, content,
      h("span", { class: "meta" }, h("span", { class: "visually-hidden" }, "sending")),
      h("div", { class: "clear" }));
    if (content instanceof HTMLImageElement) bubble.classList.add("media", "bare");
    row.append(bubble);
    ui.messages.append(row);
    updateEmpty();
    scrollToBottom();
    return row;
  }

  function errorRow(text) {
    const nearBottom = isNearBottom();
    const row = h(
      "div",
      { class: "msg out error" },
      h("div", { class: "bubble", role: "alert" }, h("span", { class: "text" }, `⚠ ${text}`)),
    );
    ui.messages.insertBefore(row, insertionPoint(Number.MAX_SAFE_INTEGER));
    updateEmpty();
    if (nearBottom) scrollToBottom();
    return row;
  }

  // ---------------------------------------------------------------- sending

  function enqueue(task) {
    app.queue = app.queue.then(task, task);
  }

  function send(fields, what, pending, onFailure) {
    const identity = currentIdentity();
    const chatId = app.chatId;
    enqueue(async () => {
      app.inflight = pending;
      const result = await postForm("/_sandbox/send", {
        user_id: identity.id,
        first_name: identity.name,
        ...fields,
      });
      app.inflight = null;
      pending.remove();
      if (app.chatId !== chatId) return;
      if (result.ok) {
        upsert(result.body.message);
      } else {
        errorRow(`${what} was not sent: ${result.body.description || "refused by the sandbox"}`);
        if (onFailure) onFailure();
      }
      updateEmpty();
    });
  }

  function sendText(text) {
    const trimmed = text.trim();
    if (!trimmed) return;
    const pending = pendingRow(h("div", { class: "text" }, text));
    send({ text }, "Your message", pending, () => {
      if (!ui.text.value) ui.text.value = text;
    });
  }

  function looksLikeImage(file) {
    return file.type.startsWith("image/") ||
      /\.(jpe?g|png|gif|webp|bmp|tiff?|heic|heif|avif)$/i.test(file.name);
  }

  /** Each file becomes its own message: a photo, or a file when asked (or not an image). */
  function sendFiles(files) {
    for (const file of files) {
      const name = file.name || "photo";
      if (file.size > app.maxUpload) {
        errorRow(`${name} was not sent: it is ${humanSize(file.size)}, more than the ` +
          `sandbox accepts (${humanSize(app.maxUpload)})`);
        continue;
      }
      const asPhoto = !ui.asFile.checked && looksLikeImage(file);
      let preview;
      let objectUrl = null;
      if (asPhoto) {
        objectUrl = URL.createObjectURL(file);
        preview = h("img", { class: "photo", src: objectUrl, alt: `Sending ${name}` });
      } else {
        preview = buildDocument({ file_name: name, mime_type: "", file_size: file.size,
          file_id: "" });
        preview.removeAttribute("href");
      }
      const pending = pendingRow(preview);
      const fields = asPhoto ? { photo: file } : { document: file, file_name: name };
      if (!asPhoto && file.type) fields.mime_type = file.type;
      send(fields, name, pending, null);
      if (objectUrl) enqueue(() => URL.revokeObjectURL(objectUrl));
    }
  }

  async function press(message, data, button) {
    const identity = currentIdentity();
    button.setAttribute("aria-busy", "true");
    const result = await postForm("/_sandbox/press", {
      user_id: identity.id,
      first_name: identity.name,
      chat_id: message.chat.id,
      message_id: message.message_id,
      data,
    });
    if (!result.ok) {
      button.removeAttribute("aria-busy");
      showToast(`The button did not work: ${result.body.description || "refused"}`);
      return;
    }
    const queryId = result.body.callback_query_id;
    if (app.answered.has(queryId)) {
      button.removeAttribute("aria-busy");
      return;
    }
    app.pressed.set(queryId, button);
    // Telegram stops the button's spinner after a while even if the bot never answers.
    setTimeout(() => {
      if (app.pressed.get(queryId) === button) {
        app.pressed.delete(queryId);
        button.removeAttribute("aria-busy");
      }
    }, 10000);
  }

  function onCallbackAnswer(event) {
    const queryId = event.callback_query_id;
    app.answered.add(queryId);
    const button = app.pressed.get(queryId);
    if (button) {
      button.removeAttribute("aria-busy");
      app.pressed.delete(queryId);
    }
    const answer = event.answer || {};
    if (answer.text) showToast(answer.text, answer.show_alert ? 8000 : 3500);
  }

  // ------------------------------------------------------------------- live

  function onEvent(event) {
    if (event.chat_id !== app.chatId) return;
    switch (event.type) {
      case "message":
        if (event.message && event.message.from_bot) stopTyping();
        upsert(event.message);
        break;
      case "edit":
        upsert(event.message);
        break;
      case "delete":
        removeMessage(event.message_id);
        break;
      case "chat_action":
        startTyping(event.action);
        break;
      case "callback_answer":
        onCallbackAnswer(event);
        break;
      default:
        break;
    }
  }

  function connect(chatId, since, generation) {
    const source = new EventSource(
      `/_sandbox/stream?chat_id=${encodeURIComponent(chatId)}&since=${since}`,
    );
    app.source = source;
    source.onopen = () => setConnected(true);
    source.onmessage = (message) => {
      if (generation !== app.generation) return;
      try {
        onEvent(JSON.parse(message.data));
      } catch (error) {
        console.error("sandbox chat page: bad event", error);
      }
    };
    source.addEventListener("reset", () => {
      if (generation === app.generation) openChat(chatId);
    });
    source.onerror = () => {
      setConnected(false);
      if (source.readyState === EventSource.CLOSED && generation === app.generation) {
        // The browser gave up (e.g. an error page instead of a stream): start over.
        setTimeout(() => {
          if (generation === app.generation) openChat(chatId);
        }, RETRY_MS);
      }
    };
  }

  /** Show the private chat of one identity: its history, then live events after it. */
  async function openChat(chatId) {
    const generation = ++app.generation;
    if (app.source) app.source.close();
    app.source = null;
    app.chatId = chatId;
    app.nodes.clear();
    stopTyping();
    for (const child of [...ui.messages.children]) {
      if (child !== ui.empty) child.remove();
    }
    ui.replyKeyboard.hidden = true;
    ui.replyKeyboard.replaceChildren();
    const identity = currentIdentity();
    ui.identity.textContent = `as ${identity.label} · user ${identity.id}`;
    ui.messages.setAttribute("aria-busy", "true");
    const history = await getJson(`/_sandbox/chats/${encodeURIComponent(chatId)}/messages`);
    if (generation !== app.generation) return;
    ui.messages.removeAttribute("aria-busy");
    let since = 0; // a chat the sandbox does not know yet: every event of it is new
    if (history.ok) {
      for (const message of history.body.messages) upsert(message);
      since = history.body.seq;
    } else if (history.status !== 404) {
      setConnected(false);
      setTimeout(() => {
        if (generation === app.generation) openChat(chatId);
      }, RETRY_MS);
      return;
    }
    updateEmpty();
    scrollToBottom();
    connect(chatId, since, generation);
  }

  // ------------------------------------------------------------------ start

  function wireInputs() {
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = ui.text.value;
      if (!text.trim()) return;
      ui.text.value = "";
      sendText(text);
    });
    ui.attach.addEventListener("click", () => ui.pick.click());
    ui.pick.addEventListener("change", () => {
      sendFiles([...ui.pick.files]);
      ui.pick.value = "";
    });
    if (window.matchMedia("(pointer: coarse)").matches) ui.cameraButton.hidden = false;
    ui.cameraButton.addEventListener("click", () => ui.camera.click());
    ui.camera.addEventListener("change", () => {
      sendFiles([...ui.camera.files]);
      ui.camera.value = "";
    });
    ui.asAdmin.addEventListener("change", () => {
      openChat(currentIdentity().id);
    });

    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    let depth = 0;
    document.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth += 1;
      ui.drop.hidden = false;
    });
    document.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) ui.drop.hidden = true;
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      ui.drop.hidden = true;
      sendFiles([...event.dataTransfer.files]);
    });
    document.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])];
      if (files.length) {
        event.preventDefault();
        sendFiles(files);
      }
    });
  }

  function applyInfo(info) {
    app.botName = (info.bot && info.bot.first_name) || app.botName;
    app.userId = info.page_user_id || app.userId;
    app.adminId = info.page_admin_id ?? null;
    app.maxUpload = info.max_upload_bytes || app.maxUpload;
    ui.botName.textContent = app.botName;
    document.title = `${app.botName} — sandbox chat`;
    if (app.adminId === null) {
      const why = "Set ADMIN_IDS to chat as the bot's admin";
      ui.asAdmin.checked = false;
      ui.asAdmin.disabled = true;
      ui.adminSwitch.classList.add("disabled");
      ui.adminSwitch.title = why;
      ui.adminHint.textContent = `${why}.`;
    } else {
      const what = `Chat as the bot's admin (user ${app.adminId}), in the admin's own chat`;
      ui.asAdmin.disabled = false;
      ui.adminSwitch.classList.remove("disabled");
      ui.adminSwitch.title = what;
      ui.adminHint.textContent = `${what}.`;
    }
  }

  async function start() {
    wireInputs();
    renderStatus();
    let info = await getJson("/_sandbox/info");
    while (!info.ok) {
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      info = await getJson("/_sandbox/info");
    }
    applyInfo(info.body);
    await openChat(currentIdentity().id);
    document.documentElement.dataset.ready = "true";
  }

  start();
})();
