// What both pages share: their words in the shop's locale (zh-CN or en; FG.t("key", {n: 3}) fills {n}),
// safe element building, times, the map and the live stream.
"use strict";
window.FG = window.FG || {};

FG.WORDS = {
  en: {
    // shop terminal
    board: "Orders", map: "Couriers", logout: "Log out", shop: "Shop", live: "live", offline: "reconnecting…",
    col_new: "New", col_assigned: "Assigned", col_packed: "Packed", col_on_the_way: "On the way",
    col_arriving: "Arriving", col_done: "Done today", col_problems: "Problems",
    empty: "Nothing here", assign: "Assign", reassign: "Reassign", packed: "Packed", cancel: "Cancel",
    details: "Details", close: "Close", send: "Send", reason: "Reason", confirm: "Confirm",
    choose_courier: "Choose a courier", cancel_order: "Cancel order {order}", assign_order: "Assign order {order}",
    no_couriers: "No courier is registered for this shop.", courier_line: "{km} km · {load} · {online}",
    online: "online", offline_c: "offline", fix_age: "fix {age} ago", no_fix: "no fix yet", eta: "ETA {time}",
    window: "{start}–{end}", timeline: "Timeline", conversation: "Conversation", photos: "Photos",
    message: "Message", no_messages: "No messages yet.", done_ok: "Done: {what}", unchanged: "Nothing to change",
    p_exception: "exception", p_late_risk: "late risk", p_unconfirmed_change: "change not confirmed",
    p_waiting_for_courier: "waiting for a courier", p_courier_offline: "courier offline",
    new_order: "New order {order}", shop_pin: "the shop", ring: "{km} km", minutes: "{n} min", hours: "{h} h {m} min",
    seconds: "{n} s",
    // tracking page
    t_title: "Your delivery", t_from: "from {shop}", t_courier: "Your courier: {name}",
    t_eta: "Arriving around {time}", t_eta_in: "in about {n} min", t_window: "Expected {start}–{end}",
    t_map_later: "The map shows your courier once your order is on its way.",
    t_chat: "Messages with {shop}", t_rate: "How was your delivery?", t_rate_send: "Send rating",
    t_comment: "Comment (optional)", t_rated: "Thank you for your rating!", t_stars: "{n} stars",
    t_updated: "Updated {time}", t_you: "You", t_dest: "destination", t_courier_pin: "courier",
    s_created: "Order received", s_assigned: "A courier is assigned", s_packed: "Packed and ready",
    s_picked_up: "Picked up: on its way to you", s_en_route: "On its way to you", s_arriving: "Arriving now",
    s_delivered: "Delivered", s_failed: "Could not be delivered", s_cancelled: "Cancelled",
    s_exception: "Delayed: the shop is on it",
  },
  "zh-CN": {
    board: "订单", map: "骑手", logout: "退出", shop: "门店", live: "实时", offline: "正在重连…",
    col_new: "新订单", col_assigned: "已指派", col_packed: "已打包", col_on_the_way: "配送中",
    col_arriving: "即将送达", col_done: "今日完成", col_problems: "异常",
    empty: "暂无", assign: "指派", reassign: "改派", packed: "已打包", cancel: "取消",
    details: "详情", close: "关闭", send: "发送", reason: "原因", confirm: "确认",
    choose_courier: "选择骑手", cancel_order: "取消订单 {order}", assign_order: "指派订单 {order}",
    no_couriers: "本店还没有登记骑手。", courier_line: "{km} 公里 · {load} · {online}",
    online: "在线", offline_c: "离线", fix_age: "{age}前定位", no_fix: "暂无定位", eta: "预计 {time}",
    window: "{start}–{end}", timeline: "时间线", conversation: "对话", photos: "照片",
    message: "消息", no_messages: "还没有消息。", done_ok: "已完成：{what}", unchanged: "没有变化",
    p_exception: "异常", p_late_risk: "可能迟到", p_unconfirmed_change: "修改未确认",
    p_waiting_for_courier: "等待骑手", p_courier_offline: "骑手离线",
    new_order: "新订单 {order}", shop_pin: "门店", ring: "{km} 公里", minutes: "{n} 分钟", hours: "{h} 小时 {m} 分",
    seconds: "{n} 秒",
    t_title: "您的配送", t_from: "来自 {shop}", t_courier: "配送员：{name}",
    t_eta: "预计 {time} 送达", t_eta_in: "约 {n} 分钟", t_window: "预计 {start}–{end} 送达",
    t_map_later: "订单出发后，这里会显示配送员的位置。",
    t_chat: "与 {shop} 的对话", t_rate: "这次配送怎么样？", t_rate_send: "提交评价",
    t_comment: "留言（可选）", t_rated: "感谢您的评价！", t_stars: "{n} 星",
    t_updated: "更新于 {time}", t_you: "您", t_dest: "目的地", t_courier_pin: "配送员",
    s_created: "已收到订单", s_assigned: "已安排配送员", s_packed: "已打包，等待取件",
    s_picked_up: "已取件，正在送往您处", s_en_route: "正在送往您处", s_arriving: "即将到达",
    s_delivered: "已送达", s_failed: "未能送达", s_cancelled: "已取消",
    s_exception: "配送延误，门店正在处理",
  },
};

