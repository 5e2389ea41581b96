// The public fault report: no login. Every text from the server or the person is set as text, never as HTML.
"use strict";
(() => {
  const { api, el, say, errorText, REGION } = SVPL;
  const { PROBLEMS, REPORTERS } = SVPL_SUPPORT;
  const $ = (id) => document.getElementById(id);
  $("login-link").href = "/auth/" + REGION + "/login";
  const options = (select, labels) => select.replaceChildren(
    el("option", { value: "" }, "Välj …"), ...Object.entries(labels).map(([value, label]) => el("option", { value }, label)));
  options($("reporter-kind"), REPORTERS);
  options($("problem"), PROBLEMS);
  $("reporter-kind").addEventListener("change", () => {
    $("organization-block").hidden = $("reporter-kind").value !== "REPORTER_KIND_MUNICIPALITY_STAFF";
  });

  (async () => {
    try {
      const table = await api("GET", "/public/support");
      $("organization").replaceChildren(el("option", { value: "" }, "Välj kommun …"),
        ...(table.organizations || []).map(o => el("option", { value: o }, o)));
      $("contacts").querySelector("tbody").replaceChildren(...(table.queues || []).map(q =>
        el("tr", { "data-queue": q.queue_id }, el("td", {}, q.name), el("td", {}, q.contact_text || ""))));
    } catch (err) { say("report-message", errorText(err), "error"); }
  })();

  $("public-report").addEventListener("submit", async (e) => {
    e.preventDefault();
    const kind = $("reporter-kind").value;
    const body = {
      reporter_kind: kind, problem: $("problem").value, name: $("name").value.trim(),
      contact: $("contact").value.trim(), description: $("description").value.trim(),
      dial_in_code: $("dial-in").value.trim(),
      organization: kind === "REPORTER_KIND_MUNICIPALITY_STAFF" ? $("organization").value : "",
    };
    const missing = [["reporter-kind", "vem du är"], ["problem", "vad problemet gäller"], ["name", "ditt namn"],
      ["contact", "hur vi når dig"], ["description", "en beskrivning"]].filter(([id]) => !$(id).value.trim());
    if (kind === "REPORTER_KIND_MUNICIPALITY_STAFF" && !body.organization) missing.push(["organization", "din kommun"]);
    if (missing.length) { say("report-message", "Fyll i " + missing.map(m => m[1]).join(", ") + ".", "error"); $(missing[0][0]).focus(); return; }
    $("report-submit").disabled = true;
    try {
      const answer = await api("POST", "/public/reports", body);
      const queue = answer.queue || {};
      $("ticket-number").textContent = answer.number;
      $("result-queue").textContent = queue.name || "";
      $("result-contact").textContent = queue.contact_text || "";
      say("report-message", "", "info");
      $("public-report").hidden = true;
      $("report-result").hidden = false;
      $("report-result").focus && $("ticket-number").scrollIntoView();
    } catch (err) { say("report-message", errorText(err), "error"); }
    finally { $("report-submit").disabled = false; }
  });
})();
