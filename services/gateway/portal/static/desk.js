// The support desk's queue and tickets, and a reporter's own reports. Support decides who sees
// what; this page only shows it. Free text (descriptions, comments, names) is always set as text.
"use strict";
(() => {
  const { api, el, say, errorText, when } = SVPL;
  const { PROBLEMS, REPORTERS, STATES, ACTIONS } = SVPL_SUPPORT;
  const main = document.getElementById("main");
  let me = null;
  let queueNames = {};   // queue id -> name, from the routing table
  let live = null;       // the open change feed
  let onChange = null;   // what the current view does when one of its tickets changes
  const isDesk = () => me && (me.roles || []).includes("support_desk");
  const message = (id) => el("p", { id, class: "message", role: "status", "aria-live": "polite", hidden: true });
  const label = (labels, value) => labels[value] || value || "";
  const numberOf = (t) => t.number || t.ticket_id.slice(0, 8);
  // Support's refusals that a desk member meets, in Swedish (by the problem's reason).
  const REFUSALS = {
    NOT_YOUR_QUEUE: "Ärendet ligger inte i en kö som du arbetar med.",
    NO_ESCALATION: "Den här kön lämnar inte ärenden vidare: hantera och stäng ärendet här.",
    INVALID_TRANSITION: "Ärendet kan inte få det läget nu.",
    TICKET_CLOSED: "Ärendet är stängt.",
  };
  const problemText = (err) => REFUSALS[err && err.reason] || errorText(err);

  function view(title, ...children) {
    const heading = el("h1", { tabindex: "-1" }, title);
    main.replaceChildren(heading, ...children);
    heading.focus({ preventScroll: true });
    document.title = title + " – Digitala SIP-möten";
  }

  // A live update of the view one is on: what the person is typing, and where, stays as it was.
  function refresh(title, ...children) {
    const typed = [...main.querySelectorAll("input, textarea, select")].filter(e => e.id)
      .map(e => [e.id, e.type === "checkbox" ? e.checked : e.value]);
    const focused = document.activeElement && document.activeElement.id;
    const scrollY = window.scrollY;
    main.replaceChildren(el("h1", { tabindex: "-1" }, title), ...children);
    for (const [id, value] of typed) {
      const e = document.getElementById(id);
      if (!e) continue;
      if (e.type === "checkbox") e.checked = value; else e.value = value;
    }
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus({ preventScroll: true });
    window.scrollTo(0, scrollY);
  }

  // ------------------------------------------------------------------ live changes
  function follow() {
    if (live) return;
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/desk/events");
    live = ws;
    let retry = 500;
    ws.addEventListener("message", (e) => {
      const event = JSON.parse(e.data);
      const status = document.getElementById("live-status");
      if (event.error) { if (status) status.textContent = event.error.detail; return; }
      retry = 500;
      if (status) { status.textContent = "Kön uppdateras direkt."; status.dataset.live = "yes"; }
      if (onChange && event.kind === "TICKET_EVENT_KIND_CHANGED") onChange(event);
    });
    ws.addEventListener("close", (e) => {
      live = null;
      const status = document.getElementById("live-status");
      if (status) { status.textContent = "Direktuppdateringen är bruten: försöker igen …"; status.dataset.live = "no"; }
      if (e.code === 4401) { location.href = "/"; return; }
      if (e.code < 4000) setTimeout(follow, retry = Math.min(10000, retry * 2));
    });
  }

  // ------------------------------------------------------------------ the queue
  function select(id, text, labels, chosen) {
    return [el("label", { for: id }, text), el("select", { id },
      el("option", { value: "" }, "Alla"),
      ...Object.entries(labels).map(([v, l]) => el("option", { value: v, selected: v === chosen }, l)))];
  }

  async function queueView(query) {
    const msg = message("queue-message");
    const filters = el("form", { id: "queue-filters", class: "filters card" },
      el("div", {}, ...select("filter-state", "Läge", STATES, query.get("state") || "")),
      el("div", {}, ...select("filter-problem", "Problem", PROBLEMS, query.get("problem") || "")),
      el("div", {}, el("label", { for: "filter-order" }, "Ordning"), el("select", { id: "filter-order" },
        el("option", { value: "newest", selected: query.get("order") !== "oldest" }, "Nyast först"),
        el("option", { value: "oldest", selected: query.get("order") === "oldest" }, "Äldst först"))),
      el("div", {}, el("label", { for: "filter-number" }, "Ärendenummer"),
        el("input", { id: "filter-number", value: query.get("number") || "", maxlength: 20 })),
      el("div", {}, el("button", { type: "submit" }, "Visa")));
    const table = el("table", { id: "tickets" }, el("thead", {}, el("tr", {},
      ...["Nummer", "Inkom", "Problem", "Anmälare", "Organisation", "Kö", "Läge", "Handläggare", ""].map(h =>
        el("th", { scope: "col" }, h)))), el("tbody"));
    view("Ärendekö", el("p", { id: "live-status", role: "status" }, "Ansluter …"), filters, msg, table);
    filters.addEventListener("submit", (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [key, id] of [["state", "filter-state"], ["problem", "filter-problem"], ["order", "filter-order"], ["number", "filter-number"]]) {
        const value = document.getElementById(id).value.trim();
        if (value && !(key === "order" && value === "newest")) q.set(key, value);
      }
      location.hash = "#/queue" + (q.toString() ? "?" + q : "");
    });
    const load = async () => {
      const q = new URLSearchParams();
      for (const key of ["state", "problem", "order", "number"]) if (query.get(key)) q.set(key, query.get(key));
      try {
        const { tickets } = await api("GET", "/desk/tickets" + (q.toString() ? "?" + q : ""));
        const body = table.querySelector("tbody");
        body.replaceChildren(...(tickets || []).map(t => el("tr", { "data-ticket": t.ticket_id, "data-state": t.state },
          el("td", { class: "number-cell" }, numberOf(t)), el("td", {}, when(t.created_at)),
          el("td", {}, label(PROBLEMS, t.problem)), el("td", {}, (t.reporter && t.reporter.name) || ""),
          el("td", {}, (t.reporter && t.reporter.organization) || ""),
          el("td", {}, (t.routing && t.routing.queue && t.routing.queue.name) || ""),
          el("td", { class: "state" }, label(STATES, t.state)),
          el("td", { class: "assignee" }, t.assignee_name || t.assignee || ""),
          el("td", {}, el("a", { href: "#/ticket/" + t.ticket_id }, "Öppna")))));
        if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 9 }, "Inga ärenden.")));
        table.dataset.loaded = String(Number(table.dataset.loaded || 0) + 1);  // read by tests
      } catch (err) { say(msg, problemText(err), "error"); }
    };
    onChange = () => load();
    follow();
    await load();
  }

  // ------------------------------------------------------------------ one ticket
  function evidenceOf(ev) {
    if (!ev || !(ev.meeting_id || ev.note)) return el("p", {}, "Inget underlag från ett möte.");
    const rows = (ev.quality || []).map(q => el("tr", {},
      el("td", {}, q.participant_id), el("td", {}, String(Math.round(q.round_trip_ms || 0)) + " ms"),
      el("td", {}, String(Math.round(100 * (q.packet_loss || 0))) + " %"), el("td", {}, String(Math.round(q.jitter_ms || 0)) + " ms"),
      el("td", {}, String(Math.round(q.inbound_bitrate_kbps || 0)) + " / " + String(Math.round(q.outbound_bitrate_kbps || 0)) + " kbit/s"),
      el("td", {}, (q.warnings || []).join("; "))));
    return el("div", { id: "evidence" },
      el("dl", {}, el("dt", {}, "Möte"), el("dd", {}, ev.meeting_id || ""),
        el("dt", {}, "Mötets läge"), el("dd", { id: "evidence-state" }, SVPL.MEETING_STATES[ev.meeting_state] || "okänt"),
        el("dt", {}, "Registrerade / anslutna"), el("dd", { id: "evidence-counts" }, String(ev.registered_count || 0) + " / " + String(ev.connected_count || 0)),
        el("dt", {}, "Hämtat"), el("dd", {}, when(ev.captured_at))),
      rows.length ? el("table", { id: "evidence-quality" }, el("thead", {}, el("tr", {},
        ...["Anslutning", "Svarstid", "Paketförlust", "Jitter", "Bithastighet in / ut", "Varningar"].map(h => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows)) : "",
      ev.note ? el("p", { class: "warning" }, ev.note) : "");
  }

  function historyOf(t) {
    return el("ol", { id: "history", class: "plain history" }, ...(t.history || []).map(h => el("li", {
      class: h.internal ? "internal" : "", "data-action": h.action },
      el("div", {}, el("strong", {}, label(ACTIONS, h.action)), " – ", when(h.at), " – ", h.actor_name || h.actor || "",
        STATES[h.to_state] ? " – " + STATES[h.to_state] : "", h.action === "escalated" ? " – till " + (queueNames[h.to_queue] || h.to_queue) : "",
        h.internal ? " (intern anteckning)" : ""),
      h.text && h.action !== "assigned" ? el("div", { class: "free-text" }, h.text) : "")));
  }

  function deskActions(t, reload) {
    const msg = message("action-message");
    const act = async (method, path, body, done, field) => {
      try {
        await api(method, "/desk/tickets/" + t.ticket_id + path, body);
        if (field) document.getElementById(field).value = "";  // sent: the field starts empty again
        await reload(done);
      } catch (err) { say(msg, problemText(err), "error"); }
    };
    const value = (id) => document.getElementById(id).value.trim();
    const box = el("section", { id: "desk-actions", class: "card", "aria-labelledby": "actions-h" },
      el("h2", { id: "actions-h" }, "Hantera ärendet"), msg);
    if (t.state === "TICKET_STATE_CLOSED") { box.append(el("p", {}, "Ärendet är stängt.")); return box; }
    const mine = t.assignee && t.assignee === me.id;
    box.append(
      el("p", {}, mine ? "Du har ärendet." : t.assignee ? el("span", { class: "taken" }, "Taget av " + (t.assignee_name || t.assignee)) : "",
        " ", el("button", { type: "button", id: "take", onclick: () => act("POST", "/take", undefined, "Du har tagit ärendet.") },
          mine ? "Ta igen" : "Ta ärendet")),
      el("form", { id: "comment-form", onsubmit: (e) => { e.preventDefault();
        act("POST", "/comments", { text: value("comment-text"), internal: document.getElementById("comment-internal").checked }, "Kommentaren är sparad.", "comment-text"); } },
        el("label", { for: "comment-text" }, "Kommentar"), el("textarea", { id: "comment-text", rows: 3, maxlength: 4000 }),
        el("label", {}, el("input", { type: "checkbox", id: "comment-internal" }), " Intern anteckning (syns inte för anmälaren)"),
        el("p", {}, el("button", { type: "submit", id: "comment-submit" }, "Spara kommentar"))),
      el("form", { id: "state-form", onsubmit: (e) => { e.preventDefault();
        act("POST", "/state", { state: value("state-select"), note: value("state-note") }, "Läget är ändrat.", "state-note"); } },
        el("label", { for: "state-select" }, "Ändra läge"), el("select", { id: "state-select" },
          el("option", { value: "TICKET_STATE_WAITING" }, "Väntar"), el("option", { value: "TICKET_STATE_RESOLVED" }, "Löst")),
        el("label", { for: "state-note" }, "Anteckning"), el("input", { id: "state-note", maxlength: 4000 }),
        el("p", {}, el("button", { type: "submit", class: "secondary" }, "Ändra läge"))),
      el("form", { id: "escalate-form", onsubmit: (e) => { e.preventDefault();
        act("POST", "/escalation", { reason: value("escalate-reason") }, "Ärendet är eskalerat.", "escalate-reason"); } },
        el("label", { for: "escalate-reason" }, "Eskalera till nästa kö – varför är det inte vårt fel?"),
        el("textarea", { id: "escalate-reason", rows: 2, maxlength: 4000 }),
        el("p", {}, el("button", { type: "submit", id: "escalate-submit", class: "secondary" }, "Eskalera"))),
      el("form", { id: "close-form", onsubmit: (e) => { e.preventDefault();
        act("POST", "/close", { resolution: value("close-resolution") }, "Du har stängt ärendet.", "close-resolution"); } },
        el("label", { for: "close-resolution" }, "Stäng med lösning"), el("textarea", { id: "close-resolution", rows: 2, maxlength: 4000 }),
        el("p", {}, el("button", { type: "submit", id: "close-submit" }, "Stäng ärendet"))));
    return box;
  }

  async function ticketView(id) {
    const msg = message("ticket-message");
    view("Ärende", msg);
    let shown = false;
    const load = async (done) => {
      let t;
      try { ({ ticket: t } = await api("GET", "/desk/tickets/" + encodeURIComponent(id))); }
      catch (err) { say(msg, problemText(err), "error"); return; }
      const r = t.reporter || {};
      const queue = (t.routing && t.routing.queue) || {};
      const worksIt = isDesk();  // support refuses what this desk member may not do, and says why
      (shown ? refresh : view)("Ärende " + numberOf(t), msg,
        el("dl", { id: "ticket", class: "card", "data-state": t.state },
          el("dt", {}, "Ärendenummer"), el("dd", { id: "ticket-number", class: "number" }, numberOf(t)),
          el("dt", {}, "Läge"), el("dd", { id: "ticket-state", class: "state" }, label(STATES, t.state)),
          el("dt", {}, "Kö"), el("dd", { id: "ticket-queue" }, queue.name || "", queue.contact_text ? " – " + queue.contact_text : ""),
          el("dt", {}, "Handläggare"), el("dd", { id: "ticket-assignee" }, t.assignee_name || t.assignee || "ingen ännu"),
          el("dt", {}, "Problem"), el("dd", {}, label(PROBLEMS, t.problem)),
          el("dt", {}, "Beskrivning"), el("dd", { id: "ticket-description", class: "free-text" }, t.description || ""),
          el("dt", {}, "Anmälare"), el("dd", { id: "ticket-reporter" }, r.name || "", r.kind ? " (" + label(REPORTERS, r.kind) + ")" : "",
            r.organization ? ", " + r.organization : "", r.contact ? " – nås på " + r.contact : "",
            t.public_report ? el("div", { class: "warning" }, "Anmäld utan inloggning: uppgifterna är inte kontrollerade.") : ""),
          t.dial_in_code ? el("dt", {}, "Uppgivet mötes-ID") : "", t.dial_in_code ? el("dd", {}, t.dial_in_code) : "",
          el("dt", {}, "Inkom"), el("dd", {}, when(t.created_at))),
        el("section", { class: "card", "aria-labelledby": "evidence-h" }, el("h2", { id: "evidence-h" }, "Underlag från mötet"), evidenceOf(t.evidence)),
        el("section", { class: "card", "aria-labelledby": "history-h" }, el("h2", { id: "history-h" }, "Historik"), historyOf(t)),
        worksIt ? deskActions(t, load) : reporterComment(t, load),
        el("p", {}, el("a", { href: isDesk() ? "#/queue" : "#/mine" }, isDesk() ? "Tillbaka till kön" : "Tillbaka till mina felanmälningar")),
        el("p", { id: "live-status", role: "status", class: "sr-only" }, ""));
      shown = true;
      if (typeof done === "string") say("action-message", done, "ok");
      main.dataset.ticketLoaded = String(Number(main.dataset.ticketLoaded || 0) + 1);  // read by tests
    };
    onChange = (event) => { if (event.ticket_id === id) load(); };  // a live update: nothing typed is lost
    follow();
    await load();
  }

  function reporterComment(t, reload) {
    const msg = message("comment-message");
    if (t.state === "TICKET_STATE_CLOSED") return el("p", {}, "Ärendet är stängt.");
    return el("form", { id: "reporter-comment", class: "card", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api("POST", "/desk/tickets/" + t.ticket_id + "/comments", { text: document.getElementById("reporter-text").value.trim() });
        document.getElementById("reporter-text").value = "";
        await reload();
      } catch (err) { say(msg, errorText(err), "error"); }
    } }, msg, el("label", { for: "reporter-text" }, "Lägg till något till supporten"),
      el("textarea", { id: "reporter-text", rows: 3, maxlength: 4000 }), el("p", {}, el("button", { type: "submit" }, "Skicka")));
  }

  // ------------------------------------------------------------------ my own reports
  async function mineView() {
    const msg = message("mine-message");
    const list = el("ul", { id: "my-reports", class: "plain" });
    view("Mina felanmälningar", el("p", {}, el("a", { href: "/portal/#/report" }, "Rapportera ett nytt problem")), msg, list);
    const load = async () => {
      try {
        const { tickets } = await api("GET", "/support/my-reports");
        list.replaceChildren(...(tickets || []).map(t => {
          const queue = (t.routing && t.routing.queue) || {};
          const comments = (t.history || []).filter(h => h.action === "commented");
          return el("li", { class: "card", "data-ticket": t.ticket_id, "data-state": t.state },
            el("h2", {}, el("a", { href: "#/ticket/" + t.ticket_id }, "Ärende " + numberOf(t)), " – ",
              el("span", { class: "state" }, label(STATES, t.state))),
            el("p", {}, label(PROBLEMS, t.problem), " – ", when(t.created_at)),
            el("p", { class: "free-text" }, t.description || ""),
            el("p", {}, "Hos: ", queue.name || "", queue.contact_text ? " – " + queue.contact_text : ""),
            comments.length ? el("ul", { class: "plain history" }, ...comments.map(h =>
              el("li", {}, el("strong", {}, h.actor_name || "Supporten"), " (", when(h.at), "): ", el("span", { class: "free-text" }, h.text)))) : "");
        }));
        if (!list.children.length) list.append(el("li", {}, "Du har inga felanmälningar."));
      } catch (err) { say(msg, errorText(err), "error"); }
    };
    onChange = () => load();
    follow();
    await load();
  }

  // ------------------------------------------------------------------ routing
  function route() {
    const [path, q] = (location.hash.slice(1) || "/").split("?");
    const query = new URLSearchParams(q || "");
    const parts = path.split("/").filter(Boolean);
    onChange = null;
    if (parts[0] === "ticket" && parts[1]) return ticketView(parts[1]);
    if (parts[0] === "mine") return mineView();
    if (isDesk()) return queueView(query);
    return mineView();
  }

  (async () => {
    try { me = await api("GET", "/session"); }
    catch (err) { location.href = "/"; return; }
    SVPL.onUnauthenticated = () => { location.href = "/"; };
    document.getElementById("whoami").textContent = me.name;
    document.getElementById("nav-queue").hidden = !isDesk();
    try {
      const table = await api("GET", "/support/routing");
      queueNames = Object.fromEntries((table.queues || []).map(q => [q.queue_id, q.name]));
    } catch (err) { /* the ids are shown instead */ }
    document.getElementById("logout").addEventListener("click", async () => {
      try { await api("POST", "/auth/logout"); } finally { location.href = "/"; }
    });
    window.addEventListener("hashchange", route);
    route();
  })();
})();
