// The shop terminal: the live order board, the couriers' map, actions, an order's details and conversation.
// Every action is the ShopCommand an MQTT terminal would publish, sent to /api/v1 with the session cookie and
// the page's CSRF token; the board follows /shop/api/events (Server-Sent Events).
"use strict";
const el = FG.el, t = FG.t;
const page = document.body.dataset;
const SHOP = page.shop;
const CSRF = document.querySelector("meta[name=csrf]").content;
const COLUMNS = ["new", "assigned", "packed", "on_the_way", "arriving", "done", "problems"];
const FLASH_MS = 1500;
const state = {shop: null, cards: new Map(), flashing: new Map(), couriers: new Map(), markers: new Map(),
               dests: new Map(), map: null, detail: null};

// ------------------------------------------------------------------ talking to the gateway

async function api(method, path, body) {
  const response = await fetch(path, {
    method, credentials: "same-origin",
    headers: {"Accept": "application/json", "X-CSRF-Token": CSRF,
              ...(body === undefined ? {} : {"Content-Type": "application/json"})},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { location.href = "/shop/login"; throw new Error("signed out"); }
  if (!response.ok) {
    toast(data.detail || response.statusText, data.hint, true);
    throw new Error(data.detail || response.statusText);
  }
  return data;
}

function toast(text, hint, error) {
  const node = el("div", {class: "toast" + (error ? " error" : ""), role: error ? "alert" : "status"}, text,
                  hint ? el("small", {}, hint) : null);
  const box = document.getElementById("toasts");
  box.append(node);
  while (box.children.length > 3) box.firstChild.remove();
  setTimeout(() => node.remove(), error ? 9000 : 4000);
}

async function command(orderId, body, what) {
  const done = await api("POST", `/api/v1/orders/${encodeURIComponent(orderId)}/commands`,
                         {order_id: orderId, ...body});
  toast(done.result === "done" ? t("done_ok", {what: `${what} ${orderId}`}) : t("unchanged"));
}

// ------------------------------------------------------------------ the board

function card(c) {
  const zone = state.shop.timezone;
  const problem = c.problems.length > 0;
  const flashing = (state.flashing.get(c.order_id) || 0) > Date.now();
  const node = el("article", {class: "card" + (problem ? " problem" : "") + (flashing ? " flash" : ""),
                              "data-order": c.order_id, tabindex: 0, "aria-label": `${c.order_id} ${c.recipient}`},
    el("header", {}, el("span", {}, c.order_id), el("span", {class: "since", "data-since": c.status_since}, "")),
    el("div", {class: "line"}, `${c.recipient} · ${c.address}`),
    el("div", {class: "meta"},
       c.window ? t("window", {start: FG.clock(c.window.start, zone), end: FG.clock(c.window.end, zone)}) : null,
       c.courier_name || c.courier_id ? ` · ${c.courier_name || c.courier_id}` : null,
       c.eta_at ? ` · ${t("eta", {time: FG.clock(c.eta_at, zone)})}` : null),
    c.problems.length ? el("div", {class: "badges"}, c.problems.map(
      (p) => el("span", {class: "badge" + (p === "late_risk" || p === "unconfirmed_change" ? " warn" : ""),
                         "data-problem": p}, t("p_" + p)))) : null,
    c.reason ? el("div", {class: "meta"}, c.reason) : null,
    el("div", {class: "actions"}, c.actions.map((a) => el("button", {
      class: a === "cancel" ? "danger" : a === "packed" ? "" : "quiet", "data-action": a,
      onclick: (e) => { e.stopPropagation(); act(a, c); },
    }, t(a))), el("button", {class: "quiet", "data-action": "details", onclick: (e) => {
      e.stopPropagation(); details(c.order_id);
    }}, t("details"))));
  node.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === node) details(c.order_id); });
  return node;
}

function renderBoard() {
  const board = document.getElementById("board");
  const byColumn = Object.fromEntries(COLUMNS.map((name) => [name, []]));
  for (const c of state.cards.values()) byColumn[c.column].push(c);
  board.replaceChildren(...COLUMNS.map((name) => {
    const cards = byColumn[name].sort((a, b) => a.status_since.localeCompare(b.status_since));
    return el("section", {class: "column " + name, "data-column": name, "aria-label": t("col_" + name)},
      el("h2", {}, el("span", {}, t("col_" + name)), el("span", {class: "count"}, cards.length)),
      cards.length ? cards.map(card) : el("div", {class: "empty"}, t("empty")));
  }));
  tick();
}

