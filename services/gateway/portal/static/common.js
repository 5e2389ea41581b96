// Shared by the portal's pages: API calls with the CSRF header, problem-details errors, small DOM helpers.
"use strict";
const SVPL = (() => {
  function cookie(name) {
    const m = document.cookie.split(";").map(c => c.trim()).find(c => c.startsWith(name + "="));
    return m ? decodeURIComponent(m.slice(name.length + 1)) : "";
  }
  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || ("HTTP " + status));
      this.status = status;
      this.problem = problem;
      this.reason = problem.reason || "";
    }
  }
  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("svpl_csrf");
    const res = await fetch("/api/v1" + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = {};
    try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { detail: text }; }
    if (res.status === 401 && path !== "/session" && SVPL.onUnauthenticated) SVPL.onUnauthenticated();
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function say(target, text, kind) {
    const node = typeof target === "string" ? document.getElementById(target) : target;
    node.textContent = text;
    node.className = "message " + (kind || "info");
    node.hidden = !text;
  }
  function errorText(err) {
    if (err instanceof ApiError) {
      const fields = (err.problem.errors || []).map(e => e.field + ": " + e.detail).join("; ");
      return err.message + (fields && !err.message.includes(fields) ? " (" + fields + ")" : "");
    }
    return "Något gick fel: " + (err && err.message ? err.message : err);
  }
  const swedishTime = new Intl.DateTimeFormat("sv-SE", {
    timeZone: "Europe/Stockholm", dateStyle: "medium", timeStyle: "short" });
  function when(iso) { return iso ? swedishTime.format(new Date(iso)) : ""; }
  const REGION = (location.pathname.match(/^\/auth\/([a-z0-9-]+)\//) || [])[1] || document.body.dataset.region || "rjl";
  // Set by a page: what to do when the session has ended (e.g. go to the login page).
  return { api, ApiError, el, say, errorText, when, cookie, REGION, onUnauthenticated: null };
})();
