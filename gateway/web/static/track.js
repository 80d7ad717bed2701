// The customer's tracking page: status in plain words, the courier's first name, the ETA, the courier on a map
// (only between pickup and delivery: the gateway sends no position otherwise), messages with the shop and,
// once delivered, a rating. Follows ./events (Server-Sent Events); writes go to ./chat and ./rating.
"use strict";
const el = FG.el, t = FG.t;
const BASE = location.pathname.replace(/\/$/, "");
const STEPS = ["created", "assigned", "packed", "picked_up", "arriving", "delivered"];
const state = {view: null, map: null, courier: null, dest: null, stars: 0};

async function post(path, body) {
  const response = await fetch(BASE + path, {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const box = document.getElementById("error");
    box.textContent = data.detail || response.statusText;
    throw new Error(box.textContent);
  }
  document.getElementById("error").textContent = "";
  return data;
}

function render(v) {
  state.view = v;
  const zone = v.shop.timezone;
  document.getElementById("status").textContent = t("s_" + v.status);
  document.getElementById("shop").textContent = t("t_from", {shop: v.shop.name});
  const eta = document.getElementById("eta");
  if (v.eta_at) {
    eta.textContent = t("t_eta", {time: FG.clock(v.eta_at, zone)}) +
      (v.eta_seconds !== null ? ` · ${t("t_eta_in", {n: Math.max(1, Math.round(v.eta_seconds / 60))})}` : "");
  } else if (v.window && v.active) {
    eta.textContent = t("t_window", {start: FG.clock(v.window.start, zone), end: FG.clock(v.window.end, zone)});
  } else {
    eta.textContent = "";
  }
  document.getElementById("courier").textContent = v.courier_name ? t("t_courier", {name: v.courier_name}) : "";
  const reached = v.status === "en_route" ? 3 : STEPS.indexOf(v.status);
  document.getElementById("steps").replaceChildren(...STEPS.map((s, i) =>
    el("li", {class: i <= reached ? "done" : "", title: t("s_" + s)})));
  document.getElementById("updated").textContent = t("t_updated", {time: FG.clock(v.updated_at, zone)});
  renderMap(v);
  renderChat(v);
  renderRating(v);
}

function renderMap(v) {
  const box = document.getElementById("map");
  const note = document.getElementById("map-later");
  const shown = v.position !== null;
  box.hidden = !shown;
  note.hidden = shown || !v.active;
  if (!shown) {
    if (state.courier) { state.courier.remove(); state.courier = null; }
    return;
  }
  if (!state.map) {
    state.map = FG.map(box, v.config);
    state.map.setView([v.position.lat, v.position.lon], 15);
  }
  const here = [v.position.lat, v.position.lon];
  if (!state.courier) {
    state.courier = L.marker(here, {icon: FG.pin("courier"), title: t("t_courier_pin"), alt: t("t_courier_pin")})
      .addTo(state.map);
  }
  state.courier.setLatLng(here);
  state.courier.getElement().dataset.lat = v.position.lat;
  if (v.destination && !state.dest) {
    state.dest = L.marker([v.destination.lat, v.destination.lon], {icon: FG.pin("dest"), title: t("t_dest")})
      .addTo(state.map);
  }
  const points = [here, ...(v.destination ? [[v.destination.lat, v.destination.lon]] : [])];
  state.map.fitBounds(L.latLngBounds(points).pad(0.4), {maxZoom: 16});
}

function renderChat(v) {
  const section = document.getElementById("chat-section");
  section.hidden = !v.chat_enabled;
  if (!v.chat_enabled) return;
  document.getElementById("chat-title").textContent = t("t_chat", {shop: v.shop.name});
  document.getElementById("chat").replaceChildren(...v.chat.map((m) => el("li", {class: m.mine ? "mine" : ""},
    el("div", {class: "who"}, `${m.mine ? t("t_you") : m.name} · ${FG.clock(m.at, v.shop.timezone)}`),
    m.text || "📷")));
}

function renderRating(v) {
  const section = document.getElementById("rate-section");
  section.hidden = !(v.can_rate || v.rated);
  document.getElementById("rate-form").hidden = !v.can_rate;
  document.getElementById("rated").textContent = v.rated ? t("t_rated") : "";
}

function setup() {
  const stars = document.getElementById("stars");
  stars.append(el("legend", {}, t("t_rate")), ...[1, 2, 3, 4, 5].flatMap((n) => [
    el("input", {type: "radio", name: "stars", id: `star${n}`, value: n, required: true}),
    el("label", {for: `star${n}`, title: t("t_stars", {n})}, "★", el("span", {class: "sr"}, t("t_stars", {n})))]));
  stars.addEventListener("change", (e) => {
    const value = Number(e.target.value);
    for (const label of stars.querySelectorAll("label")) {
      label.classList.toggle("on", Number(label.htmlFor.slice(4)) <= value);
    }
  });
  document.getElementById("comment-label").prepend(t("t_comment"));
  document.getElementById("rate-send").textContent = t("t_rate_send");
  document.getElementById("chat-send").textContent = t("send");
  document.getElementById("chat-text").setAttribute("aria-label", t("message"));
  document.getElementById("map-later").textContent = t("t_map_later");
  document.getElementById("rate-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    await post("/rating", {stars: Number(data.get("stars")), comment: data.get("comment") || null})
      .then(render).catch(() => {});
  });
  document.getElementById("chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("chat-text");
    await post("/chat", {text: input.value}).then(render).then(() => { input.value = ""; }).catch(() => {});
  });
}

setup();
FG.live(BASE + "/events", {view: render}, () => {});
