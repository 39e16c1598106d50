// Refresh every live part of the page (data-refresh-url) every second while the page is
// visible (no build step, no library): the server renders the same template the page was built
// with, and answers 304 to the ETag of what the page shows when nothing changed, so a part is
// rewritten (and announced by its aria-live) only when it did change.
(function () {
  const parts = document.querySelectorAll("[data-refresh-url]");
  if (!parts.length) return;
  async function refresh(part) {
    try {
      const response = await fetch(part.dataset.refreshUrl, {
        cache: "no-store",
        headers: { "If-None-Match": part.dataset.etag || "" },
      });
      if (response.status === 200) {
        part.innerHTML = await response.text();
        part.dataset.etag = response.headers.get("ETag") || "";
      }
    } catch (error) {
      // The server is restarting or the network blinked: try again on the next tick.
    }
  }
  setInterval(function () {
    if (!document.hidden) parts.forEach(refresh);
  }, 1000);
})();