FG.locale = document.documentElement.lang === "zh-CN" ? "zh-CN" : "en";

FG.t = function (key, values) {
  const words = FG.WORDS[FG.locale] || FG.WORDS.en;
  const text = words[key] !== undefined ? words[key] : FG.WORDS.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (values && values[name] !== undefined ? values[name] : ""));
};

// Text in an element, never HTML: every value from the gateway goes through here.
FG.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

FG.clock = function (iso, zone) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString(FG.locale, {hour: "2-digit", minute: "2-digit", timeZone: zone});
};

FG.ago = function (seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return FG.t("seconds", {n: s});
  if (s < 3600) return FG.t("minutes", {n: Math.floor(s / 60)});
  return FG.t("hours", {h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60)});
};

// A map that still shows every marker without tiles (no internet): plain background, shop, distance rings.
FG.map = function (element, config) {
  const map = L.map(element, {zoomControl: true, attributionControl: Boolean(config.tile_url)});
  element.classList.add("fg-map");
  if (config.tile_url) {
    const tiles = L.tileLayer(config.tile_url, {maxZoom: 19, attribution: config.tile_attribution || ""});
    tiles.on("tileerror", (e) => { e.tile.style.visibility = "hidden"; });
    tiles.addTo(map);
  } else {
    element.classList.add("no-tiles");
  }
  return map;
};

FG.pin = function (kind) {
  return L.divIcon({
    className: "pin pin-" + kind,
    html: "<span></span>",
    iconSize: [22, 22],
    iconAnchor: [11, 11],
  });
};

FG.rings = function (map, lat, lon, kilometres) {
  for (const km of kilometres) {
    L.circle([lat, lon], {radius: km * 1000, color: "#7a8699", weight: 1, fill: false, dashArray: "4 4",
                          interactive: false}).addTo(map);
    L.marker([lat + km / 111.32, lon], {
      icon: L.divIcon({className: "ring-label", html: "", iconSize: [48, 14]}), interactive: false,
      keyboard: false,
    }).addTo(map).getElement().textContent = FG.t("ring", {km: km});
  }
};

// Server-Sent Events with a status dot: EventSource reconnects by itself; `onopen` refreshes the snapshot.
FG.live = function (url, handlers, onOpen) {
  const dot = document.getElementById("live");
  const source = new EventSource(url);
  source.onopen = () => {
    if (dot) { dot.textContent = FG.t("live"); dot.className = "live on"; }
    onOpen();
  };
  source.onerror = () => {
    if (dot) { dot.textContent = FG.t("offline"); dot.className = "live off"; }
  };
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => handler(JSON.parse(e.data)));
  }
  return source;
};
