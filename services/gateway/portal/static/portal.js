// The meeting portal: meeting list, booking, participant registration, invitation status,
// the meeting room (video grid, connected people, coordinator's roster and agenda), test room, fault reports.
"use strict";
(() => {
  const { api, allPages, el, say, errorText, when } = SVPL;
  const main = document.getElementById("main");
  let me = null;
  let room = null;  // the meeting the person is in: { id, pc, ws, stream, participantId, ... }

  const STATES = SVPL.MEETING_STATES;
  const FINAL = ["MEETING_STATE_ENDED", "MEETING_STATE_ABORTED", "MEETING_STATE_CANCELLED"];
  const ROLES = { PARTICIPANT_ROLE_COORDINATOR: "Samordnare", PARTICIPANT_ROLE_REGION_STAFF: "Regionpersonal",
    PARTICIPANT_ROLE_MUNICIPALITY_STAFF: "Kommunpersonal", PARTICIPANT_ROLE_EXTERNAL: "Extern deltagare",
    PARTICIPANT_ROLE_PATIENT: "Den enskilde", PARTICIPANT_ROLE_NEXT_OF_KIN: "Närstående" };
  // A next of kin's invitation in their 1177 inbox, as the coordinator sees it.
  const INBOX = { INBOX_NOTICE_PENDING: "meddelande till 1177-inkorgen på väg",
    INBOX_NOTICE_DELIVERED: "meddelande lämnat i 1177-inkorgen",
    INBOX_NOTICE_NOT_DELIVERED: "EJ aviserad: meddelandet till 1177-inkorgen kunde inte lämnas. Ring (se dina telefonuppgifter)." };
  const STEPS = { AGENDA_STEP_NOT_STARTED: "Inte påbörjat", AGENDA_STEP_SEE_AND_HEAR: "Ser och hör alla varandra?",
    AGENDA_STEP_PRIVATE_AND_NOT_RECORDED: "Ingen annan ser eller hör mötet, och det spelas inte in",
    AGENDA_STEP_WELCOME: "Alla hälsas välkomna",
    AGENDA_STEP_PURPOSE_AND_CONFIDENTIALITY: "Syfte, tystnadsplikt och sekretess",
    AGENDA_STEP_INDIVIDUAL_ON_REASON: "Den enskilde berättar varför mötet hålls",
    AGENDA_STEP_INTRODUCTIONS: "Presentation (den enskilde och närstående först)",
    AGENDA_STEP_QUESTIONS: "Frågor", AGENDA_STEP_SUMMARY: "Sammanfattning av överenskommelser", AGENDA_STEP_DONE: "Klart" };
  const INVITATIONS = { INVITATION_STATE_INVITED: "Skickas", INVITATION_STATE_DELIVERED: "Levererad",
    INVITATION_STATE_CONFIRMED: "Bekräftad", INVITATION_STATE_PHONE_TASK: "Ring upp (telefonuppgift)" };
  const PROBLEMS = SVPL_SUPPORT.PROBLEMS;

  const isCoordinator = () => me && me.roles.includes("coordinator");
  const leadsMeeting = m => me && (m.coordinator_hsa_id === me.id || (m.delegated_coordinator_hsa_ids || []).includes(me.id));

  function view(title, ...children) {
    const heading = el("h1", { tabindex: "-1" }, title);
    main.replaceChildren(heading, ...children);
    heading.focus({ preventScroll: true });  // a screen reader announces the new view
    syncTopbar();
    document.title = title + " – Digitala SIP-möten";
  }
  const message = (id) => el("p", { id, class: "message", role: "status", "aria-live": "polite", hidden: true });

  // ------------------------------------------------------------------ meeting list
  async function meetingsView() {
    const msg = message("list-message");
    const table = el("table", { id: "meetings" }, el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Tid"), el("th", { scope: "col" }, "Patient"), el("th", { scope: "col" }, "Läge"),
      el("th", { scope: "col" }, "Mötes-ID"), el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Öppna")))), el("tbody"));
    view("Mina möten", isCoordinator() ? el("p", {}, el("a", { class: "button", href: "#/book" }, "Boka nytt SIP-möte")) : "",
      msg, table);
    try {
      const meetings = await allPages("/meetings", "meetings");
      const body = table.querySelector("tbody");
      if (!meetings.length) body.append(el("tr", {}, el("td", { colspan: 5 }, "Inga möten.")));
      for (const m of meetings) {
        body.append(el("tr", {}, el("td", {}, when(m.scheduled && m.scheduled.start)), el("td", {}, m.patient_name || ""),
          el("td", {}, STATES[m.state] || m.state), el("td", {}, m.dial_in_code),
          el("td", {}, el("a", { href: "#/meeting/" + m.meeting_id, "aria-label": "Öppna " + meetingName(m) }, "Öppna"))));
      }
    } catch (err) { say(msg, errorText(err), "error"); }
  }

  // ------------------------------------------------------------------ booking
  async function bookView() {
    const msg = message("book-message");
    const care = el("select", { id: "care-service", name: "care_service", required: true });
    const contact = el("select", { id: "contact-type", name: "contact_type", required: true });
    const start = new Date(Date.now() + 3600e3);
    start.setMinutes(0, 0, 0);
    const local = new Date(start.getTime() - start.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
    const form = el("form", { id: "book-form", class: "card" },
      el("label", { for: "patient-name" }, "Patientens namn"),
      el("input", { id: "patient-name", name: "patient_name", required: true, autocomplete: "off" }),
      el("label", { for: "patient" }, "Patientens personnummer"),
      el("input", { id: "patient", name: "patient", required: true, autocomplete: "off", placeholder: "ÅÅÅÅMMDD-NNNN" }),
      el("label", { for: "start" }, "Starttid"), el("input", { id: "start", type: "datetime-local", required: true, value: local }),
      el("label", { for: "duration" }, "Längd (minuter)"), el("input", { id: "duration", type: "number", min: 15, max: 480, value: 60 }),
      el("label", { for: "unit" }, "Bokande enhet (HSA-id)"),
      el("input", { id: "unit", required: true, autocomplete: "off", placeholder: "SE2321000057-…", value: localStorage.getItem("svpl.unit") || "" }),
      el("label", { for: "care-service" }, "Vårdtjänst"), care,
      el("label", { for: "contact-type" }, "Kontakttyp"), contact,
      el("fieldset", {}, el("legend", {}, "Part att bjuda in (valfritt)"),
        el("label", { for: "party-name" }, "Namn på part"), el("input", { id: "party-name" }),
        el("label", { for: "party-kind" }, "Typ av part"), el("select", { id: "party-kind" },
          el("option", { value: "PARTY_KIND_MUNICIPALITY_UNIT" }, "Kommunal enhet"),
          el("option", { value: "PARTY_KIND_INPATIENT_WARD" }, "Slutenvårdsavdelning"),
          el("option", { value: "PARTY_KIND_PRIMARY_CARE" }, "Primärvård"),
          el("option", { value: "PARTY_KIND_EXTERNAL_BODY" }, "Extern aktör")),
        el("label", { for: "party-channel" }, "Kanal"), el("select", { id: "party-channel" },
          el("option", { value: "CHANNEL_SECURE_MESSAGING" }, "Säker meddelandehantering (Cosmic Link)"),
          el("option", { value: "CHANNEL_PHONE" }, "Telefon (ingen säker kanal)")),
        el("label", { for: "party-address" }, "Adress (funktionsbrevlåda eller telefonnummer)"), el("input", { id: "party-address" })),
      el("p", {}, el("button", { type: "submit", id: "book-submit" }, "Boka")));
    view("Boka SIP-möte", msg, form);
    try {
      const options = await api("GET", "/booking-options");
      for (const s of options.care_services) care.append(el("option", { value: s, selected: s === options.video_care_service }, s));
      for (const c of options.contact_types) contact.append(el("option", { value: c, selected: c === options.video_contact_type }, c));
    } catch (err) { say(msg, errorText(err), "error"); }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const party = document.getElementById("party-name").value.trim();
      const body = {
        idempotency_key: crypto.randomUUID(), patient_personnummer: document.getElementById("patient").value.trim(),
        patient_name: document.getElementById("patient-name").value.trim(),
        start: new Date(document.getElementById("start").value).toISOString(),
        duration_minutes: Number(document.getElementById("duration").value), care_service: care.value,
        booking_unit_hsa_id: document.getElementById("unit").value.trim(),
        contact_type: contact.value,
        parties: party ? [{ name: party, kind: document.getElementById("party-kind").value,
          channel: document.getElementById("party-channel").value, address: document.getElementById("party-address").value.trim() }] : [],
      };
      try {
        let { booking } = await api("POST", "/bookings", body);
        localStorage.setItem("svpl.unit", body.booking_unit_hsa_id);
        if (!booking.meeting_id && !booking.meeting_pending) { say(msg, "Bokat (ett vanligt besök utan mötesrum).", "ok"); return; }
        // The booking service creates the room in the background when it could not at once.
        for (let i = 0; !booking.meeting_id && i < 60; i++) {
          say(msg, "Bokat. Mötesrummet skapas …", "info");
          await new Promise(r => setTimeout(r, 1000));
          booking = (await api("GET", "/bookings/" + booking.booking_id)).booking;
        }
        if (booking.meeting_id) location.hash = "#/meeting/" + booking.meeting_id;
        else say(msg, "Bokat, men mötesrummet är inte skapat ännu. Se Mina möten om en stund.", "error");
      } catch (err) { say(msg, errorText(err), "error"); }
    });
  }

  // ------------------------------------------------------------------ one meeting (before it)
  // What a meeting is called on its page, in lists and in the window title: its time (the
  // patient's name where the person may see it: the coordinator, from the participant list).
  const meetingName = (m) => "SIP-möte " + when(m.scheduled && m.scheduled.start) + (m.patient_name ? " – " + m.patient_name : "");

  // Run one action of a page: its success says `okText`, or clears an earlier error; its failure
  // is said in Swedish (SVPL.errorText). Resolves to the action's result, or undefined on failure.
  async function act(msg, action, okText) {
    try {
      const result = await action();
      if (okText) say(msg, okText, "ok");
      else if (msg.classList.contains("error")) say(msg, "", "ok");
      return result;
    } catch (err) { say(msg, errorText(err), "error"); return undefined; }
  }

  async function meetingView(id) {
    const msg = message("meeting-message");
    let meeting;
    try { meeting = (await api("GET", "/meetings/" + id)).meeting; }
    catch (err) { view("Mötet", msg); say(msg, errorText(err), "error"); return; }
    const facts = el("dl", { class: "card" },
      el("dt", {}, "Tid"), el("dd", {}, when(meeting.scheduled && meeting.scheduled.start)),
      el("dt", {}, "Läge"), el("dd", { id: "meeting-state", class: "state" }, STATES[meeting.state] || meeting.state),
      el("dt", {}, "Mötes-ID för uppringning"), el("dd", { id: "dial-in" }, meeting.dial_in_code),
      el("dt", {}, "Registrerade / anslutna"), el("dd", {}, meeting.registered_count + " / " + meeting.connected_count));
    const codesOn = Boolean(await personalCode(id, facts));
    const actions = el("p", {},
      el("a", { class: "button", id: "go-room", href: "#/room/" + id }, "Gå till mötesrummet"), " ",
      el("a", { class: "button secondary", href: "#/report?meeting=" + encodeURIComponent(meeting.dial_in_code) }, "Rapportera ett problem"));
    const summary = await summarySection(meeting);
    const title = meetingName(meeting);
    if (!leadsMeeting(meeting)) { view(title, msg, facts, summary, actions); return; }

    let participants = [];
    const start = el("button", { type: "button", id: "start-meeting",
      hidden: !["MEETING_STATE_SCHEDULED", "MEETING_STATE_OPEN"].includes(meeting.state),
      onclick: async () => {
        if (!(meeting.confidentiality_assessments || []).length && !await SVPL.confirmAction(
          "Starta utan registrerad men- och sekretessprövning?",
          "Innan uppgifter från en vårdgivare delas med de andra i mötet ska en men- och sekretessprövning göras, " +
          "precis som vid ett fysiskt möte. Ingen prövning är registrerad för det här mötet.", "Starta ändå")) return;
        const started = await act(msg, async () => {
          if (meeting.state === "MEETING_STATE_SCHEDULED") meeting = (await api("POST", "/meetings/" + id + "/open")).meeting;
          return (await api("POST", "/meetings/" + id + "/start")).meeting;
        }, "Mötet är startat.");
        if (!started) return;
        meeting = started;
        document.getElementById("meeting-state").textContent = STATES[meeting.state];
        start.hidden = true;
      } }, "Starta mötet");
    const table = el("table", { id: "participants" }, el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Namn"), el("th", { scope: "col" }, "Roll"), el("th", { scope: "col" }, "Organisation"),
      el("th", { scope: "col" }, "ID"), el("th", { scope: "col" }, "Fysiskt hos patienten"), el("th", { scope: "col" }, "Status"),
      el("th", { scope: "col" }, "Ändra"))), el("tbody"));
    const delegate = el("section", { class: "card", id: "delegate" });
    const refresh = async () => {
      const list = await act(msg, async () => (await api("GET", "/meetings/" + id + "/participants")).participants);
      if (!list) return;
      participants = list;
      table.querySelector("tbody").replaceChildren(...participants.map(p => el("tr", { "data-participant": p.participant_id },
        el("td", {}, p.full_name), el("td", {}, ROLES[p.role] || p.role), el("td", {}, p.organization || ""),
        el("td", {}, p.person ? (p.person.id_kind === "ID_KIND_PERSONNUMMER" ? p.person.id.slice(0, 8) + "-****" : p.person.id) : ""),
        el("td", {}, presenceToggle(id, p, msg, refresh)),
        el("td", {}, p.removed ? "Borttagen" : p.connected ? "Ansluten" : "Registrerad",
          INBOX[p.inbox_notice] ? el("span", { class: "inbox-notice", "data-inbox": p.inbox_notice },
            " – " + INBOX[p.inbox_notice]) : ""),
        el("td", {}, p.removed || p.role === "PARTICIPANT_ROLE_COORDINATOR" ? "" : editRegistration(id, p, msg, refresh),
          p.removed || !codesOn ? "" : reissueCode(id, p, msg)))));
      delegateForm(delegate, meeting, participants, msg, m => { meeting = m; });
    };
    const register = registerForm(id, msg, refresh);
    const assessment = assessmentSection(id, meeting, msg, m => { meeting = m; });
    const booking = await bookingOf(meeting);
    view(title, msg, facts, linkCard(meeting), summary, el("p", {}, start), actions,
      el("section", { class: "card" }, el("h2", {}, "Deltagare"), table), register, delegate, assessment,
      ...(booking ? [invitationsSection(booking, msg), phoneTasksSection(booking, msg), rescheduleForm(booking, msg),
        rebookSection(booking, msg), cancelSection(booking, msg)] : []));
    await refresh();
  }

  async function bookingOf(meeting) {
    if (!meeting.booking_id) return null;
    try { return (await api("GET", "/bookings/" + meeting.booking_id)).booking; } catch (err) { return null; }
  }

  // The meeting link and the invitation text the coordinator pastes into Cosmic Link or reads over
  // the phone, with the dial-in meeting ID beside it.
  function invitationText(meeting) {
    return "Välkommen till ett digitalt SIP-möte " + when(meeting.scheduled && meeting.scheduled.start) + ".\n" +
      "Logga in och anslut via mötesportalen: " + meeting.portal_url + "\n" +
      "Du kan också ringa in med mötes-ID " + meeting.dial_in_code + ".\n" +
      "Sitt där ingen annan ser eller hör mötet. Mötet spelas inte in.";
  }

  function linkCard(meeting) {
    const text = el("textarea", { id: "invitation-text", rows: 4, readonly: true }, invitationText(meeting));
    const said = el("p", { id: "copy-message", class: "message", role: "status", hidden: true });
    return el("section", { class: "card", id: "meeting-link" }, el("h2", {}, "Möteslänk och mötes-ID"),
      el("p", {}, "Möteslänk: ", el("a", { id: "portal-url", href: meeting.portal_url }, meeting.portal_url)),
      el("p", {}, "Mötes-ID för uppringning: ", el("strong", { id: "link-dial-in" }, meeting.dial_in_code)),
      el("label", { for: "invitation-text" }, "Inbjudningstext (klistra in i Cosmic Link eller läs upp i telefon)"), text,
      el("p", {}, el("button", { type: "button", id: "copy-invitation", class: "secondary", onclick: async () => {
        try { await navigator.clipboard.writeText(text.value); }
        catch (err) { text.select(); document.execCommand("copy"); }  // no clipboard permission: the selection
        say(said, "Inbjudningstexten är kopierad.", "ok");
      } }, "Kopiera inbjudningstexten")), said);
  }

  // After the meeting: the summary of what was agreed (everyone in the meeting may read it).
  async function summarySection(meeting) {
    if (!FINAL.includes(meeting.state)) return "";
    let agenda;
    try { agenda = (await api("GET", "/meetings/" + meeting.meeting_id + "/agenda")).agenda; } catch (err) { return ""; }
    if (!agenda.summary) return "";
    return el("section", { class: "card", id: "meeting-summary" }, el("h2", {}, "Sammanfattning av överenskommelser"),
      el("p", { class: "pre" }, agenda.summary));
  }

  function presenceToggle(meetingId, p, msg, refresh) {
    if (p.removed) return p.physically_present ? "Ja" : "Nej";
    return el("label", { class: "inline" }, el("input", { type: "checkbox", class: "presence", checked: Boolean(p.physically_present),
      onchange: async (e) => {
        const done = await act(msg, () => api("POST", "/meetings/" + meetingId + "/physical-presence",
          { participant_id: p.participant_id, physically_present: e.target.checked }),
          p.full_name + (e.target.checked ? " är markerad som fysiskt närvarande hos patienten." : " är inte längre markerad som fysiskt närvarande."));
        if (done) await refresh(); else e.target.checked = !e.target.checked;
      } }), el("span", { class: "sr-only" }, p.full_name + " fysiskt hos patienten"));
  }

  // Correcting a registration: name, role and organisation (the ID stays; roster checks the role fits it).
  // The viewer's own personal dial-in code (meeting ID + code enters the meeting by phone as them):
  // shown to them only; nothing when personal codes are off or the meeting is over. Returns it ("" if none).
  async function personalCode(meetingId, facts) {
    let code = "";
    try { code = (await api("GET", "/meetings/" + meetingId + "/personal-code")).personal_code || ""; } catch (err) { return ""; }
    if (!code) return "";
    facts.append(el("dt", {}, "Din personliga kod för uppringning"),
      el("dd", {}, el("strong", { id: "personal-code" }, code),
        " – ring in, ange mötes-ID och fyrkant, sedan koden och fyrkant, så kommer du in direkt. Koden är bara din."));
    return code;
  }

  // A new personal code for a participant (e.g. the old one got out): the old stops working. The
  // coordinator never sees the code; the participant finds it on their own meeting page.
  function reissueCode(meetingId, p, msg) {
    return el("button", { type: "button", class: "secondary reissue-code", "data-participant": p.participant_id,
      onclick: async () => {
        if (!await SVPL.confirmAction("Ge " + p.full_name + " en ny personlig kod?",
          "Den gamla koden slutar gälla direkt. " + p.full_name + " ser den nya koden på sin mötessida" +
          (p.role === "PARTICIPANT_ROLE_NEXT_OF_KIN" ? " och får den i sin 1177-inkorg." : "."), "Ny kod")) return;
        await act(msg, () => api("POST", "/meetings/" + meetingId + "/participants/" + p.participant_id + "/personal-code"),
          p.full_name + " har fått en ny personlig kod.");
      } }, "Ny personlig kod", el("span", { class: "sr-only" }, " för " + p.full_name));
  }

  function editRegistration(meetingId, p, msg, refresh) {
    const key = p.participant_id;
    const name = el("input", { id: "edit-name-" + key, value: p.full_name, required: true });
    const org = el("input", { id: "edit-org-" + key, value: p.organization || "" });
    const role = el("select", { id: "edit-role-" + key }, ...Object.entries(ROLES).filter(([k]) => k !== "PARTICIPANT_ROLE_COORDINATOR")
      .map(([k, v]) => el("option", { value: k, selected: k === p.role }, v)));
    return el("details", { class: "edit-registration" }, el("summary", {}, "Ändra", el("span", { class: "sr-only" }, " " + p.full_name)),
      el("label", { for: name.id }, "Namn"), name, el("label", { for: role.id }, "Roll"), role,
      el("label", { for: org.id }, "Organisation"), org,
      el("p", {}, el("button", { type: "button", class: "secondary save-registration", onclick: async () => {
        if (await act(msg, () => api("POST", "/meetings/" + meetingId + "/participants/" + key,
          { full_name: name.value.trim(), role: role.value, organization: org.value.trim() }), "Registreringen är ändrad.")) await refresh();
      } }, "Spara ändringen")));
  }

  function registerForm(id, msg, refresh) {
    const role = el("select", { id: "p-role" }, ...Object.entries(ROLES).filter(([k]) => k !== "PARTICIPANT_ROLE_COORDINATOR")
      .map(([k, v]) => el("option", { value: k }, v)));
    const results = el("ul", { id: "hsa-results", class: "plain", "aria-live": "polite" });
    const search = el("input", { id: "hsa-search", placeholder: "Minst två bokstäver" });
    const register = el("form", { id: "register-form", class: "card" },
      el("h2", {}, "Registrera deltagare"),
      el("label", { for: "hsa-search" }, "Sök personal i HSA-katalogen (namn)"),
      el("div", {}, search, " ", el("button", { type: "button", id: "hsa-search-button", class: "secondary", onclick: async () => {
        results.replaceChildren();
        if (search.value.trim().length < 2) { results.append(el("li", { class: "message error" }, "Skriv minst två bokstäver av namnet.")); return; }
        try {
          const { people } = await api("GET", "/directory/people?name=" + encodeURIComponent(search.value.trim()));
          if (!people.length) results.append(el("li", {}, "Ingen träff."));
          for (const p of people) {
            results.append(el("li", {}, el("button", { type: "button", class: "secondary", onclick: () => {
              document.getElementById("p-name").value = p.given_name + " " + p.surname;
              document.getElementById("p-id").value = p.hsa_id;
              document.getElementById("p-org").value = p.organization;
              role.value = p.staff_kind === "STAFF_KIND_MUNICIPALITY" ? "PARTICIPANT_ROLE_MUNICIPALITY_STAFF" : "PARTICIPANT_ROLE_REGION_STAFF";
            } }, `${p.given_name} ${p.surname}, ${p.title}, ${p.unit} (${p.hsa_id})`)));
          }
        } catch (err) { results.append(el("li", { class: "message error" }, errorText(err))); }
      } }, "Sök")), results,
      el("label", { for: "p-name" }, "Fullständigt namn"), el("input", { id: "p-name", required: true }),
      el("label", { for: "p-role" }, "Roll"), role,
      el("label", { for: "p-id" }, "HSA-id (personal) eller personnummer"), el("input", { id: "p-id", required: true, autocomplete: "off" }),
      el("label", { for: "p-org" }, "Organisation"), el("input", { id: "p-org" }),
      el("label", {}, el("input", { type: "checkbox", id: "p-present" }), " Fysiskt närvarande hos patienten"),
      el("p", {}, el("button", { type: "submit", id: "register-submit" }, "Registrera")));
    register.addEventListener("submit", async (e) => {
      e.preventDefault();
      const idValue = document.getElementById("p-id").value.trim();
      const body = { full_name: document.getElementById("p-name").value.trim(), role: role.value,
        person: { id: idValue, id_kind: /^SE/i.test(idValue) ? "ID_KIND_HSA_ID" : "ID_KIND_PERSONNUMMER" },
        organization: document.getElementById("p-org").value.trim(), physically_present: document.getElementById("p-present").checked };
      if (await act(msg, () => api("POST", "/meetings/" + id + "/participants", body), body.full_name + " är registrerad.")) {
        register.reset();
        await refresh();
      }
    });
    return register;
  }

  // Delegating the coordinator role: to a registered region staff member (roster's rule).
  function delegateForm(section, meeting, participants, msg, update) {
    const staff = participants.filter(p => !p.removed && p.role === "PARTICIPANT_ROLE_REGION_STAFF" && p.person);
    const delegates = meeting.delegated_coordinator_hsa_ids || [];
    const select = el("select", { id: "delegate-to" }, ...staff.filter(p => !delegates.includes(p.person.id))
      .map(p => el("option", { value: p.person.id }, p.full_name)));
    const named = delegates.map(h => (staff.find(p => p.person.id === h) || {}).full_name || h);
    section.replaceChildren(el("h2", {}, "Medsamordnare"),
      el("p", { id: "delegates" }, named.length ? "Medsamordnare: " + named.join(", ") : "Ingen medsamordnare."),
      ...(meeting.coordinator_hsa_id !== me.id ? [] : select.options.length ? [
        el("label", { for: "delegate-to" }, "Låt en registrerad regionanställd leda mötet tillsammans med dig"), select,
        el("p", {}, el("button", { type: "button", id: "delegate-submit", class: "secondary", onclick: async () => {
          const answer = await act(msg, () => api("POST", "/meetings/" + meeting.meeting_id + "/delegates", { hsa_id: select.value }),
            select.selectedOptions[0].textContent + " är medsamordnare.");
          if (answer) { update(answer.meeting); delegateForm(section, answer.meeting, participants, msg, update); }
        } }, "Gör till medsamordnare"))] : [el("p", {}, "Registrera regionpersonal för att kunna välja en medsamordnare.")]));
  }

  function assessmentSection(id, meeting, msg, update) {
    const list = el("ul", { id: "assessments", class: "plain" });
    const show = (m) => {
      const items = m.confidentiality_assessments || [];
      list.replaceChildren(...(items.length ? items.map(a => el("li", {}, el("strong", {}, a.care_provider), ": prövad av ",
        a.assessed_by_hsa_id === me.id ? me.name : a.assessed_by_hsa_id, ", ", when(a.assessed_at), a.note ? " – " + a.note : ""))
        : [el("li", { id: "no-assessment" }, "Ingen prövning är registrerad ännu.")]));
    };
    show(meeting);
    const form = el("form", { id: "assessment-form", class: "card" },
      el("h2", {}, "Men- och sekretessprövning"), list,
      el("label", { for: "assessment-provider" }, "Vårdgivare vars uppgifter prövningen gäller"), el("input", { id: "assessment-provider", required: true }),
      el("label", { for: "assessment-note" }, "Anteckning"), el("textarea", { id: "assessment-note", rows: 2 }),
      el("p", {}, el("button", { type: "submit", class: "secondary" }, "Registrera att prövningen är gjord")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const answer = await act(msg, () => api("POST", "/meetings/" + id + "/confidentiality-assessment", {
        care_provider: document.getElementById("assessment-provider").value.trim(),
        note: document.getElementById("assessment-note").value.trim() }), "Prövningen är registrerad.");
      if (answer) { update(answer.meeting); show(answer.meeting); form.reset(); }
    });
    return form;
  }

  // Invitations: each party's state (queued, delivered, failed, confirmed) with the names from its
  // confirmation; a confirmation received by phone recorded; more parties invited.
  function invitationState(inv) {
    if (inv.state === "INVITATION_STATE_INVITED" && inv.last_error) return "Misslyckades, försöker igen (" + inv.delivery_attempts + " försök)";
    return INVITATIONS[inv.state] || inv.state;
  }

  function partyFields(prefix) {
    return [el("label", { for: prefix + "-name" }, "Namn på part"), el("input", { id: prefix + "-name" }),
      el("label", { for: prefix + "-kind" }, "Typ av part"), el("select", { id: prefix + "-kind" },
        el("option", { value: "PARTY_KIND_MUNICIPALITY_UNIT" }, "Kommunal enhet"),
        el("option", { value: "PARTY_KIND_INPATIENT_WARD" }, "Slutenvårdsavdelning"),
        el("option", { value: "PARTY_KIND_PRIMARY_CARE" }, "Primärvård"),
        el("option", { value: "PARTY_KIND_EXTERNAL_BODY" }, "Extern aktör")),
      el("label", { for: prefix + "-channel" }, "Kanal"), el("select", { id: prefix + "-channel" },
        el("option", { value: "CHANNEL_SECURE_MESSAGING" }, "Säker meddelandehantering (Cosmic Link)"),
        el("option", { value: "CHANNEL_PHONE" }, "Telefon (ingen säker kanal)")),
      el("label", { for: prefix + "-address" }, "Adress (funktionsbrevlåda eller telefonnummer)"), el("input", { id: prefix + "-address" })];
  }
  const partyFrom = (prefix) => ({ name: document.getElementById(prefix + "-name").value.trim(),
    kind: document.getElementById(prefix + "-kind").value, channel: document.getElementById(prefix + "-channel").value,
    address: document.getElementById(prefix + "-address").value.trim() });

  function invitationsSection(booking, msg) {
    const section = el("section", { class: "card", id: "invitations" });
    const show = async () => {
      const list = await act(msg, async () => (await api("GET", "/bookings/" + booking.booking_id + "/invitations")).invitations);
      if (!list) return;
      const rows = list.map(inv => {
        const names = el("textarea", { id: "confirm-names-" + inv.invitation_id, rows: 2 });
        const name = inv.party ? inv.party.name : "";
        return el("li", { "data-invitation": inv.invitation_id, class: "invitation" },
          el("strong", {}, name), ": ", el("span", { class: "invitation-state" }, invitationState(inv)),
          inv.attendee_names.length ? el("span", { class: "attendees" }, " – deltar: " + inv.attendee_names.join(", ")) : "",
          inv.state === "INVITATION_STATE_CONFIRMED" ? "" : el("details", {}, el("summary", {}, "Registrera bekräftelse från " + name),
            el("label", { for: names.id }, "Namn på de som deltar (ett per rad)"), names,
            el("p", {}, el("button", { type: "button", class: "secondary confirm-invitation", onclick: async () => {
              const attendee_names = names.value.split("\n").map(n => n.trim()).filter(Boolean);
              if (await act(msg, () => api("POST", "/invitations/" + inv.invitation_id + "/confirmation", { attendee_names }),
                "Bekräftelsen från " + name + " är registrerad.")) await show();
            } }, "Registrera bekräftelsen"))));
      });
      section.replaceChildren(el("h2", {}, "Inbjudningar"),
        rows.length ? el("ul", { class: "plain", id: "invitation-list" }, ...rows) : el("p", {}, "Inga parter är inbjudna."), invite);
    };
    const invite = el("form", { id: "invite-form" }, el("h3", {}, "Bjud in fler parter"), ...partyFields("invite"),
      el("p", {}, el("button", { type: "submit", id: "invite-submit", class: "secondary" }, "Bjud in")));
    invite.addEventListener("submit", async (e) => {
      e.preventDefault();
      const party = partyFrom("invite");
      if (await act(msg, () => api("POST", "/bookings/" + booking.booking_id + "/invitations", { parties: [party] }),
        party.name + " är inbjuden.")) { invite.reset(); await show(); document.dispatchEvent(new Event("svpl:phone-tasks")); }
    });
    show();
    return section;
  }

  // The coordinator's phone tasks for this booking: whom to call with which details, marked done.
  function phoneTasksSection(booking, msg) {
    const section = el("section", { class: "card", id: "phone-tasks" });
    const show = async () => {
      const tasks = await act(msg, () => allPages("/phone-tasks?include_done=true", "tasks"));
      if (!tasks) return;
      const mine = tasks.filter(t => t.booking_id === booking.booking_id);
      section.replaceChildren(el("h2", {}, "Att ringa"), mine.length ? el("ul", { class: "plain" }, ...mine.map(t =>
        el("li", { "data-task": t.task_id, class: t.done ? "task done" : "task" },
          el("strong", {}, t.party.name + " (" + t.party.address + ")"), t.done ? " – klar" : "",
          el("p", { class: "pre" }, t.instructions),
          t.done ? "" : el("button", { type: "button", class: "secondary task-done", onclick: async () => {
            if (await act(msg, () => api("POST", "/phone-tasks/" + t.task_id + "/done"), "Uppgiften är markerad som klar.")) await show();
          } }, "Markera som klar")))) : el("p", {}, "Inga telefonuppgifter."));
    };
    const onInvited = () => { if (section.isConnected) show(); else document.removeEventListener("svpl:phone-tasks", onInvited); };
    document.addEventListener("svpl:phone-tasks", onInvited);
    show();
    return section;
  }

  function localInput(iso) {
    const d = new Date(iso);
    return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
  }

  function rescheduleForm(booking, msg) {
    const form = el("form", { id: "reschedule-form", class: "card" }, el("h2", {}, "Flytta mötet"),
      el("label", { for: "new-start" }, "Ny starttid"), el("input", { id: "new-start", type: "datetime-local", required: true, value: localInput(booking.start) }),
      el("label", { for: "new-duration" }, "Längd (minuter)"), el("input", { id: "new-duration", type: "number", min: 15, max: 480, value: booking.duration_minutes }),
      el("p", {}, el("button", { type: "submit", id: "reschedule-submit", class: "secondary" }, "Flytta mötet")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const answer = await act(msg, () => api("POST", "/bookings/" + booking.booking_id + "/reschedule", {
        start: new Date(document.getElementById("new-start").value).toISOString(),
        duration_minutes: Number(document.getElementById("new-duration").value) }), "Mötet är flyttat. Parterna får den nya tiden.");
      if (answer) route();
    });
    return form;
  }

  // Rebook requests from fault reports: who asked and why (and the ticket); the coordinator says what
  // was done (moved: "Flytta mötet" above; or no rebooking needed) and marks it handled.
  function rebookSection(booking, msg) {
    const section = el("section", { class: "card", id: "rebook-requests" });
    const show = (requests) => section.replaceChildren(el("h2", {}, "Önskemål om ombokning"),
      requests.length ? el("ul", { class: "plain" }, ...requests.map(r => {
        const answer = el("input", { id: "resolution-" + r.request_id });
        return el("li", { class: r.resolved_at ? "rebook handled" : "rebook", "data-request": r.request_id },
          el("strong", {}, r.requested_by_name || "Supporten"), " bad om ombokning ", when(r.requested_at), ": ", r.reason,
          r.ticket_id ? " (ärende " + r.ticket_id + ")" : "",
          r.resolved_at ? el("p", { class: "resolution" }, "Hanterat " + when(r.resolved_at) + ": " + r.resolution) :
            el("div", {}, el("label", { for: answer.id }, "Vad gjordes? (t.ex. flyttat, eller ingen ombokning behövs)"), answer,
              el("p", {}, el("button", { type: "button", class: "secondary resolve-rebook", onclick: async () => {
                const done = await act(msg, () => api("POST", "/bookings/" + booking.booking_id + "/rebook-requests/" + r.request_id +
                  "/resolution", { resolution: answer.value.trim() }), "Önskemålet är markerat som hanterat.");
                if (done) show(requests.map(x => x.request_id === r.request_id ? done.request : x));
              } }, "Markera som hanterat"))));
      })) : el("p", {}, "Inga önskemål om ombokning."));
    show(booking.rebook_requests || []);
    return section;
  }

  function cancelSection(booking, msg) {
    if (booking.status !== "BOOKING_STATUS_BOOKED") return "";
    return el("p", {}, el("button", { type: "button", id: "cancel-booking", class: "danger", onclick: async () => {
      if (!await SVPL.confirmAction("Avboka mötet?", "Mötet ställs in och mötesrummet kan aldrig öppnas. Parterna meddelas.", "Avboka mötet")) return;
      if (await act(msg, () => api("POST", "/bookings/" + booking.booking_id + "/cancel", { reason: "Avbokat av samordnaren" }), "Mötet är avbokat.")) route();
    } }, "Avboka mötet"));
  }

  // ------------------------------------------------------------------ the meeting room
  // The leave button and the person icon exist only while the person is in a meeting.
  function syncTopbar() {
    const inMeeting = Boolean(room && !room.closed && room.participantId);
    document.getElementById("leave").hidden = !inMeeting;
    document.getElementById("people-button").hidden = !inMeeting;
    if (!inMeeting) document.getElementById("people-panel").hidden = true;
  }

  function setPeople(connected) {
    const names = document.getElementById("people-names");
    syncTopbar();
    document.getElementById("people-count").textContent = String(connected ? connected.count : 0);
    names.replaceChildren(...((connected && connected.people) || []).map(personItem));
    const present = (connected && connected.with_patient) || [];
    document.getElementById("people-present-h").hidden = !present.length;
    document.getElementById("people-present").replaceChildren(...present.map(p => el("li", { "data-name": p.full_name }, p.full_name)));
    const unidentified = document.getElementById("people-unidentified");
    unidentified.hidden = !(connected && connected.unidentified_count);
    unidentified.textContent = connected && connected.unidentified_count ? connected.unidentified_count + " oidentifierad(e) anslutning(ar)" : "";
  }

  // One connected person in the people panel: their name, and "Telefon" when they are in by phone.
  function personItem(p) {
    const item = el("li", { "data-name": p.full_name }, p.full_name);
    if (p.by_phone) {
      item.dataset.phone = "true";
      item.append(" ", el("span", { class: "by-phone" }, el("span", { "aria-hidden": "true" }, "☎ "), "Telefon"));
    }
    item.append(el("span", { class: "sr-only" }, ", " + (ROLES[p.role] || "")));
    return item;
  }

  function leaveRoom() {
    if (!room) { syncTopbar(); return; }
    room.closed = true;
    if (room.stopQuality) room.stopQuality();
    if (room.pc) room.pc.close();
    if (room.ws) room.ws.close();
    if (room.stream) room.stream.getTracks().forEach(t => t.stop());
    clearInterval(room.tileTimer);
    room = null;
    syncTopbar();
  }

  function finish(id, text) {
    leaveRoom();
    const msg = el("p", { id: "room-message", class: "message", role: "alert" });
    view("Mötesrummet", msg, el("p", {}, el("button", { type: "button", id: "rejoin", class: "secondary",
      onclick: () => roomView(id, true) }, "Försök ansluta igen"), " ", el("a", { href: "#/" }, "Till mina möten")));
    say(msg, text, "info");
    msg.dataset.outcome = text.includes("avslutat") ? "ended" : text.includes("tagits bort") ? "removed" : "left";
  }

  async function roomView(id, joinNow) {
    leaveRoom();
    const msg = el("p", { id: "room-message", class: "message", role: "alert", hidden: true });
    const self = el("video", { id: "self-view", class: "selfview", autoplay: true, muted: true, playsinline: true,
      "aria-label": "Din egen bild" });
    self.muted = true;
    const camera = el("select", { id: "camera" }), mic = el("select", { id: "microphone" });
    const settings = el("div", { id: "device-settings", class: "card", hidden: true },
      el("label", { for: "camera" }, "Kamera"), camera, el("label", { for: "microphone" }, "Mikrofon"), mic);
    const gear = el("button", { type: "button", id: "gear", class: "gear", "aria-expanded": "false", "aria-controls": "device-settings",
      onclick: () => { settings.hidden = !settings.hidden; gear.setAttribute("aria-expanded", String(!settings.hidden)); } },
      "⚙ Inställningar för kamera och mikrofon");
    let stream = null;
    const showSelf = async () => {
      if (stream) stream.getTracks().forEach(t => t.stop());
      stream = await Media.localStream(camera.value, mic.value);
      self.srcObject = stream;
    };
    camera.addEventListener("change", showSelf);
    mic.addEventListener("change", showSelf);
    // Enabled once the camera and microphone are ready.
    const join = el("button", { type: "button", id: "join", disabled: true }, "Anslut till mötet");
    join.addEventListener("click", async () => {
      join.disabled = true;
      if (await enterRoom(id, stream, msg) === "try again") { join.textContent = "Försök igen"; join.disabled = false; }
    });
    view("Mötesrummet", msg,
      el("p", {}, "Kontrollera att du ser dig själv och att rätt kamera och mikrofon är valda. Trådbundet nätverk rekommenderas; testa wifi först och undvik att dela mobilt bredband från telefonen. " +
        "Använd helst Chrome, och headset om du sitter ensam. Patientens eget wifi används bara i nödfall."),
      gear, settings, self, el("p", {}, join));
    try {
      await showSelf();
      const { cameras, mics } = await Media.devices();
      camera.replaceChildren(...cameras.map(d => el("option", { value: d.deviceId }, d.label || "Kamera")));
      mic.replaceChildren(...mics.map(d => el("option", { value: d.deviceId }, d.label || "Mikrofon")));
    } catch (err) { say(msg, "Kameran eller mikrofonen kunde inte startas: " + err.message, "error"); }
    join.disabled = false;
    if (joinNow) join.click();
  }

  // Joining. A refusal is final (not registered, removed, over...); a server or network that does
  // not answer right now is not: the person is told so and may try again ("try again").
  async function enterRoom(id, stream, msg) {
    console.info("svpl: asking to join", id);
    let admission;
    try { admission = await api("POST", "/meetings/" + id + "/admission"); }
    catch (err) {
      // Not started yet, or on the phone right now: try again later (after the start, after hanging up).
      const later = ["ADMIT_REFUSAL_NOT_STARTED", "ALREADY_CONNECTED_BY_PHONE"].includes(err.reason);
      const transient = !(err instanceof SVPL.ApiError) || err.status >= 500 || err.status === 429 || later;
      say(msg, later ? errorText(err) : transient ?
        "Mötet gick inte att nå just nu. Kontrollera nätverket och försök igen." : "Du kan inte ansluta: " + errorText(err), "error");
      msg.dataset.outcome = transient ? "unavailable" : "refused";
      return transient ? "try again" : "refused";
    }
    say(msg, "", "info");  // a failed try before this one said so
    delete msg.dataset.outcome;
    let meeting = {};
    try { meeting = (await api("GET", "/meetings/" + id)).meeting; } catch (err) { /* shown by the events */ }
    const coordinator = leadsMeeting(meeting);
    const grid = el("div", { class: "grid", id: "video-grid", role: "group", "aria-label": "Deltagarnas video" });
    const selfTile = el("div", { class: "tile self" }, el("video", { autoplay: true, muted: true, playsinline: true, "aria-label": "Din egen bild" }),
      el("span", { class: "label" }, "Du"));
    selfTile.querySelector("video").muted = true;
    selfTile.querySelector("video").srcObject = stream;
    grid.append(selfTile);
    const quality = el("p", { id: "quality-warning", class: "warning", role: "alert", hidden: true });
    const side = el("aside", { "aria-label": "Mötets verktyg" });
    const agenda = el("section", { class: "card", id: "agenda" }, el("h2", {}, "Dagordning"));
    side.append(agenda);
    const roster = coordinator ? el("section", { class: "card", id: "roster" }, el("h2", {}, "Registrerade och anslutna")) : null;
    if (roster) side.prepend(roster);
    side.append(el("p", {}, el("a", { href: "#/report?meeting=" + id, target: "_blank", rel: "noopener" }, "Rapportera ett problem")));
    view("Mötesrummet", msg, quality, el("div", { class: "room" }, el("div", { class: "stage" }, grid), side));
    if (meeting.meeting_id) document.title = "Mötesrummet – " + meetingName(meeting) + " – Digitala SIP-möten";
    room = { id, stream, participantId: admission.participant_id, coordinator, closed: false };
    const leave = document.getElementById("leave");
    leave.textContent = coordinator ? "Lämna och avsluta mötet" : "Lämna mötet";
    syncTopbar();

    const tilesRoom = room;
    room.tileTimer = setInterval(() => {
      for (const tile of grid.querySelectorAll(".tile.remote")) {
        const v = tile.querySelector("video");
        tile.hidden = !(Number(v.dataset.frames) > 0 && Date.now() - Number(v.dataset.lastFrame || 0) < 3000);
      }
      // A tile playing without a name (its person's connection reached roster later): ask again.
      if (grid.querySelector(".tile.remote:not([hidden]):not([data-name])") && Date.now() - (tilesRoom.tilesAsked || 0) > 2000) {
        nameTiles(tilesRoom);
      }
    }, 1000);
    const onTrack = (track, transceiver) => {
      if (track.kind !== "video") {
        const audio = el("audio", { autoplay: true, "data-mid": transceiver.mid || "" });
        audio.srcObject = new MediaStream([track]);
        grid.append(el("div", { class: "remote-audio", hidden: true }, audio));
        return;
      }
      const video = el("video", { autoplay: true, playsinline: true, muted: true, "data-mid": transceiver.mid || "" });
      video.muted = true;
      video.srcObject = new MediaStream([track]);
      const tile = el("div", { class: "tile remote", hidden: true }, video, el("span", { class: "label" }, "Deltagare"));
      grid.append(tile);
      video.dataset.frames = "0";
      if ("requestVideoFrameCallback" in video) {
        const step = () => {
          video.dataset.frames = String(Number(video.dataset.frames) + 1);
          video.dataset.lastFrame = String(Date.now());
          video.requestVideoFrameCallback(step);
        };
        video.requestVideoFrameCallback(step);
      }
    };
    Object.assign(room, { grid, msg, onTrack });
    grid.before(roomControls(room, selfTile));
    const thisRoom = room;
    // A failed first negotiation is handled as a lost connection: admitted again, with back-off.
    try { await connectMedia(room, admission); }
    catch (err) { console.warn("svpl: connecting failed; trying again", err); reconnect(thisRoom); }
    // The media service measures each connection (RTT, loss, jitter, bitrate) and says when it is poor.
    const qualityTimer = setInterval(async () => {
      if (thisRoom.closed) return;
      try {
        const { stats } = await api("GET", "/meetings/" + id + "/quality");
        const mine = stats.find(s => s.participant_id === thisRoom.participantId);
        quality.hidden = !(mine && mine.poor);
        if (mine && mine.poor) {
          const lines = mine.warnings.length ? mine.warnings :
            [`Din anslutning är svag (svarstid ${Math.round(mine.round_trip_ms)} ms, förlust ${Math.round(mine.packet_loss * 100)} %).`];
          quality.replaceChildren(...lines.map(w => el("span", { class: "line" }, w)),
            el("span", { class: "line" }, "Trådbundet nätverk rekommenderas; undvik att dela mobilt bredband från telefonen."));
        }
      } catch (err) { /* the next poll tries again */ }
    }, 5000);
    room.stopQuality = () => clearInterval(qualityTimer);
    openEvents(thisRoom, agenda, roster);
  }

  // The room's control bar: microphone and camera on/off, the gear to change camera and microphone
  // (and speaker, where the browser can choose it) during the meeting, and who is speaking, from the
  // audio levels (own microphone and each received audio slot, named through the tile assignment).
  // The layout follows the number of tiles (1-12) and the window (layoutGrid).
  function roomControls(thisRoom, selfTile) {
    const toggle = (id, kind, on, off) => el("button", { type: "button", id, class: "control", "aria-pressed": "true",
      onclick: (e) => {
        const button = e.currentTarget, enabled = button.getAttribute("aria-pressed") !== "true";
        thisRoom.stream.getTracks().filter(t => t.kind === kind).forEach(t => { t.enabled = enabled; });
        button.setAttribute("aria-pressed", String(enabled));
        button.textContent = enabled ? on : off;
        selfTile.classList.toggle(kind === "audio" ? "mic-off" : "camera-off", !enabled);
      } }, on);
    const camera = el("select", { id: "room-camera" }), mic = el("select", { id: "room-microphone" }), speaker = el("select", { id: "room-speaker" });
    const settings = el("div", { id: "room-settings", class: "card settings", hidden: true },
      el("label", { for: "room-camera" }, "Kamera"), camera, el("label", { for: "room-microphone" }, "Mikrofon"), mic,
      ...("setSinkId" in HTMLMediaElement.prototype ? [el("label", { for: "room-speaker" }, "Högtalare"), speaker] : []));
    const gear = el("button", { type: "button", id: "room-gear", class: "control", "aria-expanded": "false", "aria-controls": "room-settings",
      onclick: async () => {
        settings.hidden = !settings.hidden;
        gear.setAttribute("aria-expanded", String(!settings.hidden));
        if (settings.hidden) return;
        const all = await navigator.mediaDevices.enumerateDevices();
        const current = kind => (thisRoom.stream.getTracks().find(t => t.kind === kind) || { getSettings: () => ({}) }).getSettings().deviceId;
        const fill = (select, kind, label, chosen) => select.replaceChildren(...all.filter(d => d.kind === kind).map((d, n) =>
          el("option", { value: d.deviceId, selected: d.deviceId === chosen }, d.label || label + " " + (n + 1))));
        fill(camera, "videoinput", "Kamera", current("video"));
        fill(mic, "audioinput", "Mikrofon", current("audio"));
        fill(speaker, "audiooutput", "Högtalare", "");
      } }, "⚙", el("span", { class: "sr-only" }, "Inställningar för kamera, mikrofon och högtalare"));
    // A new device: its track replaces the old one in the connection (and in the stream a reconnection uses).
    const use = async (kind, deviceId) => {
      const fresh = (await navigator.mediaDevices.getUserMedia(kind === "video" ? { video: { deviceId: { exact: deviceId } } }
        : { audio: { deviceId: { exact: deviceId } } })).getTracks()[0];
      const old = thisRoom.stream.getTracks().find(t => t.kind === kind);
      if (old) { fresh.enabled = old.enabled; thisRoom.stream.removeTrack(old); old.stop(); }
      thisRoom.stream.addTrack(fresh);
      const sender = thisRoom.pc && thisRoom.pc.getSenders().find(s => s.track === old || (s.track && s.track.kind === kind));
      if (sender) await sender.replaceTrack(fresh);
      if (kind === "audio") thisRoom.ownLevel = Media.level(thisRoom.stream);
      selfTile.querySelector("video").srcObject = thisRoom.stream;
    };
    camera.addEventListener("change", () => use("video", camera.value).catch(err => say("room-message", "Kameran kunde inte bytas. Välj en annan.", "error")));
    mic.addEventListener("change", () => use("audio", mic.value).catch(err => say("room-message", "Mikrofonen kunde inte bytas. Välj en annan.", "error")));
    speaker.addEventListener("change", () => thisRoom.grid.querySelectorAll("audio").forEach(a => a.setSinkId(speaker.value).catch(() => {})));

    thisRoom.ownLevel = Media.level(thisRoom.stream);
    const levels = new WeakMap();
    const speakingTimer = setInterval(() => {
      if (thisRoom.closed) { clearInterval(speakingTimer); return; }
      const grid = thisRoom.grid;
      mark(selfTile, thisRoom.stream.getAudioTracks().some(t => t.enabled) ? thisRoom.ownLevel() : 0);
      const loud = new Map();
      for (const audio of grid.querySelectorAll(".remote-audio audio")) {
        if (!levels.has(audio)) levels.set(audio, Media.level(audio.srcObject));
        const owner = thisRoom.slots && thisRoom.slots.get(audio.dataset.mid);
        if (owner) loud.set(owner.participant_id, Math.max(loud.get(owner.participant_id) || 0, levels.get(audio)()));
      }
      for (const tile of grid.querySelectorAll(".tile.remote, .tile.phone")) mark(tile, loud.get(tile.dataset.participant) || 0);
      layoutGrid(grid);
    }, 250);
    return el("div", { class: "controls", role: "toolbar", "aria-label": "Mötets kontroller" },
      toggle("mic-toggle", "audio", "Mikrofon på", "Mikrofon av"), toggle("camera-toggle", "video", "Kamera på", "Kamera av"),
      gear, settings);
  }

  // The tiles fill the window, its height as well as its width: for the number of tiles shown, the
  // column count (and so the rows) that gives the largest 4:3 tiles in the space from the grid's top to
  // the window's bottom edge; never wider than the stage, so a phone does not scroll sideways. The CSS
  // grid takes the columns, rows and tile width from here (style.css, .grid[data-cols]).
  const TILE_ASPECT = 4 / 3, TILE_GAP = 8, PAGE_BOTTOM = 16, MIN_HEIGHT = 160;
  function layoutGrid(grid) {
    const count = grid.querySelectorAll(".tile:not([hidden])").length;
    grid.dataset.count = String(count);
    if (!count) return;
    const width = grid.clientWidth;
    const height = Math.max(MIN_HEIGHT, window.innerHeight - (grid.getBoundingClientRect().top + window.scrollY) - PAGE_BOTTOM);
    let best = { cols: 1, rows: count, tile: 0 };
    for (let cols = 1; cols <= count; cols++) {
      const rows = Math.ceil(count / cols);
      const tile = Math.min((width - (cols - 1) * TILE_GAP) / cols, (height - (rows - 1) * TILE_GAP) / rows * TILE_ASPECT);
      if (tile > best.tile) best = { cols, rows, tile };
    }
    grid.dataset.cols = String(best.cols);
    grid.style.setProperty("--cols", String(best.cols));
    grid.style.setProperty("--rows", String(best.rows));
    grid.style.setProperty("--tile-w", Math.floor(best.tile) + "px");
  }

  // A tile is marked while its person speaks (a level above the room's noise), with the loudest
  // level seen kept in data-peak (read by tests).
  function mark(tile, level) {
    tile.classList.toggle("speaking", level > 0.02);
    if (level > Number(tile.dataset.peak || 0)) tile.dataset.peak = level.toFixed(3);
  }

  // Reconnecting. A media instance can die during a meeting; roster then moves the room to another
  // instance when a participant asks to be admitted again. So the page watches its connection and,
  // when it is lost, asks for admission again and renegotiates (a fresh peer connection, at the
  // instance the new admission names), with back-off, for as long as the meeting goes on; it stops
  // when the answer is that the person was removed or the meeting is over. "Lost": the connection
  // failed or closed, or no packet arrived for STALL_MS (browsers call a dead peer "failed" only
  // after ~30 s; media sends RTCP at least every ~1.5 s, so silence means it is gone). The fault
  // test's synthetic client (tests/faults/meeting_clients.py) follows the same rules.
  const STALL_MS = 2000, CONNECT_MS = 10000, BACKOFF_MS = [250, 500, 1000, 2000, 4000];
  const FINAL_REFUSALS = ["ADMIT_REFUSAL_REMOVED", "ADMIT_REFUSAL_FINISHED", "ADMIT_REFUSAL_CANCELLED", "ADMIT_REFUSAL_NOT_REGISTERED",
    "ADMIT_REFUSAL_WRONG_LOGIN_METHOD"];
  const pause = ms => new Promise(resolve => setTimeout(resolve, ms));

  async function connectMedia(thisRoom, admission) {
    const pc = await Media.connect(thisRoom.stream, async (sdp) => (await api("POST", "/meetings/" + thisRoom.id + "/negotiation",
      { join_token: admission.join_token, sdp_offer: sdp })).sdp_answer, thisRoom.onTrack);
    if (thisRoom.closed) { pc.close(); return; }
    thisRoom.pc = pc;
    console.info("svpl: negotiated", thisRoom.id);
    watchConnection(thisRoom, pc);
    nameTiles(thisRoom);
  }

  // Whom each remote tile shows: the gateway joins the media service's slot assignment (the MIDs of
  // this connection's receive slots) with roster's names of the connected. Asked after connecting,
  // on every connection change, and again while a playing tile has no name.
  async function nameTiles(thisRoom) {
    if (thisRoom.closed || !thisRoom.pc) return;
    thisRoom.tilesAsked = Date.now();
    let tiles;
    try { tiles = (await api("GET", "/meetings/" + thisRoom.id + "/tiles")).tiles; }
    catch (err) { return; }  // asked again on the next connection change
    if (thisRoom.closed || room !== thisRoom) return;
    const byMid = new Map(tiles.map(t => [t.mid, t]));
    thisRoom.slots = byMid;  // audio and video MIDs -> whom they carry (the speaking marks use the audio ones)
    for (const video of thisRoom.grid.querySelectorAll(".tile.remote video")) {
      const tile = video.parentElement, shown = byMid.get(video.dataset.mid), name = shown ? shown.full_name : "";
      tile.querySelector(".label").textContent = name || "Deltagare";
      video.setAttribute("aria-label", "Video: " + (name || "deltagare"));
      if (shown) tile.dataset.participant = shown.participant_id; else delete tile.dataset.participant;
      if (name) tile.dataset.name = name; else delete tile.dataset.name;
    }
    showPhoneTiles(thisRoom, tiles);
  }

  // People in by phone (a dial-in caller the coordinator let in): audio only, so no video slot ever
  // plays for them. Each gets a tile of its own, a phone icon and their name, for as long as the
  // gateway's tile list names them as on the phone. The video tiles above are left alone.
  function showPhoneTiles(thisRoom, tiles) {
    const phones = new Map(tiles.filter(t => t.phone).map(t => [t.participant_id, t.full_name]));
    for (const tile of thisRoom.grid.querySelectorAll(".tile.phone")) {
      if (!phones.has(tile.dataset.participant)) tile.remove();
    }
    for (const [participant, name] of phones) {
      let tile = [...thisRoom.grid.querySelectorAll(".tile.phone")].find(t => t.dataset.participant === participant);
      if (!tile) {
        tile = el("div", { class: "tile phone", role: "img", "data-participant": participant },
          el("span", { class: "phone-icon", "aria-hidden": "true" }, "☎"), el("span", { class: "label" }, ""));
        thisRoom.grid.append(tile);
      }
      const label = (name || "Deltagare") + " (telefon)";
      tile.querySelector(".label").textContent = label;
      tile.setAttribute("aria-label", label + ": bara ljud");
      if (name) tile.dataset.name = name; else delete tile.dataset.name;
    }
    layoutGrid(thisRoom.grid);  // at once, not at the next speaking-marks tick: a phone tile came or went
  }

  function watchConnection(thisRoom, pc) {
    const started = Date.now();
    let lastBytes = -1, lastChange = Date.now(), lost = false, timer = null, wasConnected = false;
    const lose = (why) => {
      if (lost) return;
      lost = true;
      clearInterval(timer);
      if (thisRoom.closed || thisRoom.pc !== pc || room !== thisRoom) return;
      console.warn("svpl: connection lost (" + why + "); joining again");
      reconnect(thisRoom);
    };
    pc.addEventListener("connectionstatechange", () => {
      if (["failed", "closed"].includes(pc.connectionState)) lose(pc.connectionState);
    });
    timer = setInterval(async () => {
      if (thisRoom.closed || thisRoom.pc !== pc) { clearInterval(timer); return; }
      wasConnected = wasConnected || pc.connectionState === "connected";
      if (!wasConnected) {  // still setting up: give it CONNECT_MS
        if (Date.now() - started > CONNECT_MS) lose("not connected");
        return;
      }
      let bytes = 0;
      try { (await pc.getStats()).forEach(s => { if (s.type === "transport") bytes += s.bytesReceived || 0; }); }
      catch (err) { return; }
      if (bytes !== lastBytes) { lastBytes = bytes; lastChange = Date.now(); }
      else if (Date.now() - lastChange > STALL_MS) lose("no packets");
    }, 250);
  }

  async function reconnect(thisRoom) {
    const current = () => !thisRoom.closed && room === thisRoom;
    say(thisRoom.msg, "Anslutningen till mötet bröts. Ansluter igen …", "error");
    thisRoom.msg.dataset.outcome = "reconnecting";
    if (thisRoom.pc) thisRoom.pc.close();
    thisRoom.grid.querySelectorAll(".tile.remote, .tile.phone, .remote-audio").forEach(n => n.remove());
    for (let attempt = 0; current(); attempt++) {
      if (attempt) await pause(BACKOFF_MS[Math.min(attempt - 1, BACKOFF_MS.length - 1)]);
      if (!current()) return;
      let admission;
      try { admission = await api("POST", "/meetings/" + thisRoom.id + "/admission"); }
      catch (err) {
        const why = err instanceof SVPL.ApiError ? (err.problem.reason || "") : "";
        if (!current()) return;
        if (FINAL_REFUSALS.includes(why) || (err instanceof SVPL.ApiError && err.status === 401)) {
          finish(thisRoom.id, why === "ADMIT_REFUSAL_REMOVED" ? "Du har tagits bort från mötet av samordnaren." :
            why === "ADMIT_REFUSAL_FINISHED" ? "Mötet är avslutat." : "Du kan inte ansluta: " + errorText(err));
          return;
        }
        continue;  // unavailable, busy, network: try again
      }
      try { await connectMedia(thisRoom, admission); }
      catch (err) { console.warn("svpl: reconnecting failed; trying again", err); continue; }
      if (current()) {
        say(thisRoom.msg, "", "info");
        delete thisRoom.msg.dataset.outcome;
        thisRoom.msg.dataset.reconnects = String(Number(thisRoom.msg.dataset.reconnects || 0) + 1);  // read by tests
      }
      return;
    }
  }

  function openEvents(thisRoom, agenda, roster) {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/meetings/" + thisRoom.id + "/events");
    thisRoom.ws = ws;
    ws.addEventListener("message", async (e) => {
      if (thisRoom.closed) return;
      thisRoom.wsRetry = 0;
      const event = JSON.parse(e.data);
      if (event.error) { if (!thisRoom.closed) say("room-message", event.error.detail, "error"); return; }
      if (event.connected) setPeople(event.connected);
      if (event.agenda) showAgenda(thisRoom, agenda, event.agenda);
      if (event.kind === "MEETING_EVENT_KIND_PARTICIPANT_REMOVED" && event.removed_participant_id === thisRoom.participantId) {
        finish(thisRoom.id, "Du har tagits bort från mötet av samordnaren."); return;
      }
      if (event.meeting && FINAL.includes(event.meeting.state)) {
        finish(thisRoom.id, event.meeting.state === "MEETING_STATE_ABORTED" ? "Mötet är avbrutet och avslutat." : "Mötet är avslutat."); return;
      }
      if (["MEETING_EVENT_KIND_SNAPSHOT", "MEETING_EVENT_KIND_CONNECTIONS_CHANGED", "MEETING_EVENT_KIND_PARTICIPANT_REMOVED"].includes(event.kind)) {
        nameTiles(thisRoom);
      }
      if (roster && ["MEETING_EVENT_KIND_SNAPSHOT", "MEETING_EVENT_KIND_CONNECTIONS_CHANGED", "MEETING_EVENT_KIND_PARTICIPANTS_CHANGED", "MEETING_EVENT_KIND_PARTICIPANT_REMOVED"].includes(event.kind)) {
        showRoster(thisRoom, roster);
      }
    });
    ws.addEventListener("close", (e) => {
      if (thisRoom.closed || room !== thisRoom) return;
      if (e.code < 4000) {  // the connection dropped (network, gateway restart): follow the meeting again
        thisRoom.wsRetry = Math.min(10000, (thisRoom.wsRetry || 500) * 2);
        setTimeout(() => { if (!thisRoom.closed && room === thisRoom) openEvents(thisRoom, agenda, roster); }, thisRoom.wsRetry);
        return;
      }
      if (e.code === 4403 || e.code === 4409) finish(thisRoom.id, e.reason && /remov|tagits bort/i.test(e.reason) ? "Du har tagits bort från mötet av samordnaren." : "Mötet är avslutat.");
    });
  }

  // A registered person connected by phone, as the people panel marks them: "☎ Telefon" and the
  // phone connection's label (the number's last two digits only, e.g. "slutar på …12").
  function phoneMark(rec, p) {
    const phone = (rec.by_phone || []).find(c => c.participant_id === p.participant_id);
    if (!phone) return "";
    const ending = (phone.label || "").replace(/^Telefon,?\s*/, "");
    return el("span", { class: "by-phone", "data-phone": "true" }, el("span", { "aria-hidden": "true" }, "☎ "),
      "Telefon" + (ending ? ", " + ending : ""), " ");
  }

  // The coordinator's roster in the room: who is connected (and physically present with the
  // patient, changeable here), who is registered but not connected, unidentified connections (a
  // phone caller) to identify as a registered person or remove; removing and aborting are confirmed.
  async function showRoster(thisRoom, section) {
    let rec;
    try { rec = await api("GET", "/meetings/" + thisRoom.id + "/reconciliation"); }
    catch (err) { return; }
    const refresh = () => showRoster(thisRoom, section);
    const roomMsg = document.getElementById("room-message");
    const remove = (body, label) => el("button", { type: "button", class: "danger remove", "aria-label": "Ta bort " + label,
      onclick: async () => {
        if (!await SVPL.confirmAction("Ta bort " + label + " från mötet?", "Den som tas bort kopplas ner och kan inte ansluta igen till det här mötet.", "Ta bort")) return;
        if (await act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/removals", { ...body, reason: "Ombedd att lämna av samordnaren" }))) refresh();
      } }, "Ta bort");
    const present = p => el("label", { class: "inline" }, el("input", { type: "checkbox", class: "presence", checked: Boolean(p.physically_present),
      onchange: async (e) => {
        if (await act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/physical-presence",
          { participant_id: p.participant_id, physically_present: e.target.checked }))) refresh();
        else e.target.checked = !e.target.checked;
      } }), " hos patienten", el("span", { class: "sr-only" }, " (" + p.full_name + ")"));
    const list = el("ul", { class: "plain", id: "roster-connected" });
    for (const p of rec.registered_and_connected) {
      list.append(el("li", { "data-participant": p.participant_id, "data-present": p.physically_present ? "true" : "false" },
        p.full_name + " (" + (ROLES[p.role] || "") + ") ", phoneMark(rec, p), present(p), " ",
        p.participant_id === thisRoom.participantId ? "" : remove({ participant_id: p.participant_id }, p.full_name)));
    }
    rec.connected_not_identified.forEach((c, n) => {
      const who = el("select", { id: "identify-as-" + n }, ...rec.registered_not_connected.map(p =>
        el("option", { value: p.participant_id }, p.full_name + " (" + (ROLES[p.role] || "") + ")")));
      list.append(el("li", { class: "unidentified", "data-connection": c.connection_id }, "Oidentifierad: " + (c.label || c.connection_id) + " ",
        who.options.length ? el("span", {}, el("label", { for: who.id, class: "inline" }, "Är"), " ", who, " ",
          el("button", { type: "button", class: "secondary identify", onclick: async () => {
            if (await act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/identifications",
              { connection_id: c.connection_id, participant_id: who.value }), "Anslutningen är identifierad som " + who.selectedOptions[0].textContent + ".")) refresh();
          } }, "Identifiera"), " ") : "",
        remove({ connection_id: c.connection_id }, "oidentifierad anslutning")));
    });
    const missing = el("ul", { class: "plain", id: "roster-missing" },
      ...rec.registered_not_connected.map(p => el("li", {}, p.full_name + " (" + (ROLES[p.role] || "") + ")",
        p.physically_present ? " – fysiskt hos patienten" : "")));
    const abort = el("button", { type: "button", id: "abort-meeting", class: "danger", onclick: async () => {
      if (!await SVPL.confirmAction("Avbryt mötet?", "Mötet avslutas för alla och ingen kan ansluta igen. Gör det när en person inte kan identifieras.", "Avbryt mötet")) return;
      await act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/abort", { reason: "En deltagare kunde inte identifieras" }));
    } }, "Avbryt mötet");
    section.replaceChildren(el("h2", {}, "Registrerade och anslutna"), el("h3", {}, "Anslutna"), list,
      el("h3", {}, "Registrerade, inte anslutna"), missing, el("p", {}, abort));
  }

  // What the coordinator says or asks at each step, in the routine's words.
  const STEP_GUIDANCE = {
    AGENDA_STEP_SEE_AND_HEAR: ["Kontrollera att alla ser varandra och att ljudet är bra: fråga, ser och hör alla varandra?",
      "Kamera, mikrofon och högtalare ställs in via kugghjulet."],
    AGENDA_STEP_PRIVATE_AND_NOT_RECORDED: ["Påminn om att mötet ska genomföras på en plats där inga andra än deltagarna kan se och höra vad som avhandlas.",
      "Påminn om att mötet inte får spelas in."],
    AGENDA_STEP_WELCOME: ["Hälsa alla välkomna."],
    AGENDA_STEP_PURPOSE_AND_CONFIDENTIALITY: ["Berätta om mötets syfte, tystnadsplikt och sekretess."],
    AGENDA_STEP_INDIVIDUAL_ON_REASON: ["Fråga den enskilde om hen vill berätta varför mötet hålls; annars berättar samordnaren."],
    AGENDA_STEP_INTRODUCTIONS: ["Alla presenterar sig: den enskilde och närstående först, sedan övriga."],
    AGENDA_STEP_QUESTIONS: ["Ta upp frågorna när alla har fått ordet."],
    AGENDA_STEP_SUMMARY: ["Sammanfatta det ni har kommit överens om och skriv ner det."],
  };

  function showAgenda(thisRoom, section, agenda) {
    const children = [el("h2", {}, "Dagordning"), el("p", { id: "agenda-step" }, "Nu: ", el("strong", {}, STEPS[agenda.step] || agenda.step))];
    const guidance = STEP_GUIDANCE[agenda.step];
    if (guidance) children.push(el("ul", { id: "agenda-guidance" }, ...guidance.map(g => el("li", {}, g))));
    const roomMsg = document.getElementById("room-message");
    const order = el("ol", { id: "speaking-order" }, ...(agenda.speaking_order || []).map(p =>
      el("li", { class: p.participant_id === agenda.current_speaker_participant_id ? "current" : "" }, p.full_name,
        thisRoom.coordinator ? el("button", { type: "button", class: "secondary", "aria-label": "Ge ordet till " + p.full_name, onclick: () =>
          act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/agenda/speaker", { participant_id: p.participant_id })) }, "Ge ordet") : "")));
    children.push(el("h3", {}, "Talarordning"), order);
    if (thisRoom.coordinator && agenda.step !== "AGENDA_STEP_DONE") {
      children.push(el("p", {}, el("button", { type: "button", id: "agenda-next", onclick: () =>
        act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/agenda/advance", { from_step: agenda.step })) }, "Nästa punkt")));
    }
    // The summary is written at the summary step (the coordinator; what they type is kept while the
    // agenda changes around it) and read by everyone once it is recorded.
    if (thisRoom.coordinator && agenda.step === "AGENDA_STEP_SUMMARY") {
      // What the person has typed and not saved is kept; an untouched field shows the recorded summary.
      const typed = document.getElementById("summary");
      const edited = typed && typed.value !== typed.dataset.recorded;
      const summary = el("textarea", { id: "summary", rows: 4, "data-recorded": agenda.summary || "" }, edited ? typed.value : (agenda.summary || ""));
      children.push(el("label", { for: "summary" }, "Sammanfattning av överenskommelser"), summary,
        el("p", {}, el("button", { type: "button", id: "summary-save", class: "secondary", onclick: () =>
          act(roomMsg, () => api("POST", "/meetings/" + thisRoom.id + "/agenda/summary", { summary: summary.value }), "Sammanfattningen är sparad.") }, "Spara sammanfattningen")));
    } else if (agenda.summary) {
      children.push(el("h3", {}, "Sammanfattning av överenskommelser"), el("p", { id: "summary-text", class: "pre" }, agenda.summary));
    }
    if (document.activeElement && section.contains(document.activeElement) && document.activeElement.id === "summary") return;
    section.replaceChildren(...children);
  }

  document.getElementById("leave").addEventListener("click", async () => {
    if (!room) return;
    const current = room;
    if (current.coordinator) {
      if (!await SVPL.confirmAction("Lämna och avsluta mötet?", "Mötet avslutas för alla. Ingen kan stanna kvar eller ansluta igen.", "Lämna och avsluta mötet")) return;
      try { await api("POST", "/meetings/" + current.id + "/end"); }
      catch (err) { say("room-message", errorText(err), "error"); return; }
      finish(current.id, "Mötet är avslutat.");
    } else {
      finish(current.id, "Du har lämnat mötet.");
    }
  });
  document.getElementById("people-button").addEventListener("click", () => {
    const panel = document.getElementById("people-panel");
    panel.hidden = !panel.hidden;
    document.getElementById("people-button").setAttribute("aria-expanded", String(!panel.hidden));
  });
  document.addEventListener("keydown", e => {
    if (e.key === "Escape") { document.getElementById("people-panel").hidden = true; document.getElementById("people-button").setAttribute("aria-expanded", "false"); }
  });

  // ------------------------------------------------------------------ test room
  // The test room: the person sees and hears themselves back from the media service, with a
  // microphone level meter and the connection's result in words; the routine's advice beside it.
  async function testView() {
    leaveRoom();
    const msg = message("test-message");
    const self = el("video", { id: "test-self", autoplay: true, playsinline: true, class: "selfview", "aria-label": "Din egen bild" });
    self.muted = true;
    const echo = el("video", { id: "test-echo", autoplay: true, playsinline: true, class: "selfview", "aria-label": "Din bild och ditt ljud tillbaka från mötestjänsten" });
    const start = el("button", { type: "button", id: "test-start" }, "Starta testet");
    const stop = el("button", { type: "button", id: "test-stop", class: "secondary", hidden: true }, "Avsluta testet");
    const meter = el("meter", { id: "test-level", class: "meter", min: 0, max: 0.3, low: 0.02, high: 0.25, optimum: 0.1, value: 0 });
    const result = el("p", { id: "test-result", role: "status", "aria-live": "polite" });
    view("Testrum", el("p", {}, "Här kan du kontrollera kamera, mikrofon och nätverk före ett möte. Du ser och hör dig själv via mötestjänsten."),
      el("ul", { id: "test-advice" }, el("li", {}, "Använd helst webbläsaren Chrome."),
        el("li", {}, "Använd headset om du sitter ensam, så undviker du eko."),
        el("li", {}, "Trådbundet nätverk är bäst; testa wifi först och undvik att dela mobilt bredband från telefonen."),
        el("li", {}, "Patientens eget wifi används bara i nödfall.")),
      msg, el("p", {}, start, " ", stop), el("label", { for: "test-level" }, "Mikrofonens nivå"), meter, result,
      el("div", { class: "grid" }, el("div", { class: "tile" }, self, el("span", { class: "label" }, "Din kamera")),
        el("div", { class: "tile" }, echo, el("span", { class: "label" }, "Tillbaka från tjänsten"))));
    let timer = 0;
    const end = () => { clearInterval(timer); leaveRoom(); start.hidden = false; stop.hidden = true; meter.value = 0; };
    stop.addEventListener("click", () => { end(); say(msg, "Testet är avslutat.", "info"); });
    start.addEventListener("click", async () => {
      try {
        const stream = await Media.localStream();
        self.srcObject = stream;
        const back = new MediaStream();
        const pc = await Media.testRoom(stream, async sdp => (await api("POST", "/test-room/negotiation", { sdp_offer: sdp })).sdp_answer,
          (track) => { back.addTrack(track); echo.srcObject = back; if (track.kind === "video") Media.countFrames(echo); });
        room = { id: "", pc, stream, closed: false, tileTimer: 0 };
        const thisRoom = room;
        start.hidden = true;
        stop.hidden = false;
        say(msg, "Testet pågår. Säg något: du hör dig själv strax efteråt.", "ok");
        const level = Media.level(stream);
        timer = setInterval(() => {
          if (thisRoom.closed) { clearInterval(timer); return; }
          meter.value = level();
          meter.dataset.peak = String(Math.max(Number(meter.dataset.peak || 0), meter.value));
        }, 100);
        await new Promise(r => setTimeout(r, 3000));  // let the connection settle before measuring it
        if (thisRoom.closed) return;
        const r = await Media.connectionResult(pc, 3000);
        result.dataset.quality = r.good ? "bra" : "svag";
        result.textContent = (r.good ? "Anslutningen är bra" : "Anslutningen är svag") +
          ` (svarstid ${r.rttMs === null ? "okänd" : r.rttMs + " ms"}, förlust ${Math.round(r.loss * 100)} %, ${r.kbps} kbit/s).` +
          (r.good ? "" : " Prova trådbundet nätverk, eller flytta närmare wifi-punkten.");
      } catch (err) { end(); say(msg, err instanceof SVPL.ApiError ? errorText(err) : "Kameran eller mikrofonen kunde inte startas. Kontrollera att webbläsaren får använda dem.", "error"); }
    });
  }

  // ------------------------------------------------------------------ report a problem
  // "Mötes-ID" is what the person sees: the dial-in meeting ID (digits) of one of their own meetings,
  // sent as that meeting's id; anything else is sent as it is (support answers the same for a meeting
  // that does not exist and one the person is not in).
  async function meetingIdFor(value) {
    const digits = value.replace(/[\s-]/g, "");
    if (!/^\d+$/.test(digits)) return value;
    try {
      const meetings = await allPages("/meetings", "meetings");
      const found = meetings.find(m => m.dial_in_code === digits);
      return found ? found.meeting_id : value;
    } catch (err) { return value; }
  }
  function reportView(query) {
    const msg = message("report-message");
    const kind = el("select", { id: "problem-kind" }, ...Object.entries(PROBLEMS).map(([k, v]) => el("option", { value: k }, v)));
    const form = el("form", { id: "report-form", class: "card" },
      el("label", { for: "problem-kind" }, "Vad gäller problemet?"), kind,
      el("label", { for: "problem-text" }, "Beskriv problemet"), el("textarea", { id: "problem-text", rows: 5, required: true }),
      el("label", { for: "problem-meeting" }, "Mötes-ID (siffrorna i inbjudan, om det gäller ett möte)"), el("input", { id: "problem-meeting", value: query.get("meeting") || "" }),
      el("label", { for: "problem-contact" }, "Hur når vi dig? (telefon)"), el("input", { id: "problem-contact" }),
      el("label", {}, el("input", { type: "checkbox", id: "problem-rebook" }), " Be samordnaren överväga att boka om mötet"),
      el("p", {}, el("button", { type: "submit", id: "report-submit" }, "Skicka rapporten")));
    const result = el("section", { id: "report-result", class: "card", hidden: true, "aria-live": "polite" });
    view("Rapportera ett problem", el("p", {}, "Alla fel ska rapporteras. Kontrollera först anslutning, ljud och bild. Du kan också kontakta mötets samordnare eller ringa in med mötes-ID."),
      msg, form, result);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const { ticket } = await api("POST", "/support/reports", { problem: kind.value,
          description: document.getElementById("problem-text").value.trim(),
          meeting_id: await meetingIdFor(document.getElementById("problem-meeting").value.trim()),
          contact: document.getElementById("problem-contact").value.trim(), request_rebook: document.getElementById("problem-rebook").checked,
          idempotency_key: crypto.randomUUID() });
        const queue = (ticket.routing && ticket.routing.queue) || {};
        result.replaceChildren(el("h2", {}, "Rapporten är skickad"), el("p", {}, "Ärende: ", el("strong", { id: "report-number" }, ticket.number || ticket.ticket_id)),
          el("p", { id: "report-queue" }, "Den har gått till: ", el("strong", {}, queue.name || "")),
          ticket.meeting_id ? el("p", { id: "report-meeting", "data-meeting": ticket.meeting_id }, "Rapporten gäller mötet med mötes-ID ",
            document.getElementById("problem-meeting").value.trim(), ".") : "",
          queue.contact_text ? el("p", {}, queue.contact_text) : "",
          el("p", {}, el("a", { href: "/desk/#/mine" }, "Följ dina felanmälningar")));
        result.hidden = false;
        form.hidden = true;
      } catch (err) { say(msg, errorText(err), "error"); }
    });
  }

  // ------------------------------------------------------------------ routing
  async function route() {
    const [path, q] = (location.hash.slice(1) || "/").split("?");
    const query = new URLSearchParams(q || "");
    const parts = path.split("/").filter(Boolean);
    if (room && !(parts[0] === "room" && parts[1] === room.id)) leaveRoom();
    // A support desk member's start page is their desk's queue.
    if (!parts.length && (me.roles || []).includes("support_desk") && !isCoordinator()) { location.replace("/desk/"); return; }
    if (!parts.length) return meetingsView();
    if (parts[0] === "book") return bookView();
    if (parts[0] === "meeting" && parts[1]) return meetingView(parts[1]);
    if (parts[0] === "room" && parts[1]) return roomView(parts[1], false);
    if (parts[0] === "test") return testView();
    if (parts[0] === "report") return reportView(query);
    return meetingsView();
  }

  (async () => {
    try { me = await api("GET", "/session"); }
    catch (err) { location.href = "/"; return; }
    // An expired session sends the person to the login page, except in a meeting, which
    // goes on (media needs no session once joined); the next page change logs in again.
    SVPL.onUnauthenticated = () => { if (!room) location.href = "/"; };
    document.getElementById("whoami").textContent = me.name;
    document.getElementById("nav-book").hidden = !isCoordinator();
    document.getElementById("logout").addEventListener("click", async () => {
      try { await api("POST", "/auth/logout"); } finally { location.href = "/"; }
    });
    window.addEventListener("hashchange", route);
    route();
  })();
})();
