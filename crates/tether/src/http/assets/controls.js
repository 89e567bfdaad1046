// tether's corner controls (--controls): copy a share link of this view, or reset this page.
// In a shadow root of its own, fixed in the corner, so the app's layout and styles are untouched.
(function () {
  const cfg = JSON.parse(document.currentScript.dataset.tether);
  const host = document.createElement("div");
  host.id = "tether-controls";
  host.style.cssText = "position:fixed;right:12px;bottom:12px;z-index:2147483647";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" +
    "button{font:13px system-ui,sans-serif;border:1px solid #bbb;background:#fff;color:#333;" +
    "border-radius:14px;padding:3px 10px;margin-left:4px;cursor:pointer;opacity:.8}" +
    "button:hover{opacity:1}" +
    "output{font:12px system-ui,sans-serif;background:#fff;color:#333;padding:2px 6px;" +
    "border-radius:4px;margin-right:4px;user-select:all}output:empty{display:none}" +
    "</style><output></output>" +
    '<button type="button" data-act="share">Copy share link</button>' +
    '<button type="button" data-act="reset">Reset this page</button>';
  const out = root.querySelector("output");
  const base = cfg.prefix + "/.tether/";
  const app = encodeURIComponent(cfg.app);
  root.querySelector("[data-act=share]").addEventListener("click", async () => {
    out.textContent = "";
    const r = await fetch(base + "share?app=" + app, { method: "POST" });
    const text = await r.text();
    if (!r.ok) {
      out.textContent = text;
      return;
    }
    const link = new URL(JSON.parse(text).link, location.href).href;
    out.dataset.link = link;
    try {
      await navigator.clipboard.writeText(link);
      out.textContent = "Copied: " + link;
    } catch (e) {
      out.textContent = link;
    }
  });
  root.querySelector("[data-act=reset]").addEventListener("click", () => {
    location.href = base + "forget?app=" + app;
  });
  document.body.appendChild(host);
})();
