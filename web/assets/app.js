// Live updates: re-fetch the page every few seconds and swap the #live part,
// unless the user is typing in it. Without JavaScript a <noscript> refresh or
// the browser's reload does the same.
(function () {
  var live = document.getElementById("live");
  if (!live) return;
  function tick() {
    if (document.hidden || (document.activeElement && live.contains(document.activeElement))) return;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      // A 404 carries a live part too: a task not reported yet turns into its page.
      .then(function (r) { return r.ok || r.status === 404 ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh) return;
        live.innerHTML = fresh.innerHTML;
        if (doc.title) document.title = doc.title;
      })
      .catch(function () {});
  }
  setInterval(tick, 2000);
})();
