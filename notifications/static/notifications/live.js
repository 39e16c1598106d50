// Refresh every live part of the page (data-refresh-url) every second while the page is
// visible (no build step, no library): the server renders the same template the page was built
// with, and answers 304 to the ETag of what the page shows when nothing changed, so a part is
// rewritten (and announced by its aria-live) only when it did change. A 401 means the session
// ended (signed out elsewhere, or by a password change): the page is loaded again, which
// shows the sign-in page.
(function () {
  const parts = document.querySelectorAll("[data-refresh-url]");
  if (!parts.length) return;
  let pending = false;
  async function refresh(part) {
    const response = await fetch(part.dataset.refreshUrl, {
      cache: "no-store",
      redirect: "error",
      headers: { "If-None-Match": part.dataset.etag || "" },
    });
    if (response.status === 401) {
      window.location.reload();
    } else if (response.status === 200) {
      part.innerHTML = await response.text();
      part.dataset.etag = response.headers.get("ETag") || "";
    }
  }
  setInterval(async function () {
    if (document.hidden || pending) return;
    pending = true; // one round of polls at a time: a slow answer never lands after a newer one
    try {
      for (const part of parts) await refresh(part);
    } catch (error) {
      // The server is restarting or the network blinked: try again on the next tick.
    } finally {
      pending = false;
    }
  }, 1000);
})();
