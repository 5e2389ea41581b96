// The support pages' Swedish labels (the portal's report form, the desk, the public report page).
"use strict";
const SVPL_SUPPORT = Object.freeze({
  // The routine's table of problem kinds, in its own words.
  PROBLEMS: {
    PROBLEM_KIND_CONNECTION: "Anslutning, bild eller ljud i ett möte",
    PROBLEM_KIND_TECHNICAL: "Tekniskt fel (når inte Extern åtkomst eller mötestjänsten trots god uppkoppling, skrivarfel m.m.)",
    PROBLEM_KIND_USAGE: "Användning, process och rutiner",
    PROBLEM_KIND_NETWORK_PASSWORD: "Lösenord till regionens nätverk / Extern åtkomst (steget efter SITHS-kortet)",
    PROBLEM_KIND_MESSAGING_PASSWORD: "Lösenord till Cosmic Link / Messenger",
    PROBLEM_KIND_MESSAGING_SYSTEM_FAULT: "Systemfel inne i Cosmic Link (behörigheter, Link låser sig m.m.)",
    PROBLEM_KIND_OTHER: "Annat",
  },
  REPORTERS: {
    REPORTER_KIND_MUNICIPALITY_STAFF: "Anställd i en kommun",
    REPORTER_KIND_REGION_STAFF: "Anställd i regionen",
    REPORTER_KIND_CITIZEN: "Invånare (patient eller närstående)",
    REPORTER_KIND_EXTERNAL_ACTOR: "Extern aktör (t.ex. Försäkringskassan)",
  },
  STATES: {
    TICKET_STATE_NEW: "Ny", TICKET_STATE_ASSIGNED: "Tagen", TICKET_STATE_ESCALATED: "Eskalerad",
    TICKET_STATE_WAITING: "Väntar", TICKET_STATE_RESOLVED: "Löst", TICKET_STATE_CLOSED: "Stängd",
  },
  ACTIONS: { filed: "Anmäld", assigned: "Tagen", commented: "Kommentar", escalated: "Eskalerad", state: "Läge ändrat" },
});