function upsertCard(c) {
  const before = state.cards.get(c.order_id);
  state.cards.set(c.order_id, c);
  if (!before) toast(t("new_order", {order: c.order_id}));
  state.flashing.set(c.order_id, Date.now() + FLASH_MS);  // kept through re-renders until it fades
  renderBoard();
  setTimeout(() => {
    if ((state.flashing.get(c.order_id) || 0) <= Date.now()) {
      state.flashing.delete(c.order_id);
      const node = document.querySelector(`.card[data-order="${CSS.escape(c.order_id)}"]`);
      if (node) node.classList.remove("flash");
    }
  }, FLASH_MS);
  placeDestination(c);
  if (state.detail === c.order_id) details(c.order_id, true);
}

function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll("[data-since]")) {
    node.textContent = FG.ago((now - Date.parse(node.dataset.since)) / 1000);
  }
  for (const node of document.querySelectorAll("[data-fix]")) {
    const tst = Number(node.dataset.fix);
    node.textContent = tst ? t("fix_age", {age: FG.ago(now / 1000 - tst)}) : t("no_fix");
  }
}

// ------------------------------------------------------------------ actions

function act(action, c) {
  if (action === "packed") return command(c.order_id, {command: "packed"}, t("packed")).catch(() => {});
  if (action === "cancel") return cancelDialog(c);
  return assignDialog(c);
}

function dialog(title, body, onConfirm) {
  const box = document.getElementById("dialog");
  const form = el("form", {method: "dialog"}, el("h2", {id: "dialog-title"}, title), body,
    el("div", {class: "buttons"},
       el("button", {type: "button", class: "quiet", onclick: () => box.close()}, t("close")),
       el("button", {type: "submit", value: "ok"}, t("confirm"))));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await onConfirm(new FormData(form)); box.close(); } catch (_) { /* the toast says why */ }
  });
  box.setAttribute("aria-labelledby", "dialog-title");
  box.replaceChildren(form);
  box.showModal();
  const first = form.querySelector("input, textarea");
  if (first) first.focus();
}

function assignDialog(c) {
  const couriers = [...state.couriers.values()].sort((a, b) => (a.distance_m ?? 1e12) - (b.distance_m ?? 1e12));
  const choices = couriers.length ? couriers.map((k, i) => el("label", {class: "choice"},
    el("input", {type: "radio", name: "courier", value: k.courier_id, required: true,
                 checked: i === 0 && k.courier_id !== c.courier_id}),
    el("span", {}, el("b", {}, k.name || k.courier_id), el("div", {class: "sub"}, t("courier_line", {
      km: k.distance_m === null ? "?" : (k.distance_m / 1000).toFixed(1),
      load: `${k.load}/${k.max_active}`, online: k.online ? t("online") : t("offline_c")}))))) :
    el("p", {}, t("no_couriers"));
  dialog(t("assign_order", {order: c.order_id}), el("fieldset", {class: "choices"},
    el("legend", {}, t("choose_courier")), choices), (data) =>
    command(c.order_id, {command: "assign", courier_id: data.get("courier")}, t("assign")));
}

function cancelDialog(c) {
  dialog(t("cancel_order", {order: c.order_id}),
    el("label", {}, t("reason"), el("textarea", {name: "reason", required: true, rows: 2, maxlength: 500})),
    (data) => command(c.order_id, {command: "cancel", reason: data.get("reason")}, t("cancel")));
}

// ------------------------------------------------------------------ an order's details and conversation

