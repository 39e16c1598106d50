// Refresh the activity fragment every second while the page is visible (no build step, no
// library): the server renders the same template the page was built with.
(function () {
  const live = document.getElementById("live");
  if (!live) return;
  const url = live.dataset.refreshUrl;
  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(url, { headers: { "X-Requested-With": "fetch" } });
      if (response.ok) {
        document.getElementById("live").outerHTML = await response.text();
      }
    } catch (error) {
      // The server is restarting or the network blinked: try again on the next tick.
    }
  }
  setInterval(refresh, 1000);
})();
