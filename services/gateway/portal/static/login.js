"use strict";
(() => {
  const { api, el, say, errorText, REGION } = SVPL;
  // The invitation's link names the meeting: after the login, go straight to it.
  const meeting = new URLSearchParams(location.search).get("meeting") || "";
  const done = () => { location.href = "/portal/" + (/^[A-Za-z0-9_.:-]{1,128}$/.test(meeting) ? "#/meeting/" + meeting : ""); };
  const e1177 = document.getElementById("e1177-login");
  e1177.href = "/auth/" + REGION + "/1177";
  // Ask first (not following the redirect): a 1177 login that is not configured, or refused, is said
  // here in Swedish instead of the browser showing a problem document.
  e1177.addEventListener("click", async (e) => {
    e.preventDefault();
    let res;
    try { res = await fetch(e1177.href, { redirect: "manual", credentials: "same-origin" }); }
    catch (err) { say("login-message", errorText(err), "error"); return; }
    if (res.type === "opaqueredirect" || res.ok) { location.href = e1177.href; return; }
    let problem = {};
    try { problem = await res.json(); } catch (err) { /* not a problem document */ }
    say("login-message", errorText(new SVPL.ApiError(res.status, problem)), "error");
  });

  document.getElementById("siths-login").addEventListener("click", async () => {
    try { await api("POST", "/auth/siths"); done(); }
    catch (err) { say("login-message", errorText(err), "error"); }
  });

  // BankID's launch links: on a phone or tablet the universal link (https://app.bankid.com/), which the
  // BankID app claims (and which opens the app's store page when it is not installed); on a computer
  // the bankid:/// scheme, which the desktop app registers.
  const mobile = /Android|iPhone|iPad|iPod|Mobile/i.test(navigator.userAgent)
    || (navigator.platform === "MacIntel" && navigator.maxTouchPoints > 1);
  const bankIdLaunchUrl = (token) => (mobile ? "https://app.bankid.com/" : "bankid:///")
    + "?autostarttoken=" + encodeURIComponent(token) + "&redirect=null";

  let poll = null;
  const stopPolling = () => { if (poll) clearInterval(poll); poll = null; };
  document.getElementById("bankid-start").addEventListener("click", async () => {
    try {
      const order = await api("POST", "/auth/bankid");
      document.getElementById("bankid-progress").hidden = false;
      document.getElementById("bankid-open").href = bankIdLaunchUrl(order.auto_start_token);
      const qr = document.getElementById("bankid-qr");
      qr.src = "/api/v1/auth/bankid/qr.svg?t=" + Date.now();
      let tick = 0;
      poll = setInterval(async () => {
        tick += 1;
        try {
          qr.src = "/api/v1/auth/bankid/qr.svg?t=" + Date.now();  // renewed every second
          if (tick % 2) return;
          const state = await api("POST", "/auth/bankid/collect");
          say("bankid-status", state.user_message || state.hint_code, "info");
          if (state.status === "BANK_ID_STATUS_COMPLETE") { stopPolling(); done(); }
          if (state.status === "BANK_ID_STATUS_FAILED") { stopPolling(); say("login-message", state.user_message || "BankID-inloggningen misslyckades.", "error"); }
        } catch (err) { stopPolling(); say("login-message", errorText(err), "error"); }
      }, 1000);
    } catch (err) { say("login-message", errorText(err), "error"); }
  });
  document.getElementById("bankid-cancel").addEventListener("click", async () => {
    stopPolling();
    document.getElementById("bankid-progress").hidden = true;
    try { await api("POST", "/auth/bankid/cancel"); } catch (err) { /* already finished */ }
  });

  (async () => {
    try {
      const { people } = await api("GET", "/auth/development/people");
      const list = document.getElementById("dev-people");
      for (const p of people) {
        list.append(el("li", {}, el("button", {
          type: "button", class: "secondary dev-login", "data-person": p.person_id, "data-method": p.method || "",
          onclick: async () => {  // with the method the routine gives them (a next of kin: 1177)
            try { await api("POST", "/auth/development", { person_id: p.person_id, ...(p.method ? { method: p.method } : {}) }); done(); }
            catch (err) { say("login-message", errorText(err), "error"); }
          },
        }, p.label)));
      }
      document.getElementById("dev-section").hidden = false;
    } catch (err) { /* the development login is off */ }
  })();
})();
