/* MQIC live pages: every element with data-live-url asks its JSON endpoint every
 * data-live-every seconds (only while the tab is visible) and swaps each returned fragment
 * into the elements marked data-live="<key>". Unchanged fragments are left alone, and open
 * <details> stay open, so the operator keeps their place. [data-live-updated] says how fresh
 * the page is ("updated 3s ago") or that the last update failed. An element marked
 * data-live-follow (a log) stays scrolled to its end while the operator leaves it there. */
(function () {
  "use strict";

  function same(element, html) {
    const probe = document.createElement("template");
    probe.innerHTML = html;
    return probe.innerHTML === element.innerHTML.replace(/ open=""/g, "");
  }

  function swap(element, html) {
    if (same(element, html)) return;
    const open = Array.from(element.querySelectorAll("details[open][id]"), (d) => d.id);
    const atEnd = element.scrollHeight - element.scrollTop - element.clientHeight < 8;
    element.innerHTML = html;
    open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
    if (atEnd && "liveFollow" in element.dataset) element.scrollTop = element.scrollHeight;
  }

  function start(root) {
    const every = (parseFloat(root.dataset.liveEvery) || 5) * 1000;
    const badge = root.querySelector("[data-live-updated]") || document.querySelector("[data-live-updated]");
    let updated = Date.now();
    let problem = "";
    let stopped = false;

    function show() {
      if (!badge) return;
      const seconds = Math.round((Date.now() - updated) / 1000);
      let text = "updated " + seconds + "s ago";
      if (problem) text = "update failed (" + problem + "); " + text;
      if (stopped) text += ", no longer updating";
      badge.textContent = text;
      badge.classList.toggle("mqic-stale", Boolean(problem));
    }

    async function poll() {
      if (document.hidden || stopped) return;
      let url = root.dataset.liveUrl;
      if (root.dataset.liveIds) url += (url.includes("?") ? "&" : "?") + "ids=" + root.dataset.liveIds;
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const data = await response.json();
        for (const [key, html] of Object.entries(data.fragments)) {
          document.querySelectorAll('[data-live="' + CSS.escape(key) + '"]').forEach((el) => swap(el, html));
        }
        updated = Date.now();
        problem = "";
        if (data.stop) { stopped = true; clearInterval(timer); }
        root.dispatchEvent(new CustomEvent("mqic:updated", { bubbles: true }));
      } catch (error) {
        problem = error.message || "no answer";
      }
      show();
    }

    root.querySelectorAll("[data-live-follow]").forEach((el) => { el.scrollTop = el.scrollHeight; });
    const timer = setInterval(poll, every);
    setInterval(show, 1000);
    show();
  }

  function ready() { document.querySelectorAll("[data-live-url]").forEach(start); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