async function details(orderId, refresh) {
  const box = document.getElementById("detail");
  const [detail, chat] = await Promise.all([
    api("GET", `/api/v1/orders/${encodeURIComponent(orderId)}`),
    api("GET", `/api/v1/orders/${encodeURIComponent(orderId)}/chat`),
  ]);
  state.detail = orderId;
  const zone = state.shop.timezone;
  const photos = detail.timeline.filter((e) => e.media_id);
  const input = el("input", {type: "text", name: "text", "aria-label": t("message"), maxlength: 2000,
                             placeholder: t("message"), required: true});
  const form = el("form", {class: "chat-form"}, input, el("button", {type: "submit"}, t("send")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const msgId = `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;  // a retry: stored once
    await api("POST", `/api/v1/orders/${encodeURIComponent(orderId)}/chat`, {msg_id: msgId, text: input.value})
      .catch(() => {});
    input.value = "";
  });
  box.replaceChildren(el("div", {},
    el("h2", {id: "detail-title"}, `${orderId} · ${detail.order.recipient.name}`),
    el("p", {class: "sub"}, detail.order.address.text, " · ", detail.order.items.map((i) => `${i.qty}× ${i.name}`)
      .join(", ")),
    el("h3", {}, t("timeline")),
    el("ol", {class: "timeline"}, detail.timeline.map((e) => el("li", {},
      `${FG.clock(e.at, zone)} ${e.kind} (${e.status})`, e.reason ? ` — ${e.reason}` : ""))),
    photos.length ? [el("h3", {}, t("photos")), el("div", {class: "photos"}, photos.map((e) =>
      el("a", {href: `/api/v1/media/${e.media_id}`, target: "_blank"},
         el("img", {src: `/api/v1/media/${e.media_id}`, alt: `${e.reason || "photo"} ${e.media_id}`}))))] : null,
    el("h3", {}, t("conversation")),
    el("ul", {class: "chat", "aria-live": "polite"}, chat.messages.length ? chat.messages.map((m) =>
      el("li", {class: m.from.role === "shop" ? "mine" : ""}, el("div", {class: "who"},
        `${m.from.name || m.from.id} · ${FG.clock(m.at, zone)}`), m.text || (m.media_id ? "📷" : ""))) :
      el("li", {}, t("no_messages"))),
    page.role === "shop" ? form : null,
    el("div", {class: "buttons"}, el("button", {class: "quiet", onclick: () => { state.detail = null; box.close(); }},
                                     t("close")))));
  box.setAttribute("aria-labelledby", "detail-title");
  if (!box.open) box.showModal();
  if (!refresh) input.focus();
}

// ------------------------------------------------------------------ the map and the couriers

function placeDestination(c) {
  const old = state.dests.get(c.order_id);
  if (old) old.remove();
  state.dests.delete(c.order_id);
  if (c.lat === null || c.column === "done") return;
  const marker = L.marker([c.lat, c.lon], {icon: FG.pin("dest"), title: `${c.order_id} ${c.address}`, alt: c.order_id})
    .bindTooltip(c.order_id).addTo(state.map);
  marker.getElement().dataset.order = c.order_id;
  state.dests.set(c.order_id, marker);
}

function upsertCourier(k) {
  state.couriers.set(k.courier_id, k);
  let marker = state.markers.get(k.courier_id);
  if (k.lat !== null) {
    if (!marker) {
      marker = L.marker([k.lat, k.lon], {icon: FG.pin("courier"), title: k.name || k.courier_id, keyboard: true})
        .bindTooltip(k.name || k.courier_id).addTo(state.map);
      state.markers.set(k.courier_id, marker);
    }
    marker.setLatLng([k.lat, k.lon]);
    const node = marker.getElement();
    node.dataset.courier = k.courier_id;
    node.dataset.lat = k.lat;
    node.dataset.lon = k.lon;
    node.classList.toggle("off", !k.online);
  }
  const list = document.getElementById("couriers");
  list.replaceChildren(...[...state.couriers.values()].map((c) => el("li", {"data-courier": c.courier_id},
    el("span", {}, el("span", {class: "dot" + (c.online ? " on" : ""), "aria-hidden": "true"}),
       `${c.name || c.courier_id} (${c.load}/${c.max_active})`, el("span", {class: "sr"},
       c.online ? t("online") : t("offline_c"))),
    el("span", {class: "sub", "data-fix": c.tst || 0}, ""))));
  tick();
}

async function load() {
  const board = await api("GET", `/shop/api/board?shop=${encodeURIComponent(SHOP)}`);
  state.shop = board.shop;
  if (!state.map) {
    state.map = FG.map(document.getElementById("map"), board.config);
    state.map.setView([board.shop.lat, board.shop.lon], 13);
    const shopPin = L.marker([board.shop.lat, board.shop.lon], {icon: FG.pin("shop"), title: board.shop.name})
      .bindTooltip(board.shop.name).addTo(state.map);
    shopPin.getElement().dataset.shop = board.shop.shop_id;
    FG.rings(state.map, board.shop.lat, board.shop.lon, [1, 2, 3]);
  }
  state.cards = new Map(board.cards.map((c) => [c.order_id, c]));
  for (const c of board.cards) placeDestination(c);
  for (const k of board.couriers) upsertCourier(k);
  renderBoard();
}

FG.live(`/shop/api/events?shop=${encodeURIComponent(SHOP)}`, {
  card: upsertCard,
  courier: upsertCourier,
  chat: (m) => { if (state.detail === m.order_id) details(m.order_id, true); },
}, () => load().catch((e) => console.error(e)));
setInterval(tick, 1000);
