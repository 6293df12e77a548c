// The live-connection indicator: htmx's SSE extension reports the stream
// opening, failing (it then reconnects with backoff) and closing; the
// indicator says which, so a page that stopped moving says why.
(function () {
  function show(state, text) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.setAttribute("data-state", state);
    el.textContent = text;
  }
  document.addEventListener("htmx:sseOpen", function () {
    show("live", "Live: the page follows the run as it moves.");
  });
  document.addEventListener("htmx:sseError", function () {
    show("lost", "Live connection lost; reconnecting\u2026");
  });
  document.addEventListener("htmx:sseClose", function (e) {
    if (e.detail && e.detail.type === "message") {
      show("ended", "Finished: nothing more will change.");
    }
  });
})();
