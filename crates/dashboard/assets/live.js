// posture-farm live updates: listen to the server's events and re-read the
// page's live region (rendered by the server) when it concerns this page.
// Without JavaScript the pages still work; they just do not update.
(function () {
  "use strict";
  var body = document.body;
  var kind = body.getAttribute("data-live");
  var region = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!kind || !region || !window.EventSource) {
    return;
  }
  var src = body.getAttribute("data-src");
  var camera = body.getAttribute("data-camera");
  var follow = body.getAttribute("data-follow") === "1";
  var busy = false, again = false, last = 0;

  function say(text, live) {
    if (status) { status.textContent = text; }
    body.classList.toggle("is-live", !!live);
  }

  // At most one refresh a second; one more if events came meanwhile.
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    var wait = Math.max(0, 1000 - (Date.now() - last));
    setTimeout(function () {
      fetch(src, { cache: "no-store" }).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      }).then(function (html) {
        region.innerHTML = html;
        region.setAttribute("data-updated", String(Date.now()));
        say("live · updated " + new Date().toLocaleTimeString(), true);
      }).catch(function () {
        say("update failed, retrying", false);
      }).then(function () {
        last = Date.now();
        busy = false;
        if (again) { again = false; refresh(); }
      });
    }, wait);
  }

  var events = new EventSource("/events");
  events.addEventListener("hello", function () { say("live", true); });
  events.addEventListener("frame", function (e) {
    if (kind === "overview") { refresh(); return; }
    if (kind === "camera" && follow) {
      try {
        if (JSON.parse(e.data).camera === camera) { refresh(); }
      } catch (err) { refresh(); }
    }
  });
  events.addEventListener("farm", function () { if (kind === "farm") { refresh(); } });
  events.addEventListener("resync", function () { if (kind !== "camera" || follow) { refresh(); } });
  events.onerror = function () { say("reconnecting…", false); };
  // Ages ("12 s ago") and silent cameras change without any event.
  setInterval(function () { if (kind !== "camera" || follow) { refresh(); } }, 30000);
})();
