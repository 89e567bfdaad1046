// tether: moves this page onto a new version of the app. When tether closes the page's
// websocket with code 4001 (a rolling reload, or `tether serve --dev` after a save), the page
// reloads, and tether restores its state on the new version. With 4002 (`--dev` only) the new
// version did not start: the error is shown until a later save starts, then the page reloads.
// Only closes whose reason starts with "tether:" count: the codes are free for anyone to use.
(function () {
  "use strict";
  var Native = window.WebSocket;
  if (!Native || Native.tetherMoves) {
    return;
  }
  var script = document.currentScript;
  var prefix = (script && script.getAttribute("data-tether-prefix")) || "";
  var panel = null;

  function show(text) {
    if (!panel) {
      panel = document.createElement("pre");
      panel.setAttribute("data-tether-error", "");
      panel.style.cssText =
        "position:fixed;inset:0;margin:0;padding:2em;z-index:2147483647;overflow:auto;" +
        "background:rgba(24,24,24,.94);color:#ffb4b4;font:14px/1.5 monospace;white-space:pre-wrap";
      document.body.appendChild(panel);
    }
    panel.textContent =
      "The app's new version did not start; the page reloads when it does.\n\n" + text;
  }

  function poll() {
    fetch(prefix + "/.tether/dev", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (state) {
        if (state.error) {
          show(state.error);
          setTimeout(poll, 1000);
        } else {
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(poll, 1000); });
  }

  function Tethered(url, protocols) {
    var ws = arguments.length > 1 ? new Native(url, protocols) : new Native(url);
    ws.addEventListener("close", function (event) {
      if (String(event.reason).indexOf("tether:") !== 0) {
        return;
      }
      if (event.code === 4001) {
        window.location.reload();
      } else if (event.code === 4002) {
        poll();
      }
    });
    return ws;
  }
  Tethered.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) {
    Tethered[k] = Native[k];
  });
  Tethered.tetherMoves = true;
  window.WebSocket = Tethered;
})();
