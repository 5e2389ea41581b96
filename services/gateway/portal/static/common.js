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
  // Every refusal and error the API can return, as a Swedish sentence a person can act on: by the
  // problem's reason (google.rpc.ErrorInfo from the services, or the gateway's own), else by the
  // field it names, else by its HTTP status. The one place the portal turns problems into words;
  // server details (often English, written for developers) are never shown.
  const REASONS = {
    ADMISSION_MOVED: "Mötesrummet har flyttats till en annan server. Sidan ansluter igen; om inte, klicka på Försök igen.",
    ALREADY_TAKEN: "Någon annan har redan tagit ärendet. Ladda om kön och välj ett annat ärende.",
    CLIENT_CERTIFICATE_NOT_VERIFIED: "SITHS-kortets certifikat kunde inte kontrolleras. Sätt i kortet igen, stäng webbläsaren och försök på nytt; hjälper det inte, kontakta IT-supporten.",
    NOT_IDENTIFIED: "Samordnaren har inte identifierat den som ringer in ännu.",
    TOO_MANY_REPORTS: "Många felanmälningar har skickats härifrån på kort tid. Vänta en stund och försök igen, eller ring supporten.",
    ADMIT_REFUSAL_NOT_REGISTERED: "Du är inte registrerad som deltagare i det här mötet. Kontakta mötets samordnare.",
    ADMIT_REFUSAL_WRONG_LOGIN_METHOD: "Du har loggat in på ett sätt som inte är tillåtet för dig i det här mötet. Logga ut och logga in med den metod som står i inbjudan.",
    ADMIT_REFUSAL_REMOVED: "Du har tagits bort från mötet av samordnaren och kan inte ansluta igen.",
    ADMIT_REFUSAL_NOT_STARTED: "Mötet har inte startat ännu. Vänta tills samordnaren startar det och försök igen.",
    ADMIT_REFUSAL_FINISHED: "Mötet är avslutat. Det går inte att ansluta igen.",
    ADMIT_REFUSAL_CANCELLED: "Mötet är inställt. Det går inte att ansluta.",
    MEETING_SCHEDULED: "Mötet är inte öppnat ännu.", MEETING_OPEN: "Mötet är öppnat men inte startat ännu.",
    MEETING_LIVE: "Det går inte medan mötet pågår.",
    MEETING_ENDED: "Mötet är avslutat. Det går inte att ändra något i det längre.",
    MEETING_ABORTED: "Mötet är avbrutet. Det går inte att ändra något i det längre.",
    MEETING_CANCELLED: "Mötet är inställt. Det går inte att ändra något i det längre.",
    NOT_MEETING_COORDINATOR: "Bara mötets samordnare får göra detta.",
    NOT_BOOKING_COORDINATOR: "Bara samordnaren som bokade mötet får göra detta.",
    NOT_BOOKING_READER: "Du har inte behörighet att se den här bokningen.",
    NOT_UNIT_STAFF: "Du hör inte till den bokande enheten.",
    NOT_TASK_OWNER: "Uppgiften är en annan samordnares.",
    NOT_A_PARTICIPANT: "Du är inte deltagare i det här mötet.",
    NOT_ADMITTED: "Anslut till mötet först.", NOT_JOINED: "Anslut till mötet först.",
    NOT_REGISTERED_REGION_STAFF: "Bara registrerad regionpersonal kan bli medsamordnare. Registrera personen först.",
    ALREADY_REGISTERED: "Personen är redan registrerad i mötet.",
    PATIENT_ALREADY_REGISTERED: "Mötet har redan en patient registrerad.",
    PARTICIPANT_REMOVED: "Personen har tagits bort från mötet och kan inte registreras igen.",
    CANNOT_REMOVE_COORDINATOR: "Mötets samordnare kan inte tas bort. Avsluta mötet i stället.",
    ALREADY_IDENTIFIED: "Anslutningen är redan kopplad till en annan deltagare.",
    ALREADY_CONNECTED: "Personen är redan ansluten till mötet.",
    ALREADY_CONNECTED_BY_PHONE: "Du är redan ansluten till mötet per telefon. Lägg på telefonen först och anslut sedan här.",
    ALREADY_CONNECTED_BY_BROWSER: "Personen är redan ansluten till mötet via webbläsaren. Be personen lämna mötet i webbläsaren först, eller ta bort telefonanslutningen.",
    PERSONAL_CODES_LOCKED: "För många felaktiga personliga koder har angetts i mötet. Den som ringer in får vänta på att samordnaren släpper in hen.",
    PERSONAL_CODES_OFF: "Personliga koder för uppringning används inte i den här tjänsten.",
    AGENDA_STEP_CHANGED: "Dagordningen har redan gått vidare. Sidan visar nu aktuell punkt.",
    AGENDA_DONE: "Dagordningen är redan klar.",
    AGENDA_NOT_AT_SUMMARY: "Sammanfattningen skrivs vid punkten Sammanfattning. Gå vidare i dagordningen dit först.",
    BOOKING_IN_PAST: "Mötet har redan varit och kan inte flyttas.",
    BOOKING_NOT_ACTIVE: "Bokningen är inte aktiv (avbokad eller avslutad).",
    MEETING_PENDING: "Mötesrummet skapas fortfarande. Försök igen om en stund.",
    TEST_ROOM_RATE: "För många försök med testrummet. Vänta en stund och försök igen.",
    AT_CAPACITY: "Mötestjänsten är fullt belastad just nu. Försök igen om en stund.",
    DRAINING: "Mötestjänsten startas om just nu. Försök igen om en stund.",
    ROOM_CLOSED: "Mötesrummet är stängt.", ROOM_NOT_OPEN: "Mötesrummet är inte öppnat ännu.",
    SESSION_EXPIRED: "Din inloggning har gått ut. Logga in igen.", LOGGED_OUT: "Du är utloggad. Logga in igen.",
    CSRF: "Sidan är för gammal. Ladda om sidan och försök igen.",
    BANKID_NOT_CONFIGURED: "Inloggning med BankID är inte konfigurerad här. Logga in på ett annat sätt (i demon: som en demoperson nedan).",
    E_SERVICES_1177_NOT_CONFIGURED: "Inloggning via 1177 är inte konfigurerad här. Logga in på ett annat sätt (i demon: som en demoperson nedan).",
    DEVELOPMENT_LOGIN_OFF: "Testinloggningen är avstängd här.",
    TOO_MANY_STREAMS: "Mötet är öppet i för många flikar. Stäng en flik och försök igen.",
    REVOKED: "Mötet är avslutat eller du har tagits bort: det går inte att ansluta.",
    ORDER_COMPLETE: "BankID-inloggningen är redan klar. Ladda om sidan.", ORDER_FAILED: "BankID-inloggningen misslyckades. Börja om.",
    ORDER_PENDING: "BankID-inloggningen pågår fortfarande.", NO_ORDER: "Ingen BankID-inloggning pågår i den här webbläsaren. Börja om.",
    ALREADY_IN_PROGRESS: "En BankID-inloggning pågår redan för det här personnumret. Avbryt den i BankID-appen och försök igen.",
    UNKNOWN_STATE: "Inloggningen via 1177 hann gå ut. Börja om.", STATE: "Svaret från 1177 hör inte till den här webbläsaren. Börja om.",
    UNTRUSTED_PROXY: "SITHS-inloggning måste gå via regionens nätverk. Kontakta IT-supporten.",
    NO_CLIENT_CERTIFICATE: "Inget SITHS-kort hittades. Sätt i tjänstekortet och försök igen.",
    NOT_IN_DIRECTORY: "Ditt HSA-id finns inte i HSA-katalogen. Kontakta IT-supporten.",
    ORIGIN: "Sidan måste öppnas från mötesportalen. Ladda om sidan.",
    WRONG_MEETING: "Anslutningen hör till ett annat möte. Gå till mötet igen.", WRONG_INSTANCE: "Mötet har flyttats. Anslut igen.",
    ADMISSION_UNKNOWN: "Anslutningen har gått ut. Anslut till mötet igen.", ADMISSION_NOT_YOURS: "Anslutningen hör till någon annan. Anslut till mötet igen.",
    ROSTER_REFUSED: "Mötestjänsten tog inte emot ändringen. Ladda om sidan och försök igen.",
    MEDIA_REFUSED: "Mötesrummet kunde inte öppnas just nu. Försök igen om en stund.",
    CONFLICT: "Bokningen ändrades samtidigt. Ladda om sidan och försök igen.",
    BOOKING_IN_FUTURE: "Besöket har inte börjat ännu.",
    COORDINATOR_ROLE: "Samordnarens roll ändras inte här. Gör i stället någon till medsamordnare.",
    TICKET_CLOSED: "Ärendet är stängt.", NO_ESCALATION: "Det här ärendet kan inte skickas vidare härifrån.",
    INVALID_TRANSITION: "Ärendet kan inte få det läget nu.", NOT_OWN_REPORT: "Du kan bara se dina egna rapporter.",
  };
  const FIELDS = {
    patient_personnummer: "Kontrollera patientens personnummer (ÅÅÅÅMMDD-NNNN).",
    "person.id": "Kontrollera id:t: HSA-id för personal (SE…), personnummer (ÅÅÅÅMMDD-NNNN) för övriga.",
    "person.id_kind": "Kontrollera id:t: närstående och patienter anges med personnummer, personal med HSA-id.",
    booking_unit_hsa_id: "Kontrollera den bokande enhetens HSA-id (SE…).", hsa_id: "Kontrollera HSA-id:t (SE…).",
    start: "Välj en starttid som ligger i framtiden.", duration_minutes: "Ange mötets längd i minuter.",
    care_service: "Välj en vårdtjänst i listan.", contact_type: "Välj en kontakttyp i listan.",
    channel: "E-post används aldrig för mötesuppgifter. Välj säker meddelandehantering eller telefon.",
    address: "Ange partens adress: funktionsbrevlåda i Cosmic Link eller telefonnummer.",
    name: "Skriv minst två bokstäver av namnet.", full_name: "Ange personens fullständiga namn.",
    role: "Välj en roll.", participant_id: "Deltagaren finns inte (längre) i mötet. Ladda om sidan.",
    connection_id: "Anslutningen finns inte längre i mötet.", attendee_names: "Ange namnen på de som deltar.",
    care_provider: "Ange vilken vårdgivares uppgifter prövningen gäller.", summary: "Skriv sammanfattningen.",
    description: "Beskriv problemet.", meeting_id: "Kontrollera mötes-ID:t.", dial_in_code: "Kontrollera mötes-ID:t (siffrorna).",
    parties: "Ange minst en part att bjuda in.", resolution: "Skriv vad som gjordes med önskemålet.",
    request_id: "Önskemålet finns inte (längre). Ladda om sidan.", invitation_id: "Inbjudan finns inte.", reason: "Skriv en kortare anledning.",
  };
  const STATUSES = {
    400: "Uppgifterna kunde inte tas emot. Kontrollera fälten och försök igen.",
    401: "Du är inte inloggad längre. Logga in igen.",
    403: "Du har inte behörighet att göra detta.",
    404: "Det du söker finns inte (eller så saknar du behörighet att se det).",
    409: "Det gick inte i mötets nuvarande läge. Ladda om sidan och försök igen.",
    413: "Uppgifterna är för stora.", 429: "För många försök. Vänta en stund och försök igen.",
  };
  function fieldText(field) {
    const plain = String(field || "").replace(/\[\d+\]/g, "").replace(/^body\./, "");
    return FIELDS[plain] || FIELDS[plain.split(".").pop()] || "";
  }
  function errorText(err) {
    if (!(err instanceof ApiError)) return "Ingen kontakt med mötestjänsten. Kontrollera nätverket och försök igen.";
    if (REASONS[err.reason]) return REASONS[err.reason];
    const fields = [...new Set((err.problem.errors || []).map(e => fieldText(e.field)).filter(Boolean))];
    if (fields.length) return fields.join(" ");
    if (err.status >= 500) return "Tjänsten svarar inte just nu. Försök igen om en stund.";
    return STATUSES[err.status] || "Något gick fel. Försök igen.";
  }
  // Ask before something that cannot be undone: a modal dialog (focus moves in, Escape cancels).
  // Resolves true when the person confirms.
  function confirmAction(question, explanation, confirmLabel) {
    return new Promise(resolve => {
      const dialog = el("dialog", { id: "confirm-dialog", "aria-labelledby": "confirm-h", "aria-describedby": "confirm-text" },
        el("h2", { id: "confirm-h" }, question), el("p", { id: "confirm-text" }, explanation || ""),
        el("p", {}, el("button", { type: "button", id: "confirm-yes", class: "danger" }, confirmLabel),
          " ", el("button", { type: "button", id: "confirm-no", class: "secondary" }, "Avbryt")));
      const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
      dialog.querySelector("#confirm-yes").addEventListener("click", () => done(true));
      dialog.querySelector("#confirm-no").addEventListener("click", () => done(false));
      dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(false); });
      document.body.append(dialog);
      dialog.showModal();
      dialog.querySelector("#confirm-no").focus();
    });
  }
  const swedishTime = new Intl.DateTimeFormat("sv-SE", {
    timeZone: "Europe/Stockholm", dateStyle: "medium", timeStyle: "short" });
  function when(iso) { return iso ? swedishTime.format(new Date(iso)) : ""; }
  const REGION = (location.pathname.match(/^\/auth\/([a-z0-9-]+)\//) || [])[1] || document.body.dataset.region || "rjl";
  // Set by a page: what to do when the session has ended (e.g. go to the login page).
  // Every item of a listing, page after page (the API's one paging scheme: `page_token` in, the
  // answer's `page.next_page_token` out, empty on the last page), so a long list is never cut at its
  // first page. At most MAX_PAGES pages (a loop that never ends is not a list).
  const MAX_PAGES = 100;
  async function allPages(path, key) {
    const items = [];
    let token = "";
    for (let n = 0; n < MAX_PAGES; n++) {
      const answer = await api("GET", token ? path + (path.includes("?") ? "&" : "?") + "page_token=" + encodeURIComponent(token) : path);
      items.push(...(answer[key] || []));
      token = (answer.page && answer.page.next_page_token) || "";
      if (!token) break;
    }
    return items;
  }

  // A meeting's state as people read it (the portal's lists, the support desk's evidence).
  const MEETING_STATES = { MEETING_STATE_SCHEDULED: "Planerat", MEETING_STATE_OPEN: "Öppnat", MEETING_STATE_LIVE: "Pågår",
    MEETING_STATE_ENDED: "Avslutat", MEETING_STATE_ABORTED: "Avbrutet", MEETING_STATE_CANCELLED: "Inställt" };
  return { api, allPages, ApiError, el, say, errorText, confirmAction, when, cookie, REGION, MEETING_STATES, onUnauthenticated: null };
})();
